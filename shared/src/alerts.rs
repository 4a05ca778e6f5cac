//! Budget alerts and events: THE one path that writes them, for the processor after it
//! counted credits and for an operator who changed a budget.
//!
//! Each event is one item written once (a conditional put, or a transaction with the flag it
//! changes): a threshold crossed (per period and threshold), a hard limit reached (per period
//! and limit episode, then the exceeded flag), a reached limit that no longer holds (per
//! period and limit episode, in one transaction with clearing the flag and ending the
//! episode). The table's stream
//! carries each new item to EventBridge (template.yaml: `BudgetEventsPipe`), so an event
//! follows its write even when the function dies right after it. Each comes with one log
//! line.

use crate::Result;
use crate::domain::budget::{BudgetMode, BudgetPolicy, BudgetUsage};
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::ports::BudgetStore;
use chrono::{DateTime, Utc};
use tracing::warn;

/// Checks a customer's period against its policy; the events this call recorded.
///
/// A hard limit reached records `Budget Limit Reached` and raises the exceeded flag; a
/// raised flag that no longer holds (usage under the hard limit, the budget now soft or
/// without a limit) is cleared with `Budget Limit Cleared`. Both are keyed by the period's
/// limit episode, so each reach and each clearing is one event however often it is checked.
pub async fn check(
    store: &dyn BudgetStore,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<BudgetEvent>> {
    let usage = store.budget_usage(customer_id, period).await?;
    check_read(store, customer_id, period, policy, usage, now).await
}

/// [`check`] on a counter the caller just read strongly (several at once:
/// [`BudgetStore::budget_usages`]).
pub async fn check_read(
    store: &dyn BudgetStore,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
    usage: BudgetUsage,
    now: DateTime<Utc>,
) -> Result<Vec<BudgetEvent>> {
    let event = |kind| BudgetEvent {
        customer_id: customer_id.to_string(),
        period: period.to_string(),
        kind,
        used: usage.used,
        limit: policy.limit.unwrap_or(0),
        mode: policy.mode,
        at: now,
        episode: usage.clears,
    };
    let mut recorded = Vec::new();
    for percent in policy.thresholds_reached(usage.used) {
        if usage.alerted.contains(&percent) {
            continue;
        }
        let crossed = event(BudgetEventKind::ThresholdCrossed { percent });
        if store.record_budget_event(&crossed).await? {
            recorded.push(logged(crossed));
        }
    }
    let hard_limit = policy.limit.filter(|_| policy.mode == BudgetMode::Hard);
    if hard_limit.is_some_and(|limit| usage.used >= limit) {
        let reached = event(BudgetEventKind::LimitReached);
        if usage.reached != Some(usage.clears) && store.record_budget_event(&reached).await? {
            recorded.push(logged(reached));
        }
        raise_flag(store, &usage, customer_id, period, now).await?;
    } else if usage.exceeded {
        let cleared = event(BudgetEventKind::LimitCleared);
        if store.clear_exceeded(&cleared).await? {
            recorded.push(logged(cleared));
        }
    }
    Ok(recorded)
}

/// The exceeded flag at a hard limit (the claim raises it itself when it caps credits), in
/// the episode read: a clearing since then wins.
async fn raise_flag(
    store: &dyn BudgetStore,
    usage: &BudgetUsage,
    customer_id: &str,
    period: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if usage.exceeded {
        return Ok(());
    }
    store
        .set_exceeded(customer_id, period, usage.clears, now)
        .await
        .map(|_| ())
}

/// The event's log line, once, by the caller that recorded it.
fn logged(event: BudgetEvent) -> BudgetEvent {
    let (alert, message) = match event.kind {
        BudgetEventKind::ThresholdCrossed { .. } => {
            ("budget_threshold", "budget threshold crossed")
        }
        BudgetEventKind::LimitReached => ("budget_limit_reached", "budget limit reached"),
        BudgetEventKind::LimitCleared => ("budget_limit_cleared", "budget limit cleared"),
    };
    warn!(
        alert,
        detail_type = event.kind.detail_type(),
        customer = event.customer_id.as_str(),
        period = event.period.as_str(),
        threshold_pct = event.percent(),
        used = event.used,
        limit = event.limit,
        mode = event.mode.as_str(),
        "{message}"
    );
    event
}
