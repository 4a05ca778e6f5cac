//! Metering exactly once: one event per revision, whatever comes back.

use super::*;

#[tokio::test]
async fn a_trace_is_metered_once() {
    // GIVEN a trace of 0.004 USD for cus_1, an hour ago
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);

    // WHEN its message is processed
    let response = world.meter(&["t1"]).await;

    // THEN one event of 100 credits went to Stripe, recorded in the ledger and the budget
    assert!(failures(&response).is_empty(), "{response:?}");
    let expected = MeterEvent {
        identifier: identifier("t1", 1),
        customer_id: "cus_1".into(),
        value: C_0004,
        timestamp: at.timestamp(),
    };
    assert_eq!(world.meter.events(), vec![expected]);
    let e = world.entry("t1").await;
    assert_eq!(e.state, LedgerState::Metered);
    assert_eq!(
        (e.revision, e.billed_credits, e.total_credits),
        (1, C_0004, C_0004)
    );
    assert_eq!(world.budget("cus_1", at).await.used, C_0004);
}

#[tokio::test]
async fn a_redelivery_bills_nothing_twice() {
    // GIVEN a trace already metered
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);
    world.meter(&["t1"]).await;

    // WHEN its message comes back, twice, and once more in another batch
    let again = world.meter(&["t1"]).await;
    let twice = world.meter(&["t1", "t1"]).await;

    // THEN nothing more is billed and nothing is retried
    assert!(failures(&again).is_empty() && failures(&twice).is_empty());
    assert_eq!(world.meter.events().len(), 1);
    assert_eq!(
        world.meter.requests(),
        vec![1],
        "Stripe was not asked again"
    );
    assert_eq!(world.budget("cus_1", at).await.used, C_0004);
    assert_eq!(world.entry("t1").await.revision, 1);
}

#[tokio::test]
async fn duplicates_of_one_trace_in_a_batch_are_billed_once() {
    // GIVEN a trace
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-dup", "cus_1", "0.004", at);

    // WHEN one batch carries its message three times
    let response = world.meter(&["t-dup", "t-dup", "t-dup"]).await;

    // THEN every message is acknowledged, one event is sent, Langfuse was read once
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(world.meter.events().len(), 1);
    assert_eq!(world.usage.calls_for("t-dup"), 1);
    assert_eq!(world.budget("cus_1", at).await.used, C_0004);
}

#[tokio::test]
async fn late_cost_is_billed_as_a_second_revision_of_the_difference() {
    // GIVEN a trace metered at 100 credits
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-late", "cus_l", "0.004", at);
    world.meter(&["t-late"]).await;

    // WHEN a late observation brings it to 0.012 USD over 1 s (321 credits) and its
    // message comes twice
    let mut late = usage("t-late", "0.012", at);
    late.latency_seconds = Decimal::ONE;
    late.metadata
        .insert("stripeCustomerId".into(), "cus_l".into());
    world.usage.put(late);
    let response = world.meter(&["t-late", "t-late"]).await;

    // THEN the difference is billed once, under the second revision's identifier
    assert!(failures(&response).is_empty(), "{response:?}");
    let values: Vec<(String, u64)> = world
        .meter
        .events()
        .into_iter()
        .map(|e| (e.identifier, e.value))
        .collect();
    assert_eq!(
        values,
        vec![
            (identifier("t-late", 1), C_0004),
            (identifier("t-late", 2), 321 - C_0004)
        ]
    );
    let e = world.entry("t-late").await;
    assert_eq!(
        (e.revision, e.total_credits, e.billed_credits),
        (2, 321, 321)
    );
    assert_eq!(world.budget("cus_l", at).await.used, 321);
}

#[tokio::test]
async fn the_v2_stream_sends_a_batch_in_requests_of_at_most_100_events() {
    // GIVEN Stripe's v2 meter event stream and 120 traces of three customers
    let world = World::with(&[("STRIPE_API_MODE", "v2_stream")], StripeMode::V2Stream);
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..120).map(|i| format!("tv-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        world.trace(id, &format!("cus_{}", i % 3), "0.004", at);
    }

    // WHEN one batch carries them all
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let response = world.meter(&refs).await;

    // THEN two requests carry the 120 events, each billed once
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(world.meter.requests(), vec![100, 20]);
    let totals = world.meter.totals_by_customer();
    assert_eq!(totals.values().sum::<u64>(), 120 * C_0004, "{totals:?}");
    assert!(world.meter.stream_errors().is_empty());
    for id in &ids {
        assert_eq!(world.entry(id).await.state, LedgerState::Metered, "{id}");
    }
}

#[tokio::test]
async fn a_stream_request_refused_for_one_event_bills_the_rest() {
    // GIVEN the v2 stream, 100 traces, and Stripe refusing any request that holds cus_bad's
    let world = World::with(&[("STRIPE_API_MODE", "v2_stream")], StripeMode::V2Stream);
    world.meter.refuse_streams_with("cus_bad");
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..100).map(|i| format!("tv-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let customer = if i == 37 { "cus_bad" } else { "cus_ok" };
        world.trace(id, customer, "0.004", at);
    }

    // WHEN one batch carries them all
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let response = world.meter(&refs).await;

    // THEN only the bad event is stripe_rejected (its budget given back), the 99 are billed
    assert!(failures(&response).is_empty(), "{response:?}");
    let bad = world.entry("tv-037").await;
    assert_eq!(
        (bad.state, bad.reason.as_deref()),
        (LedgerState::Failed, Some("stripe_rejected"))
    );
    assert_eq!(world.meter.events().len(), 99);
    assert_eq!(world.budget("cus_ok", at).await.used, 99 * C_0004);
    assert_eq!(world.budget("cus_bad", at).await.used, 0);
    let requests = world.meter.requests();
    assert!(
        requests.len() <= 15,
        "halving finds it in a few requests: {requests:?}"
    );
}
