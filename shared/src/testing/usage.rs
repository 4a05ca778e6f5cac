//! [`MemoryUsage`]: Langfuse's trace usage from a map.

use super::lock;
use crate::domain::usage::TraceUsage;
use crate::error::Result;
use crate::ports::UsageSource;
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

    /// How many times this trace's usage was read.
    pub fn calls_for(&self, trace_id: &str) -> usize {
        lock(&self.state).calls.get(trace_id).copied().unwrap_or(0)
    }

    /// The `record_billed` calls, in order.
    pub fn billed(&self) -> Vec<BilledMark> {
        lock(&self.state).billed.clone()
    }
}

#[async_trait]
impl UsageSource for MemoryUsage {
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        let mut state = lock(&self.state);
        *state.calls.entry(trace_id.to_string()).or_default() += 1;
        Ok(state.traces.get(trace_id).cloned())
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
