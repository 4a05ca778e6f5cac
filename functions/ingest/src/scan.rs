//! One run's scan: plan the range, walk its pages, checkpoint after each, and stop early
//! (saving the position) when time runs out or a page could not be sent.

use crate::enqueue::{Recent, enqueue};
use crate::{Deps, IngestSummary, RECENT_IDS, RunOutcome};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use tracemeter::Error;
use tracemeter::domain::ingest::{self as rules, IngestCursor, PendingScan, ScanPlan};
use tracemeter::domain::scan::{PageOutcome, Walk};
use tracing::{info, warn};

/// The state of a run while it walks.
struct Scan<'r, 'd> {
    deps: &'r Deps<'d>,
    summary: &'r mut IngestSummary,
    /// The watermark the run started from (kept in every checkpoint).
    watermark: Option<DateTime<Utc>>,
    /// When the run stops reading.
    until: Instant,
    started: Instant,
    recent: Recent,
}

/// Scans the planned range: its pages, then the watermark moved to its end.
pub async fn run(
    deps: &Deps<'_>,
    deadline: DateTime<Utc>,
    started: Instant,
    summary: &mut IngestSummary,
) -> Result<(), Error> {
    let cursor = deps.store.load_cursor(summary.api).await?;
    let Some((plan, until)) = plan(deps, &cursor, deadline, summary) else {
        return Ok(());
    };
    let mut scan = Scan {
        deps,
        summary,
        watermark: cursor.watermark,
        until,
        started,
        recent: Recent::new(RECENT_IDS),
    };
    let mut walk = Walk::new(plan.scan);
    match scan.walk_pages(&mut walk).await? {
        Some(outcome) => scan.stop(walk.scan, outcome).await,
        None => scan.complete(walk.scan.to).await,
    }
}

/// The range to scan and when to stop reading; `None` when nothing has settled yet.
fn plan(
    deps: &Deps<'_>,
    cursor: &IngestCursor,
    deadline: DateTime<Utc>,
    summary: &mut IngestSummary,
) -> Option<(ScanPlan, Instant)> {
    let (api, cfg) = (summary.api, deps.config);
    let now = deps.clock.now();
    let reach = rules::Reach {
        settle: cfg.settle,
        rescan: cfg.rescan,
        start_lookback: cfg.start_lookback,
    };
    let Some(plan) = rules::plan_scan(cursor, now, reach, deps.lister.direction()) else {
        summary.outcome = RunOutcome::NothingToScan;
        info!(api, "nothing settled to scan yet");
        return None;
    };
    summary.resumed = plan.resumed;
    summary.scan_from = Some(plan.scan.from);
    summary.scan_to = Some(plan.scan.to);
    let left = (deadline - now - cfg.time_budget_margin)
        .to_std()
        .unwrap_or(Duration::ZERO);
    info!(
        api,
        from = %plan.scan.from,
        to = %plan.scan.to,
        position = %plan.scan.position,
        resumed = plan.resumed,
        deadline = %deadline,
        time_budget_ms = left.as_millis() as u64,
        "ingest scan starting"
    );
    Some((plan, Instant::now() + left))
}

impl Scan<'_, '_> {
    /// Reads, filters and sends page after page, checkpointing after each. `Some` when the
    /// run has to stop before the range's end (the walk is then at the last page done).
    async fn walk_pages(&mut self, walk: &mut Walk) -> Result<Option<RunOutcome>, Error> {
        while !walk.done {
            if Instant::now() >= self.until {
                return Ok(Some(RunOutcome::OutOfTime));
            }
            let mut next = walk.clone();
            let page = match self.deps.lister.next_page(&mut next, self.until).await {
                Ok(PageOutcome::Page(page)) => page,
                Ok(PageOutcome::OutOfTime { partial }) => {
                    self.summary.count_requests(&partial);
                    return Ok(Some(RunOutcome::OutOfTime));
                }
                Err(e) => {
                    self.summary.position = Some(walk.scan.position);
                    self.checkpoint(walk.scan).await?;
                    return Err(e);
                }
            };
            self.summary.count_page(&page);
            let failed = enqueue(self.deps, page.traces, &mut self.recent, self.summary).await?;
            if failed > 0 {
                // The page stays unfinished: the next run reads it again.
                return Ok(Some(RunOutcome::SendFailures));
            }
            *walk = next;
            if !walk.done {
                self.checkpoint(walk.scan).await?;
            }
            let every = self.deps.config.progress_every_pages;
            self.summary
                .progress(every, walk.scan.position, self.started);
        }
        Ok(None)
    }

    /// Saves the position reached within the range.
    async fn checkpoint(&self, scan: PendingScan) -> Result<(), Error> {
        let cursor = IngestCursor {
            watermark: self.watermark,
            pending: Some(scan),
        };
        self.save(&cursor).await
    }

    /// Ends the run early with `outcome`, the position saved for the next run.
    async fn stop(self, scan: PendingScan, outcome: RunOutcome) -> Result<(), Error> {
        self.summary.outcome = outcome;
        self.summary.position = Some(scan.position);
        self.checkpoint(scan).await?;
        warn!(
            api = self.summary.api,
            outcome = ?outcome,
            position = ?self.summary.position,
            "ingest run stopped early; the next run resumes at the saved position"
        );
        Ok(())
    }

    /// The range is covered: the watermark moves to its end and no scan is pending.
    async fn complete(self, end: DateTime<Utc>) -> Result<(), Error> {
        let done = IngestCursor {
            watermark: Some(self.watermark.map_or(end, |w| w.max(end))),
            pending: None,
        };
        self.save(&done).await?;
        self.summary.outcome = RunOutcome::Completed;
        Ok(())
    }

    async fn save(&self, cursor: &IngestCursor) -> Result<(), Error> {
        let now = self.deps.clock.now();
        self.deps
            .store
            .save_cursor(self.summary.api, cursor, now)
            .await
    }
}
