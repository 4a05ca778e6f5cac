//! One run's scan: plan the ranges (the fresh range, then the due re-scan tiers), walk each
//! range's pages, checkpoint after each page, and stop early (saving the position in that
//! range's lane) when time runs out or a page could not be sent.

use crate::enqueue::{Recent, enqueue};
use crate::{Deps, IngestSummary, RECENT_IDS, RunOutcome};
use std::time::{Duration, Instant};
use tracemeter::Error;
use tracemeter::domain::ingest::{self as rules, IngestCursor, Lane, PendingScan, ScanPlan};
use tracemeter::domain::scan::{PageOutcome, Walk};
use tracing::{info, warn};

/// The state of a run while it walks.
struct Scan<'r, 'd> {
    deps: &'r Deps<'d>,
    summary: &'r mut IngestSummary,
    /// The cursor as the run moves it (saved at every checkpoint).
    cursor: IngestCursor,
    /// When the run stops reading.
    until: Instant,
    started: Instant,
    recent: Recent,
}

/// Scans the planned ranges in order; each one covered moves its lane's mark to its end (one
/// cursor write at the end of the run, or with the next checkpoint).
pub async fn run(
    deps: &Deps<'_>,
    deadline: chrono::DateTime<chrono::Utc>,
    started: Instant,
    summary: &mut IngestSummary,
) -> Result<(), Error> {
    let stored = deps.store.load_cursor(summary.api).await?;
    let Some((cursor, plans, until)) = plan(deps, &stored, deadline, summary) else {
        return Ok(());
    };
    let mut scan = Scan {
        deps,
        summary,
        cursor,
        until,
        started,
        recent: Recent::new(RECENT_IDS),
    };
    for plan in plans {
        scan.begin(&plan);
        let mut walk = Walk::new(plan.scan);
        match scan.walk_pages(plan.lane, &mut walk).await? {
            Some(outcome) => return scan.stop(plan.lane, walk.scan, outcome).await,
            // Saved with the next checkpoint or at the end of the run: a run that dies
            // before reads the range again, which the ledger makes harmless.
            None => scan.cursor.complete(plan.lane, plan.scan),
        }
    }
    scan.save().await?;
    scan.summary.outcome = RunOutcome::Completed;
    Ok(())
}

/// The cursor (with new tiers' marks), the ranges to scan and when to stop reading; `None`
/// when nothing has settled yet and no tier is due.
fn plan(
    deps: &Deps<'_>,
    stored: &IngestCursor,
    deadline: chrono::DateTime<chrono::Utc>,
    summary: &mut IngestSummary,
) -> Option<(IngestCursor, Vec<ScanPlan>, Instant)> {
    let (api, cfg) = (summary.api, deps.config);
    let now = deps.clock.now();
    let reach = rules::Reach {
        settle: cfg.settle,
        rescan: cfg.rescan,
        start_lookback: cfg.start_lookback,
    };
    let direction = deps.lister.direction();
    let (cursor, plans) = rules::plan_scans(stored, now, reach, &cfg.rescan_tiers, direction);
    if plans.is_empty() {
        summary.outcome = RunOutcome::NothingToScan;
        info!(api, "nothing settled to scan yet");
        return None;
    }
    if let Some(fresh) = plans.iter().find(|p| p.lane == Lane::Fresh) {
        summary.resumed = fresh.resumed;
        summary.scan_from = Some(fresh.scan.from);
        summary.scan_to = Some(fresh.scan.to);
    }
    let left = (deadline - now - cfg.time_budget_margin)
        .to_std()
        .unwrap_or(Duration::ZERO);
    info!(
        api,
        ranges = plans.len(),
        deadline = %deadline,
        time_budget_ms = left.as_millis() as u64,
        "ingest run planned"
    );
    Some((cursor, plans, Instant::now() + left))
}

impl Scan<'_, '_> {
    /// Logs and counts the start of a range.
    fn begin(&mut self, plan: &ScanPlan) {
        if let Lane::Tier(_) = plan.lane {
            self.summary.rescan_ranges += 1;
        }
        info!(
            api = self.summary.api,
            lane = %lane_name(plan.lane),
            from = %plan.scan.from,
            to = %plan.scan.to,
            position = %plan.scan.position,
            resumed = plan.resumed,
            "ingest scan starting"
        );
    }

    /// Reads, filters and sends page after page, checkpointing after each. `Some` when the
    /// run has to stop before the range's end (the walk is then at the last page done).
    async fn walk_pages(
        &mut self,
        lane: Lane,
        walk: &mut Walk,
    ) -> Result<Option<RunOutcome>, Error> {
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
                    self.note_stop(lane, walk.scan);
                    self.checkpoint(lane, walk.scan).await?;
                    return Err(e);
                }
            };
            self.summary.count_page(&page);
            if let Lane::Tier(_) = lane {
                self.summary.rescan_traces_found += page.traces.len() as u64;
            }
            let before = self.summary.enqueued;
            let failed = enqueue(self.deps, page.traces, &mut self.recent, self.summary).await?;
            if let Lane::Tier(_) = lane {
                self.summary.rescan_enqueued += self.summary.enqueued - before;
            }
            if failed > 0 {
                // The page stays unfinished: the next run reads it again.
                return Ok(Some(RunOutcome::SendFailures));
            }
            *walk = next;
            if !walk.done {
                self.checkpoint(lane, walk.scan).await?;
            }
            let every = self.deps.config.progress_every_pages;
            self.summary
                .progress(every, walk.scan.position, self.started);
        }
        Ok(None)
    }

    /// Saves the position reached within `lane`'s range.
    async fn checkpoint(&mut self, lane: Lane, scan: PendingScan) -> Result<(), Error> {
        self.cursor.checkpoint(lane, scan);
        self.save().await
    }

    /// Where the fresh lane got to (the lag is measured from it) and the lane stopped in.
    fn note_stop(&mut self, lane: Lane, scan: PendingScan) {
        self.summary.position = match lane {
            Lane::Fresh => Some(scan.position),
            Lane::Tier(_) => self.summary.scan_to.or(self.cursor.watermark),
        };
        self.summary.stopped_in = Some(lane_name(lane));
    }

    /// Ends the run early with `outcome`, the position saved for the next run.
    async fn stop(
        mut self,
        lane: Lane,
        scan: PendingScan,
        outcome: RunOutcome,
    ) -> Result<(), Error> {
        self.summary.outcome = outcome;
        self.note_stop(lane, scan);
        self.checkpoint(lane, scan).await?;
        warn!(
            api = self.summary.api,
            outcome = ?outcome,
            lane = %lane_name(lane),
            position = %scan.position,
            "ingest run stopped early; the next run resumes at the saved position"
        );
        Ok(())
    }

    async fn save(&self) -> Result<(), Error> {
        let now = self.deps.clock.now();
        self.deps
            .store
            .save_cursor(self.summary.api, &self.cursor, now)
            .await
    }
}

/// `fresh`, or `rescan <age>s`.
fn lane_name(lane: Lane) -> String {
    match lane {
        Lane::Fresh => "fresh".into(),
        Lane::Tier(age) => format!("rescan {age}s"),
    }
}
