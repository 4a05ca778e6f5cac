//! Budget alerts: THE one path that writes them, for the processor after it counted credits
//! and for an operator who changed a budget. One alert record per threshold crossed (a
//! conditional put: exactly once, however many callers race) with one
//! `budget threshold crossed` log line, and the exceeded flag at a hard limit.

use crate::Result;
use crate::domain::budget::{BudgetMode, BudgetPolicy};
use crate::ports::BudgetStore;
use chrono::{DateTime, Utc};
use tracing::warn;

/// Checks a customer's period against its policy; the thresholds this call recorded.
pub async fn check(
    store: &dyn BudgetStore,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<u32>> {
    let Some(limit) = policy.limit else {
        return Ok(Vec::new());
    };
    let usage = store.budget_usage(customer_id, period).await?;
    let mut recorded = Vec::new();
    for threshold in policy.thresholds_reached(usage.used) {
        if store
            .record_alert(customer_id, period, threshold, usage, limit, now)
            .await?
        {
            warn!(
                alert = "budget_threshold",
                customer = customer_id,
                period,
                threshold_pct = threshold,
                used = usage.used,
                limit,
                mode = policy.mode.as_str(),
                "budget threshold crossed"
            );
            recorded.push(threshold);
        }
    }
    if policy.mode == BudgetMode::Hard && usage.used >= limit && !usage.exceeded {
        store.set_exceeded(customer_id, period, now).await?;
    }
    Ok(recorded)
}
