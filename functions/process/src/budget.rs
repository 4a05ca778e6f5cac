//! Budget alerts after credits were counted: the shared alert path
//! ([`tracemeter::alerts::check`]), which an operator's budget change uses too.

use crate::Deps;
use tracemeter::Result;
use tracemeter::domain::budget::BudgetPolicy;

/// Checks a customer's period after credits were counted in it.
pub(crate) async fn check(
    deps: &Deps<'_>,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
) -> Result<()> {
    let now = deps.clock.now();
    tracemeter::alerts::check(deps.ledger, customer_id, period, policy, now)
        .await
        .map(|_| ())
}
