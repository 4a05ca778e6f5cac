//! [`MemoryMeter`]: Stripe meter events in memory, with Stripe's identifier dedup.
//!
//! - v1 (`POST /v1/billing/meter_events`): one request per event. A repeated identifier
//!   within the dedup window answers [`Delivery::AlreadyRecorded`] and records nothing (after
//!   the window Stripe records it again: billed twice). A rejected customer's event is a
//!   permanent error with the reason the adapter maps Stripe's 4xx answers to.
//! - v2 stream: [`MeterSink::batches`] is true and requests carry up to 100 events. Stripe
//!   validates stream events asynchronously: every event of an accepted request answers
//!   [`Delivery::Recorded`], and a repeated identifier or a rejected customer's event is
//!   dropped and listed in [`MemoryMeter::stream_errors`] (Stripe's later error report), as
//!   the stream adapter cannot tell either from the response.
//!
//! [`MemoryMeter::fail_next`] fails the next requests transiently (nothing recorded).

use super::lock;
use crate::clock::Clock;
use crate::domain::meter::{Delivery, MeterEvent};
use crate::error::{Error, FailureReason, Result};
use crate::ports::MeterSink;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long Stripe remembers an identifier.
pub const DEDUP_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// Events per v2 stream request.
pub const MAX_STREAM_EVENTS: usize = 100;

/// Which Stripe API the meter plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeMode {
    /// One event per request.
    V1,
    /// The v2 meter event stream.
    V2Stream,
}

/// Stripe's meter events, recorded.
pub struct MemoryMeter {
    clock: Arc<dyn Clock>,
    mode: StripeMode,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<MeterEvent>,
    first_seen: HashMap<String, DateTime<Utc>>,
    requests: Vec<usize>,
    rejected: BTreeSet<String>,
    refused: BTreeSet<String>,
    failures: Vec<Option<Duration>>,
    stream_errors: Vec<String>,
}

impl std::fmt::Debug for MemoryMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryMeter")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl MemoryMeter {
    /// A meter in `mode`, its dedup window measured on `clock`.
    pub fn new(clock: Arc<dyn Clock>, mode: StripeMode) -> MemoryMeter {
        MemoryMeter {
            clock,
            mode,
            state: Mutex::default(),
        }
    }

    /// Rejects every later event of `customer` for good (v1: a 400; v2: dropped).
    pub fn reject_customer(&self, customer: &str) {
        lock(&self.state).rejected.insert(customer.to_string());
    }

    /// v2: Stripe answers 400 to any stream request holding an event of `customer` (its
    /// synchronous validation refuses the whole request; nothing of it is recorded).
    pub fn refuse_streams_with(&self, customer: &str) {
        lock(&self.state).refused.insert(customer.to_string());
    }

    /// Fails the next `n` requests transiently (Stripe's 500), recording nothing.
    pub fn fail_next(&self, n: usize) {
        lock(&self.state)
            .failures
            .extend(std::iter::repeat_n(None, n));
    }

    /// Fails the next `n` requests with a 429 that asks to wait `retry_after`.
    pub fn throttle_next(&self, n: usize, retry_after: Duration) {
        lock(&self.state)
            .failures
            .extend(std::iter::repeat_n(Some(retry_after), n));
    }

    /// The events recorded (billed), in order.
    pub fn events(&self) -> Vec<MeterEvent> {
        lock(&self.state).events.clone()
    }

    /// Credits billed per customer.
    pub fn totals_by_customer(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for e in &lock(&self.state).events {
            *out.entry(e.customer_id.clone()).or_default() += e.value;
        }
        out
    }

    /// The number of events of each request, in order (v1: all 1).
    pub fn requests(&self) -> Vec<usize> {
        lock(&self.state).requests.clone()
    }

    /// v2: the events Stripe dropped after accepting their request, with why.
    pub fn stream_errors(&self) -> Vec<String> {
        lock(&self.state).stream_errors.clone()
    }
}

impl State {
    /// Counts a request; the injected failure it meets, if any.
    fn request(&mut self, events: usize, what: &str) -> Option<Error> {
        self.requests.push(events);
        if self.failures.is_empty() {
            return None;
        }
        Some(match self.failures.remove(0) {
            None => Error::transient("stripe", format!("{what}: 500 api_error: injected failure")),
            Some(after) => Error::Transient {
                service: "stripe",
                detail: format!("{what}: 429 rate_limit: injected throttle"),
                retry_after: Some(after),
            },
        })
    }

    /// Whether Stripe still remembers `identifier` at `now`.
    fn known(&self, identifier: &str, now: DateTime<Utc>) -> bool {
        self.first_seen
            .get(identifier)
            .is_some_and(|at| now - *at < DEDUP_WINDOW)
    }

    fn record(&mut self, event: &MeterEvent, now: DateTime<Utc>) {
        self.first_seen.insert(event.identifier.clone(), now);
        self.events.push(event.clone());
    }

    fn send_v1(&mut self, e: &MeterEvent, now: DateTime<Utc>) -> Result<Delivery> {
        let what = format!("meter event {} for {}", e.identifier, e.customer_id);
        if let Some(err) = self.request(1, &what) {
            return Err(err);
        }
        if self.rejected.contains(&e.customer_id) {
            return Err(Error::permanent(
                FailureReason::StripeRejected,
                format!(
                    "{what}: 400 resource_missing: No such customer: '{}'",
                    e.customer_id
                ),
            ));
        }
        if self.known(&e.identifier, now) {
            return Ok(Delivery::AlreadyRecorded);
        }
        self.record(e, now);
        Ok(Delivery::Recorded)
    }

    fn send_stream(&mut self, chunk: &[MeterEvent], now: DateTime<Utc>) -> Result<Delivery> {
        let what = format!("meter event stream request of {} events", chunk.len());
        if let Some(err) = self.request(chunk.len(), &what) {
            return Err(err);
        }
        if let Some(bad) = chunk.iter().find(|e| self.refused.contains(&e.customer_id)) {
            return Err(Error::permanent(
                FailureReason::StripeRejected,
                format!(
                    "{what}: 400 invalid_request: event {} is invalid",
                    bad.identifier
                ),
            ));
        }
        for e in chunk {
            if self.rejected.contains(&e.customer_id) {
                let problem = format!("{}: no such customer {}", e.identifier, e.customer_id);
                self.stream_errors.push(problem);
            } else if self.known(&e.identifier, now) {
                let problem = format!("an event already exists with identifier {}", e.identifier);
                self.stream_errors.push(problem);
            } else {
                self.record(e, now);
            }
        }
        Ok(Delivery::Recorded)
    }
}

#[async_trait]
impl MeterSink for MemoryMeter {
    async fn send(&self, event: &MeterEvent) -> Result<Delivery> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        match self.mode {
            StripeMode::V1 => state.send_v1(event, now),
            StripeMode::V2Stream => state.send_stream(std::slice::from_ref(event), now),
        }
    }

    fn batches(&self) -> bool {
        self.mode == StripeMode::V2Stream
    }

    async fn send_batch(&self, events: &[MeterEvent]) -> Vec<Result<Delivery>> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        match self.mode {
            StripeMode::V1 => events.iter().map(|e| state.send_v1(e, now)).collect(),
            StripeMode::V2Stream => events
                .chunks(MAX_STREAM_EVENTS)
                .flat_map(|chunk| {
                    let result = state.send_stream(chunk, now);
                    std::iter::repeat_n(result, chunk.len())
                })
                .collect(),
        }
    }
}
