//! `backfill`: a past range re-scanned through ingest's normal path without its cursor.

use super::time;
use crate::Ctx;
use crate::args::BackfillArgs;
use crate::error::{CliError, CliResult};
use chrono::Duration;
use ingest::RunOutcome;
use serde_json::json;
use tracemeter::domain::ingest::Direction;

/// Scans the range once; what the ledger covers is skipped, the rest is enqueued.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, args: &BackfillArgs) -> CliResult {
    let deps = ctx.deps.ingest.ok_or_else(|| {
        tracemeter::Error::Config("backfill needs the ingest function's Langfuse variables (LANGFUSE_BASE_URL, LANGFUSE_SECRET_ARN)".into())
    })?;
    let now = ctx.deps.clock.now();
    let (from, to) = (args.from.resolve(now), args.to.resolve(now));
    if from >= to {
        return Err(CliError::Invalid(format!(
            "--from {} is not before --to {}",
            time(from),
            time(to)
        )));
    }
    let settled = now - deps.config.settle;
    if to > settled {
        return Err(CliError::Invalid(format!(
            "--to {} is not settled yet: Langfuse usage is billed once SETTLE_SECONDS have passed (until {})",
            time(to),
            time(settled)
        )));
    }
    ctx.approve(&format!(
        "will re-scan Langfuse ({}) from {} to {} and enqueue the traces the ledger does not cover; ingest's cursor is not changed",
        deps.lister.api(),
        time(from),
        time(to)
    ))?;
    let deadline = now + Duration::minutes(i64::from(args.minutes.max(1)));
    let summary = ingest::backfill::backfill(deps, from, to, deadline).await?;
    let value = json!({
        "outcome": format!("{:?}", summary.outcome), "pages": summary.pages,
        "traces_found": summary.traces_found, "enqueued": summary.enqueued,
        "skipped_covered": summary.skipped_covered, "skipped_operator": summary.skipped_operator,
        "stopped_at": summary.position.map(time),
    });
    ctx.out.report(&value, || {
        format!(
            "{:?}: {} traces found, {} enqueued, {} already covered by the ledger, {} left to an operator\n",
            summary.outcome, summary.traces_found, summary.enqueued, summary.skipped_covered, summary.skipped_operator
        )
    })?;
    match (summary.outcome, summary.position) {
        (RunOutcome::LeaseHeld, _) => Err(CliError::Partial(
            "an ingest run holds the lease: nothing scanned; try again in a few minutes".into(),
        )),
        (RunOutcome::Completed, _) | (_, None) => Ok(()),
        (outcome, Some(at)) => {
            let (a, b) = match deps.lister.direction() {
                Direction::NewestFirst => (from, at),
                Direction::OldestFirst => (at, to),
            };
            Err(CliError::Partial(format!(
                "stopped ({outcome:?}) with [{}, {}) left: run backfill again for it",
                time(a),
                time(b)
            )))
        }
    }
}
