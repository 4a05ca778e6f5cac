//! The ingest Lambda: on each EventBridge schedule tick, lists settled usage from Langfuse and
//! enqueues the trace ids that need metering (docs/ARCHITECTURE.md, "Ingest").
//!
//! - Single flight: a lease item (conditional put with expiry); a run that finds it held
//!   exits at once, saying so ([`lease`]).
//! - Incremental and settled: scans `[min(watermark, end - rescan), end)` with
//!   `end = now - SETTLE_SECONDS`; the position is checkpointed after every page, and a run
//!   that nears its deadline stops there; the next run resumes ([`scan`]).
//! - Cheap: trace ids whose ledger entry already covers the usage seen are skipped
//!   (`BatchGetItem`); the rest go out with `SendMessageBatch`, failed entries retried a
//!   bounded number of times, then reported and the page left unfinished (never lost)
//!   ([`enqueue`]).
//! - Observable: progress lines and one summary line per run ([`summary`]).

pub mod backfill;
pub mod enqueue;
pub mod lease;
pub mod scan;
pub mod summary;

pub use summary::{IngestSummary, RunOutcome};

use chrono::{DateTime, Utc};
use std::time::Instant;
use tracemeter::Error;
use tracemeter::clock::Clock;
use tracemeter::config::IngestConfig;
use tracemeter::ports::{IngestStore, QueueSender, TraceLister};
use tracing::error;

/// How many recently handled trace ids a run remembers, to avoid enqueueing a trace twice
/// when its observations span pages. Bounded, so memory stays flat on any volume.
pub const RECENT_IDS: usize = 5_000;
/// `SendMessageBatch` calls in flight at once.
pub const SEND_CONCURRENCY: usize = 4;
/// The lease outlives the invocation's deadline by this much.
pub const LEASE_GRACE: chrono::Duration = chrono::Duration::seconds(10);

/// Everything the handler needs, built once per cold start.
pub struct Deps<'a> {
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

/// Runs ingest once: take the lease, scan (plan, walk the pages, skip what the ledger
/// covers, send the rest, checkpoint), release the lease, log the summary. `deadline` is the
/// invocation's deadline; the run stops `INGEST_TIME_BUDGET_MARGIN_SECONDS` before it.
pub async fn handle(
    deps: &Deps<'_>,
    event: &serde_json::Value,
    deadline: DateTime<Utc>,
) -> Result<IngestSummary, Error> {
    let started = Instant::now();
    let mut summary = IngestSummary::new(deps.lister.api());
    let Some(lease) = lease::acquire(deps, event, deadline).await? else {
        summary.outcome = RunOutcome::LeaseHeld;
        summary.log();
        return Ok(summary);
    };
    let result = scan::run(deps, deadline, started, &mut summary).await;
    let released = lease.release(deps).await;
    summary.finish(started);
    summary.log();
    if let Err(e) = &result {
        error!(api = summary.api, error = %e, "ingest run failed; the position reached is saved");
    }
    result?;
    released?;
    Ok(summary)
}
