//! Permanent failures are recorded and acknowledged; transient ones retry that message only.

use super::*;
use tracemeter::ports::MessageFailures;

/// The entry's state and reason, and whether its detail names the trace.
async fn failure(world: &World, trace_id: &str) -> (LedgerState, Option<String>, bool) {
    let e = world.entry(trace_id).await;
    let names = e.detail.as_deref().unwrap_or_default().contains(trace_id);
    (e.state, e.reason, names)
}

fn failed(reason: &str) -> (LedgerState, Option<String>, bool) {
    (LedgerState::Failed, Some(reason.to_string()), true)
}

#[tokio::test]
async fn an_unknown_trace_fails_for_good() {
    // GIVEN a trace Langfuse does not know
    let world = World::new();

    // WHEN its message is processed
    let response = world.meter(&["t-unknown"]).await;

    // THEN it is recorded as trace_not_found and acknowledged
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(
        failure(&world, "t-unknown").await,
        failed("trace_not_found")
    );
    assert!(world.meter.requests().is_empty());
}

#[tokio::test]
async fn an_unmapped_customer_fails_for_good_and_a_mapped_user_is_billed() {
    // GIVEN two traces without customer metadata: one of an unmapped user, one of a user
    // mapped to cus_mapped; no default customer
    let world = World::new();
    let at = an_hour_ago(&world);
    for (id, user) in [("t-unmapped", "u-nobody"), ("t-mapped", "u-42")] {
        let mut u = usage(id, "0.004", at);
        u.user_id = Some(user.into());
        world.usage.put(u);
    }
    world.ledger.put_user_mapping("u-42", "cus_mapped");

    // WHEN one batch carries both
    let response = world.meter(&["t-unmapped", "t-mapped"]).await;

    // THEN the unmapped one is recorded as such, the mapped one billed to its customer
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(
        failure(&world, "t-unmapped").await,
        failed("unmapped_customer")
    );
    let totals = world.meter.totals_by_customer();
    assert_eq!(totals, BTreeMap::from([("cus_mapped".to_string(), C_0004)]));
}

#[tokio::test]
async fn usage_older_than_35_days_fails_for_good() {
    // GIVEN a trace of 40 days ago
    let world = World::new();
    world.trace("t-old", "cus_x", "0.004", world.now() - Duration::days(40));

    // WHEN its message is processed
    let response = world.meter(&["t-old"]).await;

    // THEN it is recorded as usage_too_old, nothing is sent or counted
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(failure(&world, "t-old").await, failed("usage_too_old"));
    assert!(world.meter.requests().is_empty());
}

#[tokio::test]
async fn a_malformed_message_is_recorded_by_its_message_id() {
    // GIVEN a body that is not tracemeter's message
    let world = World::new();

    // WHEN it is processed
    let response = world.deliver(&["this is not json".to_string()]).await;

    // THEN it is recorded under its message id with its body, and acknowledged
    assert!(failures(&response).is_empty(), "{response:?}");
    let record = world.ledger.failed_message("m0").expect("recorded");
    assert_eq!(record.reason, "malformed_message");
    assert_eq!(record.body, "this is not json");
    assert!(world.ledger.entries().is_empty());

    // AND the operator's port lists it (body, reason, time) and deletes it once read
    let listed = world.ledger.failed_messages(None).await.expect("listed");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].message_id.as_str(), listed[0].body.as_str()),
        ("m0", "this is not json")
    );
    let later = listed[0].updated_at + chrono::Duration::milliseconds(1);
    assert!(
        world
            .ledger
            .failed_messages(Some(later))
            .await
            .expect("listed")
            .is_empty()
    );
    assert!(world.ledger.forget_message("m0").await.expect("deleted"));
    assert!(!world.ledger.forget_message("m0").await.expect("gone"));
    assert!(world.ledger.failed_message("m0").is_none());
}

#[tokio::test]
async fn a_permanent_stripe_rejection_gives_the_budget_back() {
    // GIVEN a trace of a customer Stripe rejects
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-rej", "cus_rej", "0.004", at);
    world.meter.reject_customer("cus_rej");

    // WHEN its message is processed
    let response = world.meter(&["t-rej"]).await;

    // THEN it is recorded as stripe_rejected, acknowledged, and its credits given back
    assert!(failures(&response).is_empty(), "{response:?}");
    let e = world.entry("t-rej").await;
    assert_eq!(
        (e.state, e.reason.as_deref()),
        (LedgerState::Failed, Some("stripe_rejected"))
    );
    assert_eq!(world.budget("cus_rej", at).await, BudgetUsage::default());
    assert!(world.meter.events().is_empty());
}

#[tokio::test]
async fn a_transient_stripe_failure_retries_only_that_message() {
    // GIVEN three traces of three customers, and Stripe failing its next request
    let world = World::new();
    let at = an_hour_ago(&world);
    for (id, cus) in [("t0", "cus_a"), ("t1", "cus_b"), ("t2", "cus_c")] {
        world.trace(id, cus, "0.004", at);
    }
    world.meter.fail_next(1);

    // WHEN one batch carries them
    let response = world.meter(&["t0", "t1", "t2"]).await;

    // THEN that message alone is retried, after a delay, its claim released; the others billed
    let failed = failures(&response);
    assert_eq!(failed.len(), 1, "{response:?}");
    assert_eq!(world.meter.events().len(), 2);
    let delays = world.queue.delays();
    assert_eq!(delays.len(), 1);
    assert_eq!(delays[0].0, format!("receipt-{}", failed[0]));
    assert!(
        (5..=10).contains(&delays[0].1),
        "half to all of RETRY_BASE_SECONDS: {delays:?}"
    );
    let trace = ["t0", "t1", "t2"][failed[0][1..].parse::<usize>().expect("m<i>")];
    let e = world.entry(trace).await;
    let lease = e.pending.as_ref().map(|p| p.lease_until);
    assert!(
        e.state == LedgerState::Claimed && lease <= Some(world.clock.now()),
        "{e:?}"
    );

    // WHEN it comes back
    let retry = world.meter(&[trace]).await;

    // THEN it is billed, once
    assert!(failures(&retry).is_empty(), "{retry:?}");
    assert_eq!(
        world.meter.totals_by_customer().values().sum::<u64>(),
        3 * C_0004
    );
    assert_eq!(world.meter.events().len(), 3);
}

#[tokio::test]
async fn a_throttled_stripe_call_is_retried_no_sooner_than_asked() {
    // GIVEN Stripe throttling its next request, asking to wait 2 minutes
    let world = World::new();
    world.trace("t-slow", "cus_t", "0.004", an_hour_ago(&world));
    world
        .meter
        .throttle_next(1, std::time::Duration::from_secs(120));

    // WHEN the trace's message is processed
    let response = world.meter(&["t-slow"]).await;

    // THEN its message is deferred (sent again, acknowledged) no sooner than asked
    assert!(failures(&response).is_empty(), "{response:?}");
    let deferred = world.queue.deferred();
    assert!(
        deferred.len() == 1 && deferred[0].delay_seconds >= 120,
        "{deferred:?}"
    );
}
