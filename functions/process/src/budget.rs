//! Budget alerts: one alert record per threshold crossed (a conditional put: exactly once,
//! however many invocations race), and the exceeded flag at a hard limit.

use crate::Deps;
use tracemeter::Result;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};
use tracing::warn;

/// Checks a customer's period after credits were counted in it.
pub(crate) async fn check(
    deps: &Deps<'_>,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
) -> Result<()> {
    let Some(limit) = policy.limit else {
        return Ok(());
    };
    let usage = deps.ledger.budget_usage(customer_id, period).await?;
    let now = deps.clock.now();
    for threshold in policy.thresholds_reached(usage.used) {
        if deps
            .ledger
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
        }
    }
    if policy.mode == BudgetMode::Hard && usage.used >= limit && !usage.exceeded {
        deps.ledger.set_exceeded(customer_id, period, now).await?;
    }
    Ok(())
}
