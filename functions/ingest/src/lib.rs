//! The ingest Lambda: on each EventBridge schedule tick, lists settled usage from Langfuse and
//! enqueues the trace ids that need metering (see DESIGN.md, "Ingest").
//!
//! - Single flight: a lease item (conditional put with expiry); a run that finds it held
//!   exits at once, saying so.
//! - Incremental and settled: scans `[min(watermark, end - rescan), end)` with
//!   `end = now - SETTLE_SECONDS`; the position is checkpointed after every page, and a run
//!   that nears its deadline stops there; the next run resumes.
//! - Cheap: trace ids whose ledger entry already covers the usage seen are skipped
//!   (`BatchGetItem`); the rest go out with `SendMessageBatch`, failed entries retried a
//!   bounded number of times, then reported and the page left unfinished (never lost).
//! - Observable: progress lines and one summary line per run.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};
use tracemeter::Error;
use tracemeter::clock::Clock;
use tracemeter::config::IngestConfig;
use tracemeter::domain::ingest::{self as rules, IngestCursor, PendingScan, Skip};
use tracemeter::domain::message::MeterMessage;
use tracemeter::domain::message::OutgoingMessage;
use tracemeter::domain::scan::{ListedTrace, PageOutcome, ScanPage, Walk};
use tracemeter::ports::{IngestStore, QueueSender, TraceLister};
use tracing::{error, info, warn};

/// How many recently handled trace ids a run remembers, to avoid enqueueing a trace twice
/// when its observations span pages. Bounded, so memory stays flat on any volume.
pub const RECENT_IDS: usize = 5_000;
/// `SendMessageBatch` calls in flight at once.
pub const SEND_CONCURRENCY: usize = 4;
/// The lease outlives the invocation's deadline by this much.
pub const LEASE_GRACE: chrono::Duration = chrono::Duration::seconds(10);

/// Everything the handler needs, built once per cold start.
pub struct IngestDeps<'a> {
    /// Configuration.
    pub config: &'a IngestConfig,
    /// Langfuse listing.
    pub lister: &'a dyn TraceLister,
    /// Lease, cursor and ledger look-ups.
    pub store: &'a dyn IngestStore,
    /// The meter queue.
    pub queue: &'a dyn QueueSender,
    /// Time.
    pub clock: &'a dyn Clock,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The scan range was covered; the watermark moved to its end.
    Completed,
    /// Another run holds the lease: nothing was done.
    LeaseHeld,
    /// Nothing settled to scan yet.
    NothingToScan,
    /// Stopped before the deadline; the position is saved and the next run resumes.
    OutOfTime,
    /// Some entries could not be sent after all tries; reported, and the page is left for
    /// the next run.
    SendFailures,
}

/// The summary of one run (also the Lambda's response).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestSummary {
    /// `v2` or `legacy`.
    pub api: &'static str,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Whether a cut-off scan was resumed.
    pub resumed: bool,
    /// The scan range, if any.
    pub scan_from: Option<DateTime<Utc>>,
    /// End of the scan range (exclusive).
    pub scan_to: Option<DateTime<Utc>>,
    /// The position saved at the end (when not completed).
    pub position: Option<DateTime<Utc>>,
    /// Pages read.
    pub pages: u64,
    /// Langfuse requests made.
    pub requests: u64,
    /// Rows (observations or traces) read.
    pub rows: u64,
    /// Distinct traces found per page, summed.
    pub traces_found: u64,
    /// Trace ids enqueued.
    pub enqueued: u64,
    /// Skipped: the ledger covers the usage seen.
    pub skipped_covered: u64,
    /// Skipped: failed or ambiguous in the ledger (for an operator).
    pub skipped_operator: u64,
    /// Skipped: handled earlier in this run.
    pub skipped_repeat: u64,
    /// Entry sends that were retried.
    pub send_retries: u64,
    /// Entries not sent after all tries (logged with their trace ids).
    pub send_failed: u64,
    /// 429 answers from Langfuse.
    pub rate_limited: u64,
    /// Time spent waiting for the request budget, 429s and retries.
    pub waited_ms: u64,
    /// Run time.
    pub elapsed_ms: u64,
    /// Traces found per second.
    pub traces_per_second: f64,
}

impl IngestSummary {
    fn new(api: &'static str) -> IngestSummary {
        IngestSummary {
            api,
            outcome: RunOutcome::NothingToScan,
            resumed: false,
            scan_from: None,
            scan_to: None,
            position: None,
            pages: 0,
            requests: 0,
            rows: 0,
            traces_found: 0,
            enqueued: 0,
            skipped_covered: 0,
            skipped_operator: 0,
            skipped_repeat: 0,
            send_retries: 0,
            send_failed: 0,
            rate_limited: 0,
            waited_ms: 0,
            elapsed_ms: 0,
            traces_per_second: 0.0,
        }
    }
}

/// A bounded set of recently handled ids (oldest forgotten first).
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Recent {
    fn new(capacity: usize) -> Recent {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Runs ingest once. `deadline` is the invocation's deadline; the run stops
/// `INGEST_TIME_BUDGET_MARGIN_SECONDS` before it.
pub async fn handle(
    deps: &IngestDeps<'_>,
    event: &serde_json::Value,
    deadline: DateTime<Utc>,
) -> Result<IngestSummary, Error> {
    let started = Instant::now();
    let api = deps.lister.api();
    let event_id = event.get("id").and_then(|v| v.as_str()).unwrap_or("manual");
    let owner = format!(
        "{event_id}/{}/{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let now = deps.clock.now();
    let mut summary = IngestSummary::new(api);
    if !deps
        .store
        .acquire_lease(api, &owner, now, deadline + LEASE_GRACE)
        .await?
    {
        summary.outcome = RunOutcome::LeaseHeld;
        info!(
            api,
            event_id, "another ingest run holds the lease; exiting without work"
        );
        log_summary(&summary);
        return Ok(summary);
    }
    let result = run(deps, deadline, started, &mut summary).await;
    let released = deps.store.release_lease(api, &owner).await;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.traces_per_second = rules::rate_per_second(summary.traces_found, started.elapsed());
    log_summary(&summary);
    if let Err(e) = &result {
        error!(api, error = %e, "ingest run failed; the position reached is saved");
    }
    result?;
    released?;
    Ok(summary)
}

fn log_summary(s: &IngestSummary) {
    info!(
        summary = true,
        api = s.api,
        outcome = ?s.outcome,
        resumed = s.resumed,
        scan_from = ?s.scan_from,
        scan_to = ?s.scan_to,
        position = ?s.position,
        pages = s.pages,
        requests = s.requests,
        rows = s.rows,
        traces_found = s.traces_found,
        enqueued = s.enqueued,
        skipped_covered = s.skipped_covered,
        skipped_operator = s.skipped_operator,
        skipped_repeat = s.skipped_repeat,
        send_retries = s.send_retries,
        send_failed = s.send_failed,
        rate_limited = s.rate_limited,
        waited_ms = s.waited_ms,
        elapsed_ms = s.elapsed_ms,
        traces_per_second = s.traces_per_second,
        "ingest run summary"
    );
}

async fn run(
    deps: &IngestDeps<'_>,
    deadline: DateTime<Utc>,
    started: Instant,
    summary: &mut IngestSummary,
) -> Result<(), Error> {
    let api = summary.api;
    let cfg = deps.config;
    let cursor = deps.store.load_cursor(api).await?;
    let now = deps.clock.now();
    let reach = rules::Reach {
        settle: cfg.settle,
        rescan: cfg.rescan,
        start_lookback: cfg.start_lookback,
    };
    let Some(plan) = rules::plan_scan(&cursor, now, reach, deps.lister.direction()) else {
        summary.outcome = RunOutcome::NothingToScan;
        info!(api, "nothing settled to scan yet");
        return Ok(());
    };
    summary.resumed = plan.resumed;
    summary.scan_from = Some(plan.scan.from);
    summary.scan_to = Some(plan.scan.to);
    let left = (deadline - now - cfg.time_budget_margin)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let until = Instant::now() + left;
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
    let mut walk = Walk::new(plan.scan);
    let mut recent = Recent::new(RECENT_IDS);
    let checkpoint = |scan: PendingScan| IngestCursor {
        watermark: cursor.watermark,
        pending: Some(scan),
    };
    loop {
        if walk.done {
            break;
        }
        if Instant::now() >= until {
            return stop(deps, summary, checkpoint(walk.scan), RunOutcome::OutOfTime).await;
        }
        let mut next = walk.clone();
        let page = match deps.lister.next_page(&mut next, until).await {
            Ok(PageOutcome::Page(page)) => page,
            Ok(PageOutcome::OutOfTime { partial }) => {
                count_requests(summary, &partial);
                return stop(deps, summary, checkpoint(walk.scan), RunOutcome::OutOfTime).await;
            }
            Err(e) => {
                summary.position = Some(walk.scan.position);
                deps.store
                    .save_cursor(api, &checkpoint(walk.scan), deps.clock.now())
                    .await?;
                return Err(e);
            }
        };
        count_requests(summary, &page);
        summary.pages += 1;
        summary.rows += page.rows as u64;
        summary.traces_found += page.traces.len() as u64;
        let failed = enqueue(deps, page.traces, &mut recent, summary).await?;
        if failed > 0 {
            // The page stays unfinished: the next run reads it again.
            return stop(
                deps,
                summary,
                checkpoint(walk.scan),
                RunOutcome::SendFailures,
            )
            .await;
        }
        walk = next;
        if !walk.done {
            deps.store
                .save_cursor(api, &checkpoint(walk.scan), deps.clock.now())
                .await?;
        }
        if summary
            .pages
            .is_multiple_of(u64::from(cfg.progress_every_pages.max(1)))
        {
            info!(
                api,
                pages = summary.pages,
                requests = summary.requests,
                traces_found = summary.traces_found,
                enqueued = summary.enqueued,
                skipped = summary.skipped_covered + summary.skipped_operator + summary.skipped_repeat,
                position = %walk.scan.position,
                traces_per_second = rules::rate_per_second(summary.traces_found, started.elapsed()),
                "ingest progress"
            );
        }
    }
    let done = IngestCursor {
        watermark: Some(
            cursor
                .watermark
                .map_or(walk.scan.to, |w| w.max(walk.scan.to)),
        ),
        pending: None,
    };
    deps.store.save_cursor(api, &done, deps.clock.now()).await?;
    summary.outcome = RunOutcome::Completed;
    Ok(())
}

fn count_requests(summary: &mut IngestSummary, page: &ScanPage) {
    summary.requests += u64::from(page.requests);
    summary.rate_limited += u64::from(page.rate_limited);
    summary.waited_ms += page.waited.as_millis() as u64;
}

async fn stop(
    deps: &IngestDeps<'_>,
    summary: &mut IngestSummary,
    cursor: IngestCursor,
    outcome: RunOutcome,
) -> Result<(), Error> {
    summary.outcome = outcome;
    summary.position = cursor.pending.map(|p| p.position);
    deps.store
        .save_cursor(summary.api, &cursor, deps.clock.now())
        .await?;
    warn!(
        api = summary.api,
        outcome = ?outcome,
        position = ?summary.position,
        "ingest run stopped early; the next run resumes at the saved position"
    );
    Ok(())
}

/// Filters a page's traces through the ledger and sends the rest. Returns how many entries
/// could not be sent after all tries.
async fn enqueue(
    deps: &IngestDeps<'_>,
    traces: Vec<ListedTrace>,
    recent: &mut Recent,
    summary: &mut IngestSummary,
) -> Result<u64, Error> {
    let mut fresh = Vec::with_capacity(traces.len());
    for t in traces {
        if recent.contains(&t.trace_id) {
            summary.skipped_repeat += 1;
        } else {
            fresh.push(t);
        }
    }
    if fresh.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = fresh.iter().map(|t| t.trace_id.clone()).collect();
    let coverage = deps.store.coverage(&ids).await?;
    let mut to_send = Vec::with_capacity(fresh.len());
    for t in fresh {
        match rules::skip(coverage.get(&t.trace_id), &t.seen) {
            Some(Skip::Covered) => {
                summary.skipped_covered += 1;
                recent.insert(&t.trace_id);
            }
            Some(Skip::LeftForOperator) => {
                summary.skipped_operator += 1;
                recent.insert(&t.trace_id);
            }
            None => to_send.push(t.trace_id),
        }
    }
    let attempts = deps.config.send_attempts.max(1);
    let results: Vec<SendResult> = futures::stream::iter(to_send.chunks(10).map(|c| c.to_vec()))
        .map(|chunk| send_with_retries(deps.queue, chunk, attempts))
        .buffer_unordered(SEND_CONCURRENCY)
        .collect()
        .await;
    let mut failed_total = 0u64;
    for (sent, failed, retries) in results {
        summary.enqueued += sent.len() as u64;
        summary.send_retries += retries;
        for id in &sent {
            recent.insert(id);
        }
        for (trace_id, why) in &failed {
            error!(
                trace_id,
                error = %why,
                attempts,
                "could not enqueue trace after all tries; the page will be read again by the next run"
            );
        }
        failed_total += failed.len() as u64;
    }
    summary.send_failed += failed_total;
    Ok(failed_total)
}

/// Trace ids sent, trace ids not sent with the last reason, and how many entry sends were
/// retried.
type SendResult = (Vec<String>, Vec<(String, String)>, u64);

/// Sends up to 10 trace ids, retrying failed entries.
async fn send_with_retries(
    queue: &dyn QueueSender,
    trace_ids: Vec<String>,
    attempts: u32,
) -> SendResult {
    let mut pending: Vec<(String, String)> = trace_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| (format!("e{i}"), id))
        .collect();
    let mut sent = Vec::new();
    let mut retries = 0u64;
    let mut last_error: Vec<(String, String)> = Vec::new();
    for attempt in 1..=attempts {
        let messages: Vec<OutgoingMessage> = pending
            .iter()
            .map(|(entry, id)| OutgoingMessage {
                id: entry.clone(),
                body: MeterMessage {
                    trace_id: id.clone(),
                }
                .to_body(),
            })
            .collect();
        let failures = match queue.send_batch(&messages).await {
            Ok(failures) => failures
                .into_iter()
                .map(|f| {
                    (
                        f.id,
                        format!(
                            "{}: {}{}",
                            f.code,
                            f.message,
                            if f.sender_fault {
                                " (sender fault)"
                            } else {
                                ""
                            }
                        ),
                    )
                })
                .collect::<Vec<_>>(),
            Err(e) => pending
                .iter()
                .map(|(entry, _)| (entry.clone(), e.to_string()))
                .collect(),
        };
        let failed_entries: HashSet<&str> = failures.iter().map(|(e, _)| e.as_str()).collect();
        let (ok, still): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(entry, _)| !failed_entries.contains(entry.as_str()));
        sent.extend(ok.into_iter().map(|(_, id)| id));
        last_error = still
            .iter()
            .map(|(entry, id)| {
                let why = failures
                    .iter()
                    .find(|(e, _)| e == entry)
                    .map(|(_, w)| w.clone())
                    .unwrap_or_default();
                (id.clone(), why)
            })
            .collect();
        pending = still;
        if pending.is_empty() {
            break;
        }
        if attempt < attempts {
            retries += pending.len() as u64;
            warn!(
                entries = pending.len(),
                attempt,
                first_error = %last_error.first().map(|(_, w)| w.as_str()).unwrap_or(""),
                "SendMessageBatch entries failed; retrying them"
            );
            tokio::time::sleep(Duration::from_millis(100u64 << attempt.min(6))).await;
        }
    }
    let failed = if pending.is_empty() {
        Vec::new()
    } else {
        last_error
    };
    (sent, failed, retries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = Recent::new(2);
        r.insert("a");
        r.insert("b");
        r.insert("a");
        assert!(r.contains("a") && r.contains("b"));
        r.insert("c");
        assert!(!r.contains("a"), "oldest forgotten");
        assert!(r.contains("b") && r.contains("c"));
        assert_eq!(r.order.len(), 2);
    }
}
