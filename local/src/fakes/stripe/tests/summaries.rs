//! The meter event summaries endpoint.

use super::*;

async fn summaries(fake: &StripeFake, query: &str) -> Answer {
    let url = format!(
        "{}/v1/billing/meters/mtr_1/event_summaries?{query}",
        fake.base_url()
    );
    send(reqwest::Client::new().get(url).bearer_auth(KEY)).await
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
