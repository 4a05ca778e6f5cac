#![allow(clippy::unwrap_used)]

mod meters;
mod stream;
mod summaries;

use super::*;
use reqwest::header::HeaderMap;

const KEY: &str = "sk_test_51FakeSecretKey00001234";

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.expect("JSON body");
    Answer {
        status,
        headers,
        body,
    }
}

fn form(customer: &str, value: &str, identifier: Option<&str>) -> Vec<(String, String)> {
    let mut fields = vec![
        ("event_name".to_owned(), "llm_credits".to_owned()),
        (
            "payload[stripe_customer_id]".to_owned(),
            customer.to_owned(),
        ),
        ("payload[value]".to_owned(), value.to_owned()),
    ];
    if let Some(identifier) = identifier {
        fields.push(("identifier".to_owned(), identifier.to_owned()));
    }
    fields
}

async fn post(
    fake: &StripeFake,
    fields: &[(String, String)],
    idempotency_key: Option<&str>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/billing/meter_events", fake.base_url()))
        .bearer_auth(KEY)
        .form(fields);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    send(request).await
}

#[test]
fn keys_are_masked_like_stripe() {
    assert_eq!(mask_key("sk_test_abcdef1234"), "sk_test_****1234");
    assert_eq!(mask_key("sk_live_xy"), "sk_live_****");
    assert_eq!(mask_key("whatever9876"), "****9876");
}

#[tokio::test]
async fn auth_requires_the_bearer_secret_key() {
    let fake = StripeFake::start(KEY).await;
    let url = format!("{}/v1/billing/meter_events", fake.base_url());
    let client = reqwest::Client::new();
    let fields = form("cus_1", "1", None);

    let none = send(client.post(&url).form(&fields)).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["error"]["type"], "invalid_request_error");
    assert!(
        none.body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("You did not provide an API key")
    );

    let wrong_key = "sk_test_51WrongSecretKey0009876";
    let wrong = send(client.post(&url).bearer_auth(wrong_key).form(&fields)).await;
    assert_eq!(wrong.status, 401);
    let message = wrong.body["error"]["message"].as_str().expect("message");
    assert_eq!(message, "Invalid API Key provided: sk_test_****9876");
    assert!(!wrong.body.to_string().contains(wrong_key), "key echoed");

    let basic = send(client.post(&url).basic_auth(KEY, Some("")).form(&fields)).await;
    assert_eq!(basic.status, 401);

    let ok = send(client.post(&url).bearer_auth(KEY).form(&fields)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(fake.events().len(), 1);
    let recorded = fake.requests();
    assert_eq!(
        recorded
            .iter()
            .map(|r| (r.status, r.authenticated))
            .collect::<Vec<_>>(),
        [(401, false), (401, false), (401, false), (200, true)]
    );
}

#[tokio::test]
async fn meter_event_form_is_parsed_and_recorded() {
    let fake = StripeFake::start(KEY).await;
    let now = Utc::now().timestamp();
    let mut fields = form("cus_123", "25", Some("trace-1:r1"));
    fields.push(("timestamp".to_owned(), (now - 60).to_string()));
    let ok = post(&fake, &fields, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let created = ok.body["created"].as_i64().expect("created");
    assert!((now - 5..=now + 5).contains(&created));
    assert_eq!(
        ok.body,
        json!({
            "object": "billing.meter_event",
            "created": created,
            "event_name": "llm_credits",
            "identifier": "trace-1:r1",
            "livemode": false,
            "payload": {"stripe_customer_id": "cus_123", "value": "25"},
            "timestamp": now - 60,
        })
    );
    assert!(
        ok.header("request-id")
            .is_some_and(|id| id.starts_with("req_"))
    );
    assert_eq!(
        fake.events(),
        [RecordedMeterEvent {
            identifier: "trace-1:r1".to_owned(),
            event_name: "llm_credits".to_owned(),
            customer: "cus_123".to_owned(),
            value: 25,
            timestamp: now - 60,
            idempotency_key: None,
        }]
    );
    let recorded = &fake.requests()[0];
    assert_eq!(
        recorded.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        recorded
            .form()
            .contains(&("payload[value]".to_owned(), "25".to_owned()))
    );

    // Identifier generated when absent; timestamp defaults to now.
    let generated = post(&fake, &form("cus_123", "5", None), None).await;
    assert_eq!(generated.status, 200);
    assert!(
        !generated.body["identifier"]
            .as_str()
            .expect("id")
            .is_empty()
    );
    assert_eq!(
        fake.totals_by_customer(),
        BTreeMap::from([("cus_123".to_owned(), 30)])
    );
}

#[tokio::test]
async fn invalid_meter_event_forms_are_refused_and_not_recorded() {
    let fake = StripeFake::start(KEY).await;
    // JSON is not accepted.
    let json_body = send(
        reqwest::Client::new()
            .post(format!("{}/v1/billing/meter_events", fake.base_url()))
            .bearer_auth(KEY)
            .json(&json!({"event_name": "llm_credits"})),
    )
    .await;
    assert_eq!(json_body.status, 400);
    assert_eq!(json_body.body["error"]["type"], "invalid_request_error");

    let too_long = "x".repeat(101);
    let mut unknown = form("cus_123", "1", None);
    unknown.push(("customer".to_owned(), "cus_123".to_owned()));
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (form("cus_123", "1", None)[1..].to_vec(), "event_name"),
        (
            vec![
                ("event_name".to_owned(), "llm_credits".to_owned()),
                ("payload[value]".to_owned(), "1".to_owned()),
            ],
            "payload[stripe_customer_id]",
        ),
        (form("cus_123", "1", None)[..2].to_vec(), "payload[value]"),
        (form("cus_123", "1.5", None), "payload[value]"),
        (form("cus_123", "-3", None), "payload[value]"),
        (form("cus_123", "ten", None), "payload[value]"),
        (form("cus_123", "", None), "payload[value]"),
        (form("cus_123", "1", Some(&too_long)), "identifier"),
        (unknown, "customer"),
    ];
    for (fields, param) in cases {
        let bad = post(&fake, &fields, None).await;
        assert_eq!(bad.status, 400, "{fields:?} → {}", bad.body);
        assert_eq!(bad.body["error"]["type"], "invalid_request_error");
        assert_eq!(bad.body["error"]["param"], param, "{}", bad.body);
    }
    assert!(fake.events().is_empty(), "rejected requests record nothing");
    // An identifier of exactly 100 characters is fine.
    let max = post(&fake, &form("cus_123", "1", Some(&"y".repeat(100))), None).await;
    assert_eq!(max.status, 200);
}

#[tokio::test]
async fn duplicate_identifier_is_rejected_and_not_recorded() {
    let fake = StripeFake::start(KEY).await;
    let first = post(&fake, &form("cus_1", "10", Some("trace-9:r1")), None).await;
    assert_eq!(first.status, 200);
    let again = post(&fake, &form("cus_1", "10", Some("trace-9:r1")), None).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.header("stripe-should-retry"), Some("false"));
    assert_eq!(again.body["error"]["type"], "invalid_request_error");
    assert!(again.body["error"]["code"].is_string());
    assert_eq!(
        again.body["error"]["message"],
        "An event already exists with identifier trace-9:r1."
    );
    assert_eq!(fake.events().len(), 1);
    assert_eq!(fake.totals_by_customer()["cus_1"], 10);
}

#[tokio::test]
async fn identifiers_and_idempotency_keys_are_forgotten_after_the_dedup_window() {
    let fake = StripeFake::start(KEY).await;
    let fields = form("cus_1", "10", Some("trace-9:r1"));
    assert_eq!(post(&fake, &fields, Some("trace-9:r1")).await.status, 200);
    fake.advance(DEDUP_WINDOW - chrono::Duration::minutes(1));
    let within = post(&fake, &fields, None).await;
    assert_eq!(within.status, 400, "still remembered");
    let replay = post(&fake, &fields, Some("trace-9:r1")).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(fake.events().len(), 1);
    fake.advance(chrono::Duration::minutes(2));
    let after = post(&fake, &fields, Some("trace-9:r1")).await;
    assert_eq!(after.status, 200, "forgotten: a new event");
    assert_eq!(after.header("idempotent-replayed"), None);
    assert_eq!(fake.events().len(), 2);
    assert_eq!(fake.totals_by_customer()["cus_1"], 20);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let fake = StripeFake::start(KEY).await;
    let fields = form("cus_1", "7", Some("trace-1:r1"));
    let first = post(&fake, &fields, Some("key-1")).await;
    assert_eq!(first.status, 200);
    assert!(first.header("idempotent-replayed").is_none());

    let replay = post(&fake, &fields, Some("key-1")).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(fake.events().len(), 1);
    assert_eq!(fake.events()[0].idempotency_key.as_deref(), Some("key-1"));

    let different = post(
        &fake,
        &form("cus_1", "8", Some("trace-1:r1")),
        Some("key-1"),
    )
    .await;
    assert_eq!(different.status, 400);
    assert_eq!(different.body["error"]["type"], "idempotency_error");

    let too_long = "k".repeat(256);
    let long = post(&fake, &form("cus_1", "1", None), Some(&too_long)).await;
    assert_eq!(long.status, 400);
    let max = post(&fake, &form("cus_1", "1", None), Some(&"k".repeat(255))).await;
    assert_eq!(max.status, 200);

    // A failure before execution (validation) is not saved: the key stays usable.
    let invalid = post(&fake, &form("cus_2", "x", None), Some("key-2")).await;
    assert_eq!(invalid.status, 400);
    let valid = post(&fake, &form("cus_2", "1", None), Some("key-2")).await;
    assert_eq!(valid.status, 200);
    assert!(valid.header("idempotent-replayed").is_none());
    assert_eq!(fake.events().len(), 3);
}

#[tokio::test]
async fn concurrent_requests_for_one_customer_get_429() {
    let fake = StripeFake::start(KEY).await;
    fake.set_latency(Duration::from_millis(300));
    let (form_a, form_b) = (form("cus_1", "1", Some("a")), form("cus_1", "1", Some("b")));
    let (a, b) = tokio::join!(post(&fake, &form_a, None), post(&fake, &form_b, None));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429]);
    let limited = if a.status == 429 { &a } else { &b };
    assert_eq!(limited.header("stripe-should-retry"), Some("true"));
    assert_eq!(limited.body["error"]["type"], "invalid_request_error");
    assert_eq!(limited.body["error"]["code"], "rate_limit");
    assert!(
        limited.body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("concurrent")
    );
    assert_eq!(fake.concurrency_violations(), 1);
    assert_eq!(fake.events().len(), 1);

    // Different customers in parallel are fine, and the slot is released afterwards.
    let (form_c, form_d) = (form("cus_2", "1", Some("c")), form("cus_3", "1", Some("d")));
    let (c, d) = tokio::join!(post(&fake, &form_c, None), post(&fake, &form_d, None));
    assert_eq!((c.status, d.status), (200, 200));
    let e = post(&fake, &form("cus_1", "1", Some("e")), None).await;
    assert_eq!(e.status, 200);
    assert_eq!(fake.concurrency_violations(), 1);
}

#[tokio::test]
async fn timestamp_must_be_within_35_days_and_5_minutes() {
    let fake = StripeFake::start(KEY).await;
    let now = Utc::now().timestamp();
    let day = 24 * 60 * 60;
    for (offset, expected) in [
        (-36 * day, 400),
        (-34 * day, 200),
        (10 * 60, 400),
        (4 * 60, 200),
    ] {
        let mut fields = form("cus_1", "1", None);
        fields.push(("timestamp".to_owned(), (now + offset).to_string()));
        let answer = post(&fake, &fields, None).await;
        assert_eq!(answer.status, expected, "offset {offset}: {}", answer.body);
        if expected == 400 {
            assert_eq!(answer.body["error"]["type"], "invalid_request_error");
            assert_eq!(answer.body["error"]["param"], "timestamp");
            assert!(
                answer.body["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains("timestamp")
            );
        }
    }
    let mut fields = form("cus_1", "1", None);
    fields.push(("timestamp".to_owned(), "yesterday".to_owned()));
    assert_eq!(post(&fake, &fields, None).await.status, 400);
    assert_eq!(fake.events().len(), 2);
}

#[tokio::test]
async fn fail_next_and_fail_after_record() {
    let fake = StripeFake::start(KEY).await;
    fake.fail_next(2, 500);
    for _ in 0..2 {
        let failed = post(&fake, &form("cus_1", "3", Some("t1:r1")), Some("k1")).await;
        assert_eq!(failed.status, 500);
        assert_eq!(failed.header("stripe-should-retry"), Some("true"));
        assert_eq!(failed.body["error"]["type"], "api_error");
    }
    assert!(
        fake.events().is_empty(),
        "nothing recorded before the failure"
    );
    let ok = post(&fake, &form("cus_1", "3", Some("t1:r1")), Some("k1")).await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("idempotent-replayed").is_none());

    fake.fail_next(1, 429);
    let limited = post(&fake, &form("cus_1", "1", None), None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("stripe-should-retry"), Some("true"));

    // The response is lost after the event was recorded.
    fake.fail_after_record_next(1);
    let lost = post(&fake, &form("cus_1", "4", Some("t2:r1")), Some("k2")).await;
    assert_eq!(lost.status, 500);
    assert_eq!(fake.events().len(), 2, "the event exists anyway");
    // Retrying with the same key replays the success; without it, the identifier dedups.
    let retried = post(&fake, &form("cus_1", "4", Some("t2:r1")), Some("k2")).await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.body["identifier"], "t2:r1");
    let fresh = post(&fake, &form("cus_1", "4", Some("t2:r1")), Some("k3")).await;
    assert_eq!(fresh.status, 400);
    assert_eq!(fake.events().len(), 2);
    assert_eq!(fake.totals_by_customer()["cus_1"], 7);
}

#[tokio::test]
async fn global_rate_limit_and_unknown_routes() {
    let fake = StripeFake::start(KEY).await;
    fake.set_rate_limit(Some(2));
    let mut statuses = Vec::new();
    for i in 0..3 {
        let answer = post(&fake, &form(&format!("cus_{i}"), "1", None), None).await;
        if answer.status == 429 {
            assert_eq!(answer.header("stripe-should-retry"), Some("true"));
            assert_eq!(answer.body["error"]["code"], "rate_limit");
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    fake.set_rate_limit(None);

    let unknown = send(
        reqwest::Client::new()
            .get(format!("{}/v1/billing/meter_events", fake.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("Unrecognized request URL (GET: /v1/billing/meter_events)")
    );

    let base = fake.base_url();
    fake.shutdown_and_wait().await;
    let after = reqwest::Client::new()
        .post(format!("{base}/v1/billing/meter_events"))
        .send()
        .await;
    assert!(after.is_err(), "server still serving after shutdown");
}
