//! An operator's re-scan of a past range (`tracemeter backfill`): the normal path of a run
//! (the lease, Langfuse's own paging, the ledger's coverage skip, the sends) over an explicit
//! `[from, to)`, without reading or moving the cursor. What the ledger covers is skipped, so
//! a backfill bills nothing twice.

use crate::enqueue::{Recent, enqueue};
use crate::{Deps, IngestSummary, RECENT_IDS, RunOutcome, lease};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use tracemeter::Error;
use tracemeter::domain::ingest::{Direction, PendingScan};
use tracemeter::domain::scan::{PageOutcome, Walk};

/// Scans `[from, to)` once, stopping `INGEST_TIME_BUDGET_MARGIN_SECONDS` before `deadline`.
/// `RunOutcome::LeaseHeld` when an ingest run holds the lease (nothing scanned);
/// `OutOfTime` / `SendFailures` with `position` when it stopped early (run it again).
pub async fn backfill(
    deps: &Deps<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    deadline: DateTime<Utc>,
) -> Result<IngestSummary, Error> {
    let started = Instant::now();
    let mut summary = IngestSummary::new(deps.lister.api());
    summary.scan_from = Some(from);
    summary.scan_to = Some(to);
    let event = serde_json::json!({"id": "tracemeter-backfill"});
    let Some(lease) = lease::acquire(deps, &event, deadline).await? else {
        summary.outcome = RunOutcome::LeaseHeld;
        return Ok(summary);
    };
    let left = (deadline - deps.clock.now() - deps.config.time_budget_margin)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let result = walk(deps, from, to, Instant::now() + left, &mut summary).await;
    let released = lease.release(deps).await;
    summary.finish(started);
    summary.log();
    result?;
    released?;
    Ok(summary)
}

async fn walk(
    deps: &Deps<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    until: Instant,
    summary: &mut IngestSummary,
) -> Result<(), Error> {
    let position = match deps.lister.direction() {
        Direction::NewestFirst => to,
        Direction::OldestFirst => from,
    };
    let mut walk = Walk::new(PendingScan { from, to, position });
    let mut recent = Recent::new(RECENT_IDS);
    while !walk.done {
        summary.position = Some(walk.scan.position);
        let page = match deps.lister.next_page(&mut walk, until).await? {
            PageOutcome::Page(page) => page,
            PageOutcome::OutOfTime { partial } => {
                summary.count_requests(&partial);
                summary.outcome = RunOutcome::OutOfTime;
                return Ok(());
            }
        };
        summary.count_page(&page);
        if enqueue(deps, page.traces, &mut recent, summary).await? > 0 {
            summary.outcome = RunOutcome::SendFailures;
            return Ok(());
        }
    }
    summary.position = None;
    summary.outcome = RunOutcome::Completed;
    Ok(())
}
