//! The meter event summaries endpoint.

use super::*;

async fn summaries(fake: &StripeFake, query: &str) -> Answer {
    let url = format!(
        "{}/v1/billing/meters/mtr_1/event_summaries?{query}",
        fake.base_url()
    );
    let request = reqwest::Client::new().get(url).bearer_auth(KEY);
    send(request.header("Stripe-Version", "2026-10-28.endive")).await
}

#[tokio::test]
async fn summaries_sum_a_customers_events_in_the_range_without_dropped_ones() {
    let fake = StripeFake::start(KEY).await;
    let t = (Utc::now().timestamp() / 60 - 10) * 60;
    for (customer, value, id, at) in [
        ("cus_a", "5", "e1", t),
        ("cus_a", "7", "e2", t + 60),
        ("cus_b", "9", "e3", t),
        ("cus_a", "11", "e4", t + 600),
    ] {
        let mut fields = form(customer, value, Some(id));
        fields.push(("timestamp".to_owned(), at.to_string()));
        assert_eq!(post(&fake, &fields, None).await.status, 200);
    }
    let range = format!("customer=cus_a&start_time={t}&end_time={}", t + 600);
    let answer = summaries(&fake, &range).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["object"], "list");
    assert_eq!(answer.body["has_more"], false);
    let summary = &answer.body["data"][0];
    assert_eq!(summary["object"], "billing.meter_event_summary");
    assert_eq!(
        shape_of(summary),
        fixture_shape("billing.meter_event_summary")
    );
    assert_eq!(
        (
            summary["aggregated_value"].as_u64(),
            summary["meter"].as_str()
        ),
        (Some(12), Some("mtr_1"))
    );
    assert!(fake.drop_event("e2"));
    assert!(!fake.drop_event("nope"));
    let answer = summaries(&fake, &range).await;
    assert_eq!(
        answer.body["data"][0]["aggregated_value"], 5,
        "dropped by validation"
    );
    assert_eq!(fake.events().len(), 4, "still received");

    let unaligned = summaries(
        &fake,
        &format!("customer=cus_a&start_time={}&end_time={}", t + 1, t + 600),
    )
    .await;
    assert_eq!(unaligned.status, 400);
    assert_eq!(unaligned.body["error"]["param"], "start_time");
    let no_customer = summaries(&fake, &format!("start_time={t}&end_time={}", t + 600)).await;
    assert_eq!(no_customer.status, 400);
}

async fn thin_events(fake: &StripeFake, query: &str) -> Answer {
    let url = format!("{}/v2/core/events?{query}", fake.base_url());
    let request = reqwest::Client::new().get(url).bearer_auth(KEY);
    send(request.header("Stripe-Version", "2026-10-28.endive")).await
}

#[tokio::test]
async fn an_unknown_customer_is_accepted_then_reported_with_samples_in_both_modes() {
    let fake = StripeFake::start(KEY).await;
    fake.plant_unknown_customer("cus_ghost");
    fake.set_error_sample_limit(2);
    let t = (Utc::now().timestamp() / 60 - 10) * 60;
    for (customer, id) in [
        ("cus_ghost", "g1"),
        ("cus_real", "r1"),
        ("cus_ghost", "g2"),
        ("cus_ghost", "g3"),
    ] {
        let mut fields = form(customer, "4", Some(id));
        fields.push(("timestamp".to_owned(), t.to_string()));
        assert_eq!(
            post(&fake, &fields, None).await.status,
            200,
            "accepted first"
        );
    }
    let range = |c: &str| format!("customer={c}&start_time={t}&end_time={}", t + 60);
    let ghost = summaries(&fake, &range("cus_ghost")).await;
    assert_eq!(ghost.body["data"][0]["aggregated_value"], 0, "dropped");
    let real = summaries(&fake, &range("cus_real")).await;
    assert_eq!(real.body["data"][0]["aggregated_value"], 4);

    let repeated =
        "types=v1.billing.meter.error_report_triggered&types=v1.billing.meter.no_meter_found";
    let refused = thin_events(&fake, repeated).await;
    assert_eq!(refused.status, 400, "a repeated key is not an array");
    assert_eq!(refused.body["error"]["param"], "types");
    let types = "types[0]=v1.billing.meter.error_report_triggered&types%5B1%5D=v1.billing.meter.no_meter_found";
    let open = thin_events(&fake, types).await;
    assert_eq!(open.body["data"], json!([]), "the window is still open");
    fake.advance(chrono::Duration::seconds(10));
    let listed = thin_events(&fake, types).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let event = &listed.body["data"][0];
    assert_eq!(event["object"], "v2.core.event");
    assert_eq!(shape_of(event), fixture_shape("v2.core.event"));
    assert_eq!(event["type"], "v1.billing.meter.error_report_triggered");
    let reason = &event["data"]["reason"];
    assert_eq!(reason["error_count"], 3);
    let bound = |k: &str| {
        let t = event["data"][k].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    let (start, end) = (bound("validation_start"), bound("validation_end"));
    assert_eq!(end - start, 10_000, "one 10 s validation window");
    let kind = &reason["error_types"][0];
    assert_eq!(kind["code"], "meter_event_customer_not_found");
    let samples: Vec<&str> = kind["sample_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["request"]["identifier"].as_str())
        .collect();
    assert_eq!(samples, ["g1", "g2"], "samples, not the whole list");
    let id = event["id"].as_str().unwrap();
    let one = send(
        reqwest::Client::new()
            .get(format!("{}/v2/core/events/{id}", fake.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(one.body, *event);
    let later = thin_events(&fake, "created[gte]=2099-01-01T00:00:00Z").await;
    assert_eq!(later.body["data"], json!([]));

    // The v2 stream: accepted, dropped, reported in the next report.
    let session = stream::new_session(&fake).await;
    let token = session.body["authentication_token"].as_str().unwrap();
    let events = json!([stream::stream_event("g4", "cus_ghost", "2")]);
    assert_eq!(stream::stream(&fake, token, events).await.status, 200);
    fake.advance(chrono::Duration::seconds(10));
    let both = thin_events(&fake, "limit=1").await;
    assert_eq!(both.body["data"].as_array().map(Vec::len), Some(1));
    let first = &both.body["data"][0]["data"]["reason"]["error_types"][0]["sample_errors"][0];
    assert_eq!(first["request"]["identifier"], "g4", "newest first");
    let next = both.body["next_page_url"].as_str().unwrap();
    let rest = send(
        reqwest::Client::new()
            .get(format!("{}{next}", fake.base_url()))
            .bearer_auth(KEY)
            .header("Stripe-Version", "2026-10-28.endive"),
    )
    .await;
    assert_eq!(rest.body["data"][0]["id"], id);
    assert_eq!(rest.body["next_page_url"], Value::Null);
}

#[tokio::test]
async fn an_event_name_without_a_meter_is_reported_as_no_meter_found() {
    let fake = StripeFake::start(KEY).await;
    fake.set_meter_event_name(Some("other_meter"));
    assert_eq!(
        post(&fake, &form("cus_a", "3", Some("n1")), None)
            .await
            .status,
        200
    );
    fake.advance(chrono::Duration::seconds(10));
    let listed = thin_events(&fake, "types[0]=v1.billing.meter.no_meter_found").await;
    let event = &listed.body["data"][0];
    assert_eq!(
        event["type"], "v1.billing.meter.no_meter_found",
        "{}",
        listed.body
    );
    assert_eq!(event["related_object"], Value::Null);
    let kind = &event["data"]["reason"]["error_types"][0];
    assert_eq!(kind["code"], "no_meter");
    assert_eq!(kind["sample_errors"][0]["request"]["identifier"], "n1");
    let other = thin_events(&fake, "types[0]=v1.billing.meter.error_report_triggered").await;
    assert_eq!(other.body["data"], json!([]));
    assert_eq!(fake.error_reports().len(), 1);
}

/// The keys of a JSON value, nested (`a.b`, `a[].c`), and the type of each value (null
/// matches anything, as Stripe's fixtures leave optional objects null).
fn shape_of(v: &Value) -> std::collections::BTreeMap<String, &'static str> {
    fn walk(v: &Value, at: String, out: &mut std::collections::BTreeMap<String, &'static str>) {
        let kind = match v {
            Value::Object(o) => {
                for (k, v) in o {
                    walk(v, format!("{at}.{k}"), out);
                }
                "object"
            }
            Value::Array(a) => {
                a.iter().for_each(|v| walk(v, format!("{at}[]"), out));
                "array"
            }
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "bool",
            Value::Null => return,
        };
        out.insert(at, kind);
    }
    let mut out = std::collections::BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}

/// The shape of Stripe's published example object (`local/specs/stripe-meter-fixtures.json`).
fn fixture_shape(resource: &str) -> std::collections::BTreeMap<String, &'static str> {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../../../specs/stripe-meter-fixtures.json")).unwrap();
    shape_of(&fixtures["resources"][resource])
}
