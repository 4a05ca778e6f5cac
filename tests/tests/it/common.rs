//! Helpers shared by the integration tests.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use tracemeter::domain::ledger::LedgerEntry;
use tracemeter::ports::ClaimStore;
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::faults::{Crash, Faults, Step};
use tracemeter_local::harness::TestStack;

/// Now, truncated to milliseconds (Langfuse's precision).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now)
}

/// A trace with one generation: `cost_usd` of model cost over `latency_s` seconds, billed to
/// `customer` through the `stripeCustomerId` metadata key.
pub fn trace(
    id: &str,
    customer: &str,
    cost_usd: f64,
    latency_s: i64,
    at: DateTime<Utc>,
) -> FakeTrace {
    FakeTrace::new(id, at)
        .meta("stripeCustomerId", customer)
        .observation(FakeObservation::generation(
            format!("{id}-gen"),
            id,
            at,
            at + Duration::seconds(latency_s),
            "gpt-4o-mini",
            1200,
            300,
            cost_usd,
        ))
}

/// An SQS event built by hand (for direct concurrent invocations).
pub fn event(bodies: &[(&str, String)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .map(|(id, body)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(id.to_string());
            m.receipt_handle = Some(format!("receipt-{id}"));
            m.body = Some(body.clone());
            m.attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            m.event_source = Some("aws:sqs".into());
            m
        })
        .collect();
    event
}

/// The body of a message for a trace.
pub fn body(trace_id: &str) -> String {
    tracemeter::domain::message::MeterMessage {
        trace_id: trace_id.to_string(),
    }
    .to_body()
}

/// The ledger entry of a trace (must exist).
pub async fn entry(stack: &TestStack, trace_id: &str) -> LedgerEntry {
    stack
        .ledger
        .entry(trace_id)
        .await
        .expect("ledger read")
        .unwrap_or_else(|| panic!("no ledger entry for {trace_id}"))
}

/// Crashes the invocation the first time it reaches `step`.
pub struct CrashOnce {
    step: Step,
    fired: AtomicBool,
}

impl CrashOnce {
    /// At `step`.
    pub fn at(step: Step) -> CrashOnce {
        CrashOnce {
            step,
            fired: AtomicBool::new(false),
        }
    }
}

impl Faults for CrashOnce {
    fn check(&self, step: Step, identifier: &str) -> Result<(), Crash> {
        if step == self.step && !self.fired.swap(true, Ordering::SeqCst) {
            return Err(Crash {
                step,
                identifier: identifier.to_string(),
            });
        }
        Ok(())
    }
}
