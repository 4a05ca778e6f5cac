//! Single flight: one run at a time holds the lease of its API generation.

use crate::{Deps, LEASE_GRACE};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use tracemeter::Error;
use tracing::info;

/// Runs started by this process, so that two owners never match even when the clock stands
/// still (a test clock).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    api: &'static str,
    owner: String,
}

/// Takes the lease until `deadline` + [`LEASE_GRACE`]; `None` (and a log line) when another
/// run holds it. The owner names the event, the process and the time on the run's clock.
pub async fn acquire(
    deps: &Deps<'_>,
    event: &serde_json::Value,
    deadline: DateTime<Utc>,
) -> Result<Option<Lease>, Error> {
    let api = deps.lister.api();
    let event_id = event.get("id").and_then(|v| v.as_str()).unwrap_or("manual");
    let now = deps.clock.now();
    let owner = format!(
        "{event_id}/{}/{}/{}",
        std::process::id(),
        now.timestamp_nanos_opt().unwrap_or_default(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    if deps
        .store
        .acquire_lease(api, &owner, now, deadline + LEASE_GRACE)
        .await?
    {
        return Ok(Some(Lease { api, owner }));
    }
    info!(
        api,
        event_id, "another ingest run holds the lease; exiting without work"
    );
    Ok(None)
}

impl Lease {
    /// Releases the lease if this run still holds it.
    pub async fn release(self, deps: &Deps<'_>) -> Result<(), Error> {
        deps.store.release_lease(self.api, &self.owner).await
    }
}
