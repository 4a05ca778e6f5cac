//! `ambiguous list` and `ambiguous resolve`: a claim that outlived Stripe's dedup window,
//! settled once the operator has looked its identifier up in Stripe. Delivered: the revision
//! is billed (its credits stay counted). Not delivered: its credits go back to the budget and
//! the entry fails as `not_delivered`, for `replay` to bill it.

use super::time;
use crate::Ctx;
use crate::args::{AmbiguousCommand, ResolveArgs};
use crate::error::{CliError, CliResult};
use crate::output::table;
use serde_json::json;
use tracemeter::domain::attention::AttentionQuery;
use tracemeter::domain::ledger::LedgerState;

/// Runs an `ambiguous` verb.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, command: &AmbiguousCommand) -> CliResult {
    match command {
        AmbiguousCommand::List => list(ctx).await,
        AmbiguousCommand::Resolve(args) => resolve(ctx, args).await,
    }
}

async fn list(ctx: &mut Ctx<'_, '_>) -> CliResult {
    let query = AttentionQuery::all(LedgerState::Ambiguous);
    let found = ctx.deps.ledger.needing_attention(&query).await?;
    let pending: Vec<_> = found
        .iter()
        .filter_map(|f| f.entry.pending.as_ref().map(|p| (&f.entry.trace_id, p)))
        .collect();
    let value = json!(
        pending
            .iter()
            .map(|(id, p)| json!({
                "trace_id": id, "customer_id": p.customer_id, "revision": p.revision,
                "identifier": p.identifier, "billable": p.billable, "period": p.period,
                "claimed_at": time(p.claimed_at),
            }))
            .collect::<Vec<_>>()
    );
    let rows: Vec<Vec<String>> = pending
        .iter()
        .map(|(id, p)| {
            vec![
                id.to_string(),
                p.customer_id.clone(),
                p.revision.to_string(),
                p.identifier.clone(),
                p.billable.to_string(),
                p.period.clone(),
                time(p.claimed_at),
            ]
        })
        .collect();
    ctx.out.report(&value, || {
        let headers = [
            "trace",
            "customer",
            "revision",
            "identifier",
            "credits",
            "period",
            "claimed",
        ];
        format!(
            "{}{} ambiguous entries\n",
            table(&headers, &rows),
            rows.len()
        )
    })
}

async fn resolve(ctx: &mut Ctx<'_, '_>, args: &ResolveArgs) -> CliResult {
    let ledger = ctx.deps.ledger;
    let id = args.id.as_str();
    let entry = ledger
        .entry(id)
        .await?
        .ok_or_else(|| CliError::NotFound(format!("no ledger entry for trace {id}")))?;
    let pending = match (&entry.state, &entry.pending) {
        (LedgerState::Ambiguous, Some(p)) => p.clone(),
        (state, _) => {
            let value = json!({"trace_id": id, "changed": false, "state": state.as_str()});
            return ctx.out.report(&value, || {
                format!(
                    "trace {id} is {}, not ambiguous: nothing to do\n",
                    state.as_str()
                )
            });
        }
    };
    let now = ctx.deps.clock.now();
    let settled = if args.delivered {
        ctx.approve(&format!(
            "will record trace {id} revision {} ({}) as delivered: {} credits billed to {}",
            pending.revision, pending.identifier, pending.billable, pending.customer_id
        ))?;
        ledger.settle_delivered(id, &pending, now).await?
    } else {
        ctx.approve(&format!(
            "will record trace {id} revision {} ({}) as not delivered: {} credits go back to {}'s budget for {}",
            pending.revision, pending.identifier, pending.billable, pending.customer_id, pending.period
        ))?;
        let detail = format!("operator: Stripe has no event {}", pending.identifier);
        ledger
            .settle_not_delivered(id, &pending, &detail, now)
            .await?
    };
    if !settled {
        return Err(CliError::Partial(format!(
            "trace {id} changed meanwhile: nothing was done; look again"
        )));
    }
    let events = match args.delivered {
        true => Vec::new(),
        false => super::budget::recheck(ctx, &pending.customer_id, &pending.period).await?,
    };
    let state = if args.delivered { "metered" } else { "failed" };
    let value = json!({"trace_id": id, "changed": true, "state": state, "budget_events": events});
    ctx.out.report(&value, || match args.delivered {
        true => format!("trace {id} is metered\n"),
        false => format!(
            "trace {id} is failed (not_delivered); bill it with: tracemeter replay --trace {id}\n"
        ),
    })
}
