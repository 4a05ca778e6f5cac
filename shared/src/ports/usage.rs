//! Langfuse, either API generation: reading one trace's usage, listing usage in time ranges.

use crate::domain::ingest::Direction;
use crate::domain::scan::{PageOutcome, Walk};
use crate::domain::usage::TraceUsage;
use crate::error::Result;
use async_trait::async_trait;
use std::time::Instant;

/// Reads usage from Langfuse (either API generation).
#[async_trait]
pub trait UsageSource: Send + Sync {
    /// The trace's usage, or `None` when Langfuse does not know the trace.
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>>;

    /// Marks a billed trace in Langfuse (a score with a deterministic id, so it upserts).
    async fn record_billed(&self, trace_id: &str, identifier: &str, credits: u64) -> Result<()>;
}

/// Lists usage from Langfuse in time ranges (either API generation).
#[async_trait]
pub trait TraceLister: Send + Sync {
    /// `v2` or `legacy`: names ingest's items (`INGEST#<api>`).
    fn api(&self) -> &'static str;
    /// The order in which ranges are walked.
    fn direction(&self) -> Direction;
    /// Fetches the next page of `walk` and advances it, making no request (nor wait) that
    /// cannot finish before `until`.
    async fn next_page(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome>;
}
