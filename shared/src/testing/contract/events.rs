//! Contract checks of budget events: each event key written once, and clearing the exceeded
//! flag together with its `Budget Limit Cleared` event.

use super::{PERIOD, claim, claim_all, now, usage};
use crate::domain::budget::BudgetMode;
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::domain::claim::{ClaimResult, Expect};
use crate::ports::Ledger;
use chrono::{DateTime, Utc};

/// A budget event of `customer` in [`PERIOD`].
pub fn budget_event(
    customer: &str,
    kind: BudgetEventKind,
    used: u64,
    limit: u64,
    at: DateTime<Utc>,
) -> BudgetEvent {
    BudgetEvent {
        customer_id: customer.to_string(),
        period: PERIOD.to_string(),
        kind,
        used,
        limit,
        mode: BudgetMode::Hard,
        at,
        episode: 0,
    }
}

/// `record_budget_event` is true only for the call that creates the event's item: a
/// threshold per period, a limit reached per period and limit episode.
pub async fn budget_events_are_recorded_once_per_key(ledger: &dyn Ledger) {
    let t = now();
    let record = |kind, used, limit, episode| async move {
        let mut event = budget_event("cus_k30", kind, used, limit, t);
        event.episode = episode;
        let recorded = ledger.record_budget_event(&event).await;
        recorded.expect("record_budget_event")
    };
    let reached = BudgetEventKind::LimitReached;
    assert!(record(reached, 100, 100, 0).await, "first at 100");
    assert!(!record(reached, 130, 100, 0).await, "once per episode");
    assert!(
        !record(reached, 130, 120, 0).await,
        "a limit lowered while reached is the same episode"
    );
    assert!(
        record(reached, 200, 200, 1).await,
        "reached again after a clearing"
    );
    let crossed = BudgetEventKind::ThresholdCrossed { percent: 100 };
    assert!(
        record(crossed, 100, 100, 0).await,
        "a threshold is another key"
    );
    assert!(!record(crossed, 200, 200, 1).await);
    assert!(
        !record(reached, 100, 100, 0).await,
        "an older episode again"
    );
    let marked = ledger.budget_usage("cus_k30", PERIOD).await.expect("usage");
    assert_eq!(
        marked.reached,
        Some(1),
        "the latest episode recorded stays marked"
    );
    assert_eq!(marked.alerted.into_iter().collect::<Vec<_>>(), vec![100]);
    let cleared = budget_event("cus_k30", BudgetEventKind::LimitCleared, 0, 100, t);
    assert!(
        !ledger.clear_exceeded(&cleared).await.expect("clear"),
        "no flag raised: nothing cleared"
    );
}

/// `clear_exceeded` clears only a raised flag, only under the new hard limit, only in the
/// episode read, and ends the episode: reached, cleared, reached and cleared again is two
/// events of each kind. `set_exceeded` of an episode a clearing ended raises nothing.
pub async fn clearing_the_flag_records_its_event_once(ledger: &dyn Ledger) {
    let t = now();
    let one = vec![claim("k31-t", "cus_k31", Expect::Absent, 100, 0, t)];
    let claimed = claim_all(ledger, "cus_k31", None, one, t).await;
    assert_eq!(claimed, ClaimResult::Claimed);
    let clear = |limit: u64, episode: u64| async move {
        let mut event = budget_event("cus_k31", BudgetEventKind::LimitCleared, 100, limit, t);
        event.episode = episode;
        ledger.clear_exceeded(&event).await.expect("clear_exceeded")
    };
    let raise = |episode: u64| async move {
        let set = ledger.set_exceeded("cus_k31", PERIOD, episode, t).await;
        set.expect("set_exceeded")
    };
    assert!(!clear(200, 0).await, "the flag is not raised");
    assert!(raise(0).await);
    assert!(!clear(100, 0).await, "usage is not under the limit");
    assert!(usage(ledger, "cus_k31").await.exceeded);
    assert!(!clear(200, 1).await, "not the episode running");
    assert!(clear(200, 0).await, "cleared, with its event");
    let u = usage(ledger, "cus_k31").await;
    assert_eq!((u.used, u.exceeded, u.clears), (100, false, 1));
    assert!(!clear(200, 0).await, "once");
    assert!(
        !raise(0).await,
        "a check that read the ended episode raises nothing"
    );
    assert!(!usage(ledger, "cus_k31").await.exceeded);
    assert!(raise(1).await, "reached again");
    assert!(clear(200, 1).await, "the second episode's clearing");
    let u = usage(ledger, "cus_k31").await;
    assert_eq!((u.exceeded, u.clears), (false, 2));
    // A counter with only the flag (nothing used) clears under any limit.
    let flag = ledger.set_exceeded("cus_k31b", PERIOD, 0, t).await;
    assert!(flag.expect("set"));
    let event = budget_event("cus_k31b", BudgetEventKind::LimitCleared, 0, 50, t);
    assert!(ledger.clear_exceeded(&event).await.expect("clear"));
    assert!(!usage(ledger, "cus_k31b").await.exceeded);
}

/// A raised flag clears whatever the usage once the budget is soft, or has no limit (0).
pub async fn a_soft_or_unlimited_budget_clears_the_flag(ledger: &dyn Ledger) {
    let t = now();
    for (customer, limit, mode) in [
        ("cus_k32", 100, BudgetMode::Soft),
        ("cus_k32b", 0, BudgetMode::Hard),
    ] {
        let one = vec![claim(
            &format!("{customer}-t"),
            customer,
            Expect::Absent,
            150,
            0,
            t,
        )];
        assert_eq!(
            claim_all(ledger, customer, None, one, t).await,
            ClaimResult::Claimed
        );
        let set = ledger.set_exceeded(customer, PERIOD, 0, t).await;
        assert!(set.expect("set_exceeded"));
        let mut event = budget_event(customer, BudgetEventKind::LimitCleared, 150, limit, t);
        event.mode = mode;
        assert!(
            ledger.clear_exceeded(&event).await.expect("clear"),
            "{customer}"
        );
        let u = usage(ledger, customer).await;
        assert_eq!(
            (u.used, u.exceeded, u.clears),
            (150, false, 1),
            "{customer}"
        );
    }
}
