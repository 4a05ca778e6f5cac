//! Helpers shared by the integration tests.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracemeter::domain::ledger::LedgerEntry;
use tracemeter::ports::ClaimStore;
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::faults::{Crash, Faults, Step};
use tracemeter_local::harness::TestStack;

/// The binary of function `name` (`ingest`, `process`) of this build, built if `cargo test`
/// did not build it.
pub fn function_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    // Always (re)build, with the same feature unification as `cargo test --workspace` (so
    // nothing is recompiled): `cargo test` builds test targets, not the plain binaries, which
    // may be stale. Cargo has released the build lock by the time tests run; this is a no-op
    // when the binaries are current.
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--workspace", "--bins"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the function binaries");
    dir.join(name)
}

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
pub fn event<M: AsRef<str>>(bodies: &[(M, String)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .map(|(id, body)| {
            let id = id.as_ref();
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
/// An SQS event of one message per trace id (message id `m-<trace id>`), in that order.
pub fn event_for<S: AsRef<str>>(trace_ids: &[S]) -> SqsEvent {
    let bodies: Vec<(String, String)> = trace_ids
        .iter()
        .map(|id| (format!("m-{}", id.as_ref()), body(id.as_ref())))
        .collect();
    event(&bodies)
}

pub fn body(trace_id: &str) -> String {
    tracemeter::domain::message::MeterMessage::new(trace_id).to_body()
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

/// The log events the code under test emits on this thread while it lives, as the JSON
/// objects of tracing-subscriber's JSON format (`fields` holds the message and the fields).
/// `#[tokio::test]` runs a test's futures on its own thread, handlers included.
pub struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    /// Starts capturing (info and above).
    pub fn capture() -> Logs {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        Logs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The events so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let bytes = self.lines.lock().expect("log lines").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lines").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
