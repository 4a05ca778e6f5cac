//! `GET /v1/billing/meters/{id}`.

use super::*;

async fn get_meter(fake: &StripeFake, id: &str, key: &str) -> Answer {
    let url = format!("{}/v1/billing/meters/{id}", fake.base_url());
    send(reqwest::Client::new().get(url).bearer_auth(key)).await
}

#[tokio::test]
async fn the_meter_is_the_billing_meter_object_of_stripes_reference() {
    let fake = StripeFake::start(KEY).await;
    let answer = get_meter(&fake, FAKE_METER_ID, KEY).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut fields: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
    fields.sort();
    let documented = [
        "created",
        "customer_mapping",
        "default_aggregation",
        "display_name",
        "event_name",
        "event_time_window",
        "id",
        "livemode",
        "object",
        "status",
        "status_transitions",
        "updated",
        "value_settings",
    ];
    assert_eq!(fields, documented);
    let b = &answer.body;
    assert_eq!(b["object"], "billing.meter");
    assert_eq!(b["event_name"], FAKE_METER_EVENT_NAME);
    assert_eq!(
        b["customer_mapping"],
        json!({"type": "by_id", "event_payload_key": "stripe_customer_id"})
    );
    assert_eq!(b["value_settings"], json!({"event_payload_key": "value"}));
    assert_eq!(b["default_aggregation"], json!({"formula": "sum"}));
    assert_eq!(
        (&b["status"], &b["livemode"]),
        (&json!("active"), &json!(false))
    );
}

#[tokio::test]
async fn an_unknown_meter_a_key_of_the_other_mode_and_a_bad_key_are_refused() {
    let fake = StripeFake::start(KEY).await;
    let unknown = get_meter(&fake, "mtr_other", KEY).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"]["code"], "resource_missing");
    let live = "sk_live_51FakeSecretKey00001234";
    fake.rotate_secret_key(live);
    let other_mode = get_meter(&fake, FAKE_METER_ID, live).await;
    assert_eq!(other_mode.status, 404);
    let message = other_mode.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("exists in test mode, but a live mode key"),
        "{message}"
    );
    let refused = get_meter(&fake, FAKE_METER_ID, KEY).await;
    assert_eq!(refused.status, 401);
}
