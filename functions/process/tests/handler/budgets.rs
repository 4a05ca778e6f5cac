//! Budgets: the hard limit shared in trace-id order, soft limits that alert once.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracemeter::testing::{FaultyLedger, LedgerFaults};

#[tokio::test]
async fn a_batch_shares_the_hard_limit_in_trace_order() {
    // GIVEN a hard limit of 550 credits and ten traces of 100
    let world = World::new();
    world.ledger.put_budget_policy("cus_b", &hard(550));
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..10).map(|i| format!("tb-{i}")).collect();
    for id in &ids {
        world.trace(id, "cus_b", "0.004", at);
    }

    // WHEN one batch carries them in reverse order
    let reversed: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    let response = world.meter(&reversed).await;

    // THEN the earlier trace ids get the room, the sixth is split, the rest is capped
    assert!(failures(&response).is_empty(), "{response:?}");
    for (i, id) in ids.iter().enumerate() {
        let e = world.entry(id).await;
        let expected = match i {
            0..=4 => (LedgerState::Metered, C_0004, 0),
            5 => (LedgerState::Metered, 50, 50),
            _ => (LedgerState::Capped, 0, C_0004),
        };
        assert_eq!(
            (e.state, e.billed_credits, e.capped_credits),
            expected,
            "{id}"
        );
        assert_eq!(e.total_credits, C_0004, "{id}");
    }
    let budget = world.budget("cus_b", at).await;
    assert_eq!(
        (budget.used, budget.capped, budget.exceeded),
        (550, 450, true)
    );
    assert_eq!(world.meter.totals_by_customer().get("cus_b"), Some(&550));
    assert_eq!(world.meter.events().len(), 6);
    let thresholds: Vec<u32> = world
        .ledger
        .alerts()
        .iter()
        .map(|a| a.threshold_pct)
        .collect();
    assert_eq!(thresholds, vec![50, 80, 100]);
    // AND one `Budget Limit Reached` event, at the limit, whatever comes after
    world.meter(&reversed).await;
    let events: Vec<(&str, u64, u64)> = world
        .ledger
        .budget_events()
        .iter()
        .map(|e| (e.kind.detail_type(), e.used, e.limit))
        .filter(|e| e.0 != "Budget Threshold Crossed")
        .collect();
    assert_eq!(events, vec![("Budget Limit Reached", 550, 550)]);
}

#[tokio::test]
async fn a_full_hard_budget_caps_later_batches() {
    // GIVEN a hard budget already used up
    let world = World::new();
    world.ledger.put_budget_policy("cus_h", &hard(200));
    let at = an_hour_ago(&world);
    for id in ["th-0", "th-1", "th-2"] {
        world.trace(id, "cus_h", "0.004", at);
    }
    world.meter(&["th-0", "th-1"]).await;

    // WHEN another trace comes
    let response = world.meter(&["th-2"]).await;

    // THEN it is recorded as capped and nothing more is sent
    assert!(failures(&response).is_empty(), "{response:?}");
    let e = world.entry("th-2").await;
    assert_eq!((e.state, e.capped_credits), (LedgerState::Capped, C_0004));
    assert_eq!(world.meter.totals_by_customer().get("cus_h"), Some(&200));
    let budget = world.budget("cus_h", at).await;
    assert_eq!(
        (budget.used, budget.capped, budget.exceeded),
        (200, C_0004, true)
    );
}

#[tokio::test]
async fn soft_mode_bills_past_the_limit_and_alerts_once_per_threshold() {
    // GIVEN a soft limit of 1000 credits with alerts at 50, 80 and 100 %
    let world = World::new();
    let policy = BudgetPolicy {
        limit: Some(1_000),
        period: Period::Month,
        mode: BudgetMode::Soft,
        thresholds: vec![50, 80, 100],
    };
    world.ledger.put_budget_policy("cus_s", &policy);
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..14).map(|i| format!("ts-{i:02}")).collect();
    for id in &ids {
        world.trace(id, "cus_s", "0.004", at);
    }

    // WHEN they come in batches of three, then all of them again
    for chunk in ids.chunks(3) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        world.meter(&refs).await;
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    world.meter(&refs).await;

    // THEN everything is billed and each threshold alerted once, when it was crossed
    assert_eq!(world.meter.totals_by_customer().get("cus_s"), Some(&1_400));
    let alerts: Vec<(u32, u64)> = world
        .ledger
        .alerts()
        .iter()
        .map(|a| (a.threshold_pct, a.used))
        .collect();
    assert_eq!(alerts, vec![(50, 600), (80, 900), (100, 1_200)]);
    assert!(
        !world.budget("cus_s", at).await.exceeded,
        "soft mode blocks nothing"
    );
}

#[tokio::test]
async fn credits_stripe_refuses_go_back_and_lift_the_limit_they_reached() {
    // GIVEN a hard limit of one and a half traces, one trace billed
    let world = World::new();
    world
        .ledger
        .put_budget_policy("cus_g", &hard(C_0004 + C_0004 / 2));
    let at = an_hour_ago(&world);
    for id in ["tg-0", "tg-1"] {
        world.trace(id, "cus_g", "0.004", at);
    }
    world.meter(&["tg-0"]).await;

    // WHEN the next trace reaches the limit and Stripe refuses its event for good
    world.meter.reject_customer("cus_g");
    let response = world.meter(&["tg-1"]).await;

    // THEN its credits go back, the limit no longer reads as reached, and the change is an
    // event (gateways may let the customer spend again)
    assert!(failures(&response).is_empty(), "{response:?}");
    let e = world.entry("tg-1").await;
    assert_eq!(
        (e.state, e.reason.as_deref()),
        (LedgerState::Failed, Some("stripe_rejected"))
    );
    let budget = world.budget("cus_g", at).await;
    assert_eq!(
        (budget.used, budget.capped, budget.exceeded),
        (C_0004, 0, false)
    );
    let kinds: Vec<&str> = world
        .ledger
        .budget_events()
        .iter()
        .map(|e| e.kind.detail_type())
        .filter(|k| *k != "Budget Threshold Crossed")
        .collect();
    assert_eq!(kinds, vec!["Budget Limit Cleared"]);
}

/// Fails the first budget counter reads (the alert check's first step), then reads.
struct FailingBudgetReads(AtomicUsize);

impl LedgerFaults for FailingBudgetReads {
    fn budget_usage(&self) -> tracemeter::Result<()> {
        let take = |n: usize| n.checked_sub(1);
        match self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
        {
            Ok(_) => Err(tracemeter::Error::transient(
                "dynamodb",
                "planted: the budget counter read failed",
            )),
            Err(_) => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_failed_alert_check_is_retried_and_its_event_follows_the_redelivery() {
    // GIVEN a soft limit of one trace with alerts at 50 and 100 %, and a ledger whose next
    // budget counter read fails
    let world = World::new();
    let policy = BudgetPolicy {
        limit: Some(C_0004),
        period: Period::Month,
        mode: BudgetMode::Soft,
        thresholds: vec![50, 100],
    };
    world.ledger.put_budget_policy("cus_r", &policy);
    let at = an_hour_ago(&world);
    world.trace("tr-alert", "cus_r", "0.004", at);
    let faulty = FaultyLedger {
        inner: &world.ledger,
        faults: FailingBudgetReads(AtomicUsize::new(1)),
    };
    let deps = Deps {
        ledger: &faulty,
        ..world.deps()
    };
    let deadline = world.clock.now() + Duration::seconds(30);

    // WHEN the trace is billed and the alert check after it fails
    let first = process::handle(&deps, event(&[body("tr-alert")]), deadline).await;

    // THEN the message is retried: billed, but no alert yet
    assert_eq!(failures(&first.response), ["m0"]);
    assert_eq!(world.entry("tr-alert").await.state, LedgerState::Metered);
    assert!(
        world.ledger.alerts().is_empty(),
        "{:?}",
        world.ledger.alerts()
    );

    // AND its redelivery checks again: both thresholds alerted, nothing billed twice
    let again = world.meter(&["tr-alert"]).await;
    assert!(failures(&again).is_empty(), "{again:?}");
    let alerts: Vec<(u32, u64)> = world
        .ledger
        .alerts()
        .iter()
        .map(|a| (a.threshold_pct, a.used))
        .collect();
    assert_eq!(alerts, vec![(50, C_0004), (100, C_0004)]);
    assert_eq!(world.meter.totals_by_customer().get("cus_r"), Some(&C_0004));
}
