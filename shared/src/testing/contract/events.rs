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
    }
}

/// `record_budget_event` is true only for the call that creates the event's item: a
/// threshold per period, a limit reached per period and limit value.
pub async fn budget_events_are_recorded_once_per_key(ledger: &dyn Ledger) {
    let t = now();
    let record = |kind, used, limit| async move {
        let event = budget_event("cus_k30", kind, used, limit, t);
        let recorded = ledger.record_budget_event(&event).await;
        recorded.expect("record_budget_event")
    };
    let reached = BudgetEventKind::LimitReached;
    assert!(record(reached, 100, 100).await, "first at 100");
    assert!(!record(reached, 130, 100).await, "once per limit value");
    assert!(
        record(reached, 200, 200).await,
        "the raised limit reached again"
    );
    let crossed = BudgetEventKind::ThresholdCrossed { percent: 100 };
    assert!(
        record(crossed, 100, 100).await,
        "a threshold is another key"
    );
    assert!(!record(crossed, 200, 200).await);
    let cleared = budget_event("cus_k30", BudgetEventKind::LimitCleared, 0, 100, t);
    assert!(
        !ledger.clear_exceeded(&cleared).await.expect("clear"),
        "no flag raised: nothing cleared"
    );
}

/// `clear_exceeded` clears only a raised flag, only under the new limit, records the event
/// once per period and new limit, and clears the flag even when that event exists already.
pub async fn clearing_the_flag_records_its_event_once(ledger: &dyn Ledger) {
    let t = now();
    let one = vec![claim("k31-t", "cus_k31", Expect::Absent, 100, 0, t)];
    let claimed = claim_all(ledger, "cus_k31", None, one, t).await;
    assert_eq!(claimed, ClaimResult::Claimed);
    let clear = |limit: u64| async move {
        let event = budget_event("cus_k31", BudgetEventKind::LimitCleared, 100, limit, t);
        ledger.clear_exceeded(&event).await.expect("clear_exceeded")
    };
    let raise = || async {
        ledger
            .set_exceeded("cus_k31", PERIOD, t)
            .await
            .expect("set")
    };
    assert!(!clear(200).await, "the flag is not raised");
    raise().await;
    assert!(!clear(100).await, "usage is not under the limit");
    assert!(usage(ledger, "cus_k31").await.exceeded);
    assert!(clear(200).await, "cleared, with its event");
    let u = usage(ledger, "cus_k31").await;
    assert_eq!((u.used, u.capped, u.exceeded), (100, 0, false));
    assert!(!clear(200).await, "once");
    raise().await;
    assert!(!clear(200).await, "that limit's event exists already");
    assert!(
        !usage(ledger, "cus_k31").await.exceeded,
        "the flag is cleared anyway"
    );
    // A counter with only the flag (nothing used) clears under any limit.
    ledger
        .set_exceeded("cus_k31b", PERIOD, t)
        .await
        .expect("set");
    let event = budget_event("cus_k31b", BudgetEventKind::LimitCleared, 0, 50, t);
    assert!(ledger.clear_exceeded(&event).await.expect("clear"));
    assert!(!usage(ledger, "cus_k31b").await.exceeded);
}
