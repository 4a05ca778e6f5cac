//! `trace show`: one entry as it really is.

use super::time;
use crate::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{fields, or_dash};
use serde_json::json;
use tracemeter::domain::budget::BudgetUsage;
use tracemeter::domain::ledger::LedgerEntry;
use tracemeter::domain::meter::identifier;

/// Prints the entry (a receipt's delivery folded in), its revisions' identifiers, the
/// pending claim, the failure and the budget counter its credits were counted in.
pub(super) async fn show(ctx: &mut Ctx<'_, '_>, id: &str) -> CliResult {
    let ledger = ctx.deps.ledger;
    let entry = ledger
        .entry(id)
        .await?
        .ok_or_else(|| CliError::NotFound(format!("no ledger entry for trace {id}")))?;
    let period = ledger.counted_period(id).await?;
    let customer = entry
        .pending
        .as_ref()
        .map(|p| p.customer_id.clone())
        .or_else(|| entry.customer_id.clone());
    let counter = match (&customer, &period) {
        (Some(c), Some(p)) => Some(ledger.budget_usage(c, p).await?),
        _ => None,
    };
    let identifiers: Vec<String> = (1..=entry.revision).map(|r| identifier(id, r)).collect();
    let value = json!({
        "trace_id": entry.trace_id,
        "state": entry.state.as_str(),
        "version": entry.version,
        "revision": entry.revision,
        "identifiers": identifiers,
        "total_credits": entry.total_credits,
        "billed_credits": entry.billed_credits,
        "capped_credits": entry.capped_credits,
        "customer_id": customer,
        "period": period,
        "delivered_by_receipt": entry.receipted,
        "price_version": entry.price_version,
        "pending": entry.pending.as_ref().map(|p| json!({
            "revision": p.revision, "identifier": p.identifier, "billable": p.billable,
            "capped": p.capped, "claimed_at": time(p.claimed_at), "lease_until": time(p.lease_until),
        })),
        "reason": entry.reason,
        "detail": entry.detail,
        "budget_counter": counter.as_ref().map(|u| json!({"used": u.used, "capped": u.capped, "exceeded": u.exceeded})),
    });
    ctx.out.report(&value, || {
        human(&entry, &identifiers, &customer, &period, counter)
    })
}

fn human(
    e: &LedgerEntry,
    identifiers: &[String],
    customer: &Option<String>,
    period: &Option<String>,
    counter: Option<BudgetUsage>,
) -> String {
    let pending = e.pending.as_ref().map(|p| {
        format!(
            "revision {} ({}): {} credits billable, {} capped, claimed {}, lease until {}",
            p.revision,
            p.identifier,
            p.billable,
            p.capped,
            time(p.claimed_at),
            time(p.lease_until)
        )
    });
    let counter = counter.map(|u| {
        format!(
            "used {}, capped {}, exceeded {}",
            u.used, u.capped, u.exceeded
        )
    });
    fields(&[
        ("trace", e.trace_id.clone()),
        ("state", e.state.as_str().to_string()),
        ("version", e.version.to_string()),
        ("revisions", e.revision.to_string()),
        (
            "identifiers",
            or_dash(Some(identifiers.join(", ")).filter(|s| !s.is_empty())),
        ),
        (
            "credits",
            format!(
                "total {}, billed {}, capped {}",
                e.total_credits, e.billed_credits, e.capped_credits
            ),
        ),
        ("customer", or_dash(customer.clone())),
        ("period", or_dash(period.clone())),
        ("price version", or_dash(e.price_version.clone())),
        ("by receipt", or_dash(e.receipted.clone())),
        ("pending", or_dash(pending)),
        ("reason", or_dash(e.reason.clone())),
        ("detail", or_dash(e.detail.clone())),
        ("budget counter", or_dash(counter)),
    ])
}
