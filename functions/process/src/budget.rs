//! Budget alerts after credits were counted: the shared alert path
//! ([`tracemeter::alerts::check`]), which an operator's budget change uses too.

use crate::Deps;
use crate::invocation::Invocation;
use tracemeter::Result;
use tracemeter::domain::budget::{BudgetPolicy, BudgetUsage};

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

/// [`check`] on a counter read with others (`BudgetStore::budget_usages`).
pub(crate) async fn check_read(
    deps: &Deps<'_>,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
    usage: BudgetUsage,
) -> Result<()> {
    let now = deps.clock.now();
    tracemeter::alerts::check_read(deps.ledger, customer_id, period, policy, usage, now)
        .await
        .map(|_| ())
}

/// The check again for a message settled as already billed (a redelivery: its credits were
/// counted before, and the check then may have failed): once per customer and period in an
/// invocation, where a redelivered batch of 100 would otherwise repeat it 100 times (a
/// counter read and a refused conditional put per threshold reached, each). A failed check
/// fails its message and lets the next one try again.
pub(crate) async fn recheck(
    deps: &Deps<'_>,
    inv: &Invocation,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
) -> Result<()> {
    if !inv.first_recheck(customer_id, period) {
        return Ok(());
    }
    let checked = check(deps, customer_id, period, policy).await;
    if checked.is_err() {
        inv.forget_recheck(customer_id, period);
    }
    checked
}
