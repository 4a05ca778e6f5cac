//! Claims left behind by an invocation that died: resumed, waited for, or parked.

use super::*;

#[tokio::test]
async fn an_interrupted_claim_is_resumed_and_billed_once() {
    // GIVEN a claim made 5 minutes ago by an invocation that died, its lease expired
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-crash", "cus_c", "0.004", at);
    let expired = world.now() - Duration::minutes(1);
    let p = world
        .interrupted_claim("t-crash", "cus_c", at, Duration::minutes(5), expired)
        .await;

    // WHEN the message comes back
    let response = world.meter(&["t-crash"]).await;

    // THEN the claimed revision is sent and recorded in its own receipt; the budget is
    // counted once
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(world.meter.events(), vec![MeterEvent::for_claim(&p)]);
    assert_eq!(
        world.ledger.receipt("dead-invocation-0"),
        Some(vec![p.identifier])
    );
    let e = world.entry("t-crash").await;
    assert_eq!((e.state, e.billed_credits), (LedgerState::Metered, C_0004));
    assert_eq!(world.budget("cus_c", at).await.used, C_0004);
}

#[tokio::test]
async fn an_interrupted_claim_stripe_already_has_is_not_billed_again() {
    // GIVEN an interrupted claim whose event reached Stripe before the invocation died
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-sent", "cus_c", "0.004", at);
    let expired = world.now() - Duration::minutes(1);
    let p = world
        .interrupted_claim("t-sent", "cus_c", at, Duration::minutes(5), expired)
        .await;
    let sent = world.meter.send(&MeterEvent::for_claim(&p)).await;
    assert!(sent.is_ok());

    // WHEN the message comes back
    let response = world.meter(&["t-sent"]).await;

    // THEN Stripe's answer (a known identifier) counts as delivered: one event in all
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(world.meter.events().len(), 1);
    assert_eq!(world.entry("t-sent").await.state, LedgerState::Metered);
    assert_eq!(world.budget("cus_c", at).await.used, C_0004);
}

#[tokio::test]
async fn a_claim_still_leased_by_another_invocation_is_retried_later() {
    // GIVEN a claim another invocation holds for 40 more seconds
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-busy", "cus_c", "0.004", at);
    let lease = world.now() + Duration::seconds(40);
    world
        .interrupted_claim("t-busy", "cus_c", at, Duration::seconds(1), lease)
        .await;

    // WHEN its message arrives
    let response = world.meter(&["t-busy"]).await;

    // THEN it is retried after the lease, nothing is sent
    assert_eq!(failures(&response), vec!["m0".to_string()]);
    let delays = world.queue.delays();
    assert!(delays.len() == 1 && delays[0].1 >= 40, "{delays:?}");
    assert!(world.meter.requests().is_empty());
    assert_eq!(world.entry("t-busy").await.state, LedgerState::Claimed);
}

#[tokio::test]
async fn a_claim_older_than_the_dedup_window_is_ambiguous_not_resent() {
    // GIVEN a claim made 24 hours ago and never settled (past the 23 h dedup window)
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t-amb", "cus_amb", "0.004", at);
    let expired = world.now() - Duration::hours(23);
    world
        .interrupted_claim("t-amb", "cus_amb", at, Duration::hours(24), expired)
        .await;

    // WHEN its message comes back
    let response = world.meter(&["t-amb"]).await;

    // THEN it is parked as ambiguous for an operator, not resent
    assert!(failures(&response).is_empty(), "{response:?}");
    assert!(world.meter.requests().is_empty());
    let e = world.entry("t-amb").await;
    assert_eq!(e.state, LedgerState::Ambiguous);
    assert_eq!(
        e.pending.map(|p| p.identifier),
        Some(identifier("t-amb", 1))
    );
}
