//! Langfuse, either API generation: reading traces' usage, listing usage in time ranges.

use crate::domain::ingest::Direction;
use crate::domain::returns::Returns;
use crate::domain::scan::{PageOutcome, Walk};
use crate::domain::usage::TraceUsage;
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Instant;

/// A batch read's answer: each trace Langfuse knows, with its usage or the error that
/// concerns that trace alone. A trace Langfuse does not know is absent.
pub type UsageByTrace = HashMap<String, Result<TraceUsage>>;

/// Per-trace reads the default [`UsageSource::traces_usage`] runs at once.
const PER_TRACE_CONCURRENCY: usize = 8;

/// Reads usage from Langfuse (either API generation).
#[async_trait]
pub trait UsageSource: Send + Sync {
    /// The trace's usage, or `None` when Langfuse does not know the trace.
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>>;

    /// The usage of several traces with as few requests as the API allows. An `Err` concerns
    /// them all (nothing was read). By default one [`trace_usage`](Self::trace_usage) each,
    /// a few at a time (the legacy API has no batch read).
    async fn traces_usage(&self, trace_ids: &[String]) -> Result<UsageByTrace> {
        Ok(per_trace(self, trace_ids).await)
    }

    /// Marks a billed trace in Langfuse (a score with a deterministic id, so it upserts).
    async fn record_billed(&self, trace_id: &str, identifier: &str, credits: u64) -> Result<()>;

    /// Books the return of `n` messages deferred for lack of request budget on the
    /// budget's shared schedule ([`crate::ports::RequestQuota::book_returns`]); `None`
    /// without one (by default).
    async fn book_returns(
        &self,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        n: usize,
        requests_per_message: f64,
    ) -> Result<Option<Returns>> {
        let _ = (earliest, latest, n, requests_per_message);
        Ok(None)
    }
}

/// One [`UsageSource::trace_usage`] per trace, a few at a time; each trace's error is its own.
pub async fn per_trace<S: UsageSource + ?Sized>(source: &S, trace_ids: &[String]) -> UsageByTrace {
    read_each(trace_ids, |id| async move { source.trace_usage(&id).await }).await
}

/// `read` of each trace, a few at a time; each trace's error is its own, a trace read as
/// `None` (Langfuse does not know it) is absent.
pub async fn read_each<F, Fut>(trace_ids: &[String], read: F) -> UsageByTrace
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<TraceUsage>>>,
{
    let answers: Vec<(String, Result<Option<TraceUsage>>)> =
        futures::stream::iter(trace_ids.iter().cloned())
            .map(|id| {
                let answer = read(id.clone());
                async move { (id, answer.await) }
            })
            .buffer_unordered(PER_TRACE_CONCURRENCY)
            .collect()
            .await;
    answers
        .into_iter()
        .filter_map(|(id, answer)| answer.transpose().map(|a| (id, a)))
        .collect()
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
