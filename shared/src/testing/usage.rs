//! [`MemoryUsage`]: Langfuse's trace usage from a map, counting requests as Langfuse would
//! (one per trace read, one per batch read of up to [`MemoryUsage::batch_limit`] traces).

use super::lock;
use crate::domain::usage::TraceUsage;
use crate::error::Result;
use crate::ports::{UsageByTrace, UsageSource};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A `record_billed` call: the score Langfuse would get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledMark {
    /// The trace.
    pub trace_id: String,
    /// The identifier of the revision billed.
    pub identifier: String,
    /// The trace's total credits.
    pub credits: u64,
}

/// Trace usage by trace id; an unknown trace is `Ok(None)` (Langfuse's 404).
#[derive(Debug, Default)]
pub struct MemoryUsage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    traces: BTreeMap<String, TraceUsage>,
    calls: BTreeMap<String, usize>,
    requests: usize,
    batch_limit: Option<usize>,
    latency: std::time::Duration,
    billed: Vec<BilledMark>,
}

impl MemoryUsage {
    /// No traces.
    pub fn new() -> MemoryUsage {
        MemoryUsage::default()
    }

    /// Adds a trace, or replaces it (late observations, a changed cost).
    pub fn put(&self, usage: TraceUsage) {
        lock(&self.state)
            .traces
            .insert(usage.trace_id.clone(), usage);
    }

    /// Forgets a trace.
    pub fn remove(&self, trace_id: &str) {
        lock(&self.state).traces.remove(trace_id);
    }

    /// How many times any trace's usage was read.
    pub fn calls(&self) -> usize {
        lock(&self.state).calls.values().sum()
    }

    /// How many requests Langfuse would have answered (per-trace reads and batch chunks).
    pub fn requests(&self) -> usize {
        lock(&self.state).requests
    }

    /// Traces per batch request (Langfuse's URL length cap); unlimited by default.
    pub fn batch_limit(&self, traces: usize) {
        lock(&self.state).batch_limit = Some(traces.max(1));
    }

    /// Every read takes this long (a slow Langfuse).
    pub fn set_latency(&self, latency: std::time::Duration) {
        lock(&self.state).latency = latency;
    }

    /// How many times this trace's usage was read.
    pub fn calls_for(&self, trace_id: &str) -> usize {
        lock(&self.state).calls.get(trace_id).copied().unwrap_or(0)
    }

    /// A batch read: one request per `batch_limit` traces.
    fn read_batch(&self, trace_ids: &[String]) -> (UsageByTrace, std::time::Duration) {
        let mut state = lock(&self.state);
        let per_request = state.batch_limit.unwrap_or(usize::MAX);
        state.requests += trace_ids.len().div_ceil(per_request);
        let mut out = UsageByTrace::new();
        for id in trace_ids {
            *state.calls.entry(id.clone()).or_default() += 1;
            if let Some(usage) = state.traces.get(id) {
                out.insert(id.clone(), Ok(usage.clone()));
            }
        }
        (out, state.latency)
    }

    /// The `record_billed` calls, in order.
    pub fn billed(&self) -> Vec<BilledMark> {
        lock(&self.state).billed.clone()
    }
}

#[async_trait]
impl UsageSource for MemoryUsage {
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        let (answer, latency) = {
            let mut state = lock(&self.state);
            *state.calls.entry(trace_id.to_string()).or_default() += 1;
            state.requests += 1;
            (state.traces.get(trace_id).cloned(), state.latency)
        };
        tokio::time::sleep(latency).await;
        Ok(answer)
    }

    async fn traces_usage(&self, trace_ids: &[String]) -> Result<UsageByTrace> {
        let (answer, latency) = self.read_batch(trace_ids);
        tokio::time::sleep(latency).await;
        Ok(answer)
    }

    async fn record_billed(&self, trace_id: &str, identifier: &str, credits: u64) -> Result<()> {
        lock(&self.state).billed.push(BilledMark {
            trace_id: trace_id.to_string(),
            identifier: identifier.to_string(),
            credits,
        });
        Ok(())
    }
}
