use super::*;
use crate::fakes::stripe::stream::rfc3339;

pub(super) async fn new_session(fake: &StripeFake) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!(
                "{}/v2/billing/meter_event_session",
                fake.base_url()
            ))
            .bearer_auth(KEY)
            .json(&json!({})),
    )
    .await
}

pub(super) async fn stream(fake: &StripeFake, token: &str, events: Value) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{}/v2/billing/meter_event_stream", fake.base_url()))
            .bearer_auth(token)
            .json(&json!({ "events": events })),
    )
    .await
}

pub(super) fn stream_event(identifier: &str, customer: &str, value: &str) -> Value {
    json!({
        "event_name": "llm_credits",
        "identifier": identifier,
        "timestamp": rfc3339(Utc::now() - chrono::Duration::minutes(1)),
        "payload": {"stripe_customer_id": customer, "value": value},
    })
}

#[tokio::test]
async fn v2_sessions_expire_and_the_stream_needs_their_token() {
    let fake = StripeFake::start(KEY).await;
    let session = new_session(&fake).await;
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.body["object"], "v2.billing.meter_event_session");
    let token = session.body["authentication_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let created =
        chrono::DateTime::parse_from_rfc3339(session.body["created"].as_str().expect("created"))
            .expect("rfc3339");
    let expires = chrono::DateTime::parse_from_rfc3339(
        session.body["expires_at"].as_str().expect("expires_at"),
    )
    .expect("rfc3339");
    assert_eq!(expires - created, chrono::Duration::minutes(15));

    // The secret key is not a session token; no key at all is not either.
    let with_key = stream(&fake, KEY, json!([stream_event("a", "cus_1", "1")])).await;
    assert_eq!(with_key.status, 401);
    let unauthenticated = send(
        reqwest::Client::new()
            .post(format!(
                "{}/v2/billing/meter_event_session",
                fake.base_url()
            ))
            .json(&json!({})),
    )
    .await;
    assert_eq!(unauthenticated.status, 401);

    let ok = stream(&fake, &token, json!([stream_event("a", "cus_1", "1")])).await;
    assert_eq!((ok.status, ok.body.clone()), (200, json!({})));
    fake.expire_sessions();
    let expired = stream(&fake, &token, json!([stream_event("b", "cus_1", "1")])).await;
    assert_eq!(expired.status, 401);
    assert_eq!(
        expired.body["error"]["code"],
        "billing_meter_event_session_expired"
    );
    assert_eq!(fake.events().len(), 1);
    assert_eq!(fake.sessions_created(), 1);
}

#[tokio::test]
async fn v2_stream_limits_dedups_and_validates_asynchronously() {
    let fake = StripeFake::start(KEY).await;
    let token = new_session(&fake).await.body["authentication_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let many: Vec<Value> = (0..101)
        .map(|i| stream_event(&format!("e{i}"), "cus_1", "1"))
        .collect();
    let too_many = stream(&fake, &token, json!(many)).await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.body["error"]["param"], "events");
    let empty = stream(&fake, &token, json!([])).await;
    assert_eq!(empty.status, 400);
    assert!(fake.events().is_empty());

    let hundred = stream(&fake, &token, json!(many[..100].to_vec())).await;
    assert_eq!(hundred.status, 200);
    assert_eq!(fake.events().len(), 100);
    // A repeat identifier and an invalid value: accepted, dropped, reported.
    let mixed = stream(
        &fake,
        &token,
        json!([
            stream_event("e0", "cus_1", "1"),
            stream_event("x1", "cus_1", "1.5"),
            stream_event("x2", "cus_2", "7"),
        ]),
    )
    .await;
    assert_eq!(mixed.status, 200);
    assert_eq!(fake.events().len(), 101);
    assert_eq!(fake.stream_errors().len(), 2, "{:?}", fake.stream_errors());
    assert_eq!(fake.stream_batches(), vec![100, 3]);
    assert_eq!(fake.totals_by_customer()["cus_2"], 7);

    // Many requests of one customer at once: no per-customer limit on the stream.
    fake.set_latency(Duration::from_millis(100));
    let (a, b) = tokio::join!(
        stream(&fake, &token, json!([stream_event("c1", "cus_1", "1")])),
        stream(&fake, &token, json!([stream_event("c2", "cus_1", "1")])),
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(fake.concurrency_violations(), 0);

    fake.set_rate_limit(Some(0));
    let limited = stream(&fake, &token, json!([stream_event("r1", "cus_1", "1")])).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("stripe-should-retry"), Some("true"));
}
