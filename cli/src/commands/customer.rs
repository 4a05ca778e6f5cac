//! `customer map` / `customer unmap`: the Langfuse user to Stripe customer mapping.

use crate::Ctx;
use crate::args::CustomerCommand;
use crate::error::CliResult;
use crate::output::escape;
use serde_json::json;

/// Runs a `customer` verb.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, command: &CustomerCommand) -> CliResult {
    match command {
        CustomerCommand::Map { user_id, customer } => map(ctx, user_id, customer).await,
        CustomerCommand::Unmap { user_id } => unmap(ctx, user_id).await,
    }
}

async fn map(ctx: &mut Ctx<'_, '_>, user_id: &str, customer: &str) -> CliResult {
    let ledger = ctx.deps.ledger;
    let user = escape(user_id);
    let current = ledger.customer_for_user(user_id).await?;
    if current.as_deref() != Some(customer) {
        let was = current.clone().unwrap_or_else(|| "unmapped".into());
        let was = escape(&was);
        ctx.approve(&format!(
            "will map Langfuse user {user} to {customer} (now: {was})"
        ))?;
        ledger.map_user(user_id, customer).await?;
    }
    let changed = current.as_deref() != Some(customer);
    let value =
        json!({"user_id": user_id, "customer_id": customer, "changed": changed, "was": current});
    ctx.out.report(&value, || {
        let done = match changed {
            true => format!("user {user} is mapped to {customer}\n"),
            false => format!("user {user} is already mapped to {customer}: nothing to do\n"),
        };
        format!("{done}traces that failed as unmapped bill with: tracemeter replay --reason unmapped_customer\n")
    })
}

async fn unmap(ctx: &mut Ctx<'_, '_>, user_id: &str) -> CliResult {
    let ledger = ctx.deps.ledger;
    let user = escape(user_id);
    let current = ledger.customer_for_user(user_id).await?;
    let removed = match &current {
        Some(c) => {
            ctx.approve(&format!(
                "will remove the mapping of Langfuse user {user} (now: {c})"
            ))?;
            ledger.unmap_user(user_id).await?
        }
        None => None,
    };
    let value = json!({"user_id": user_id, "changed": removed.is_some(), "was": current});
    ctx.out.report(&value, || match &current {
        Some(c) => format!("user {user} is no longer mapped (was {})\n", escape(c)),
        None => format!("user {user} is not mapped: nothing to do\n"),
    })
}
