//! The ingest Lambda, end to end on the local stack: the real handler, the real DynamoDB and
//! SQS adapters against moto, the Langfuse fake over HTTP (both API generations).

mod day;
mod memory;
mod runs;
mod scans;

use crate::common::{function_binary, now, trace};
use ::ingest::RunOutcome;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use tracemeter::adapters::sqs::SqsSender;
use tracemeter::clock::Clock;
use tracemeter::domain::message::MeterMessage;
use tracemeter::domain::message::{OutgoingMessage, SendFailure};
use tracemeter::ports::{IngestStore, QueueSender};
use tracemeter_local::counting_proxy::CountingProxy;
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::function::{Function, scheduled_event};
use tracemeter_local::harness::{StackOptions, TestStack};

/// Receives (and deletes) every message in the queue; returns the trace ids, with repeats.
async fn drain_ids(stack: &TestStack) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let out = stack
            .sqs
            .receive_message()
            .queue_url(&stack.resources.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(120)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return ids;
        }
        let mut delete = stack
            .sqs
            .delete_message_batch()
            .queue_url(&stack.resources.queue_url);
        for (i, m) in messages.iter().enumerate() {
            let body = m.body().unwrap_or_default();
            ids.push(MeterMessage::parse(body).expect("ingest body").trace_id);
            delete = delete.entries(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(format!("d{i}"))
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .expect("entry"),
            );
        }
        delete.send().await.expect("delete");
    }
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// Wraps a sender: records what was sent, fails chosen trace ids (`flaky`: the first N tries;
/// `broken`: always).
struct Recording<'a> {
    inner: Option<&'a dyn QueueSender>,
    sent: Mutex<HashMap<String, u32>>,
    flaky: Mutex<HashMap<String, u32>>,
    broken: Mutex<HashSet<String>>,
}

impl<'a> Recording<'a> {
    fn new(inner: Option<&'a dyn QueueSender>) -> Recording<'a> {
        Recording {
            inner,
            sent: Mutex::new(HashMap::new()),
            flaky: Mutex::new(HashMap::new()),
            broken: Mutex::new(HashSet::new()),
        }
    }
    fn sent(&self) -> HashMap<String, u32> {
        self.sent.lock().expect("lock").clone()
    }
}

#[async_trait]
impl QueueSender for Recording<'_> {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> tracemeter::Result<Vec<SendFailure>> {
        let mut failures = Vec::new();
        let mut pass = Vec::new();
        for m in messages {
            let id = MeterMessage::parse(&m.body).expect("body").trace_id;
            let fail = self.broken.lock().expect("lock").contains(&id) || {
                let mut flaky = self.flaky.lock().expect("lock");
                match flaky.get_mut(&id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                }
            };
            if fail {
                failures.push(SendFailure {
                    id: m.id.clone(),
                    code: "InternalError".into(),
                    message: "injected".into(),
                    sender_fault: false,
                });
            } else {
                pass.push(m.clone());
            }
        }
        let mut inner_failed = Vec::new();
        if let Some(inner) = self.inner
            && !pass.is_empty()
        {
            inner_failed = inner.send_batch(&pass).await?;
        }
        let mut sent = self.sent.lock().expect("lock");
        for m in &pass {
            if !inner_failed.iter().any(|f| f.id == m.id) {
                let id = MeterMessage::parse(&m.body).expect("body").trace_id;
                *sent.entry(id).or_default() += 1;
            }
        }
        failures.extend(inner_failed);
        Ok(failures)
    }
}

/// A trace with one cheap generation at `at` (ms precision), and for every tenth trace a span
/// starting at the same millisecond (so v2 pages hold several observations of some traces,
/// and a page boundary can split a trace; a window boundary cannot).
fn seeded(id: &str, at: DateTime<Utc>, i: usize) -> FakeTrace {
    let t = FakeTrace::new(id, at).observation(FakeObservation::generation(
        format!("{id}-g1"),
        id,
        at,
        at + Duration::seconds(1),
        "gpt-4o-mini",
        10,
        5,
        0.0001,
    ));
    if i.is_multiple_of(10) {
        t.observation(FakeObservation::span(
            format!("{id}-s2"),
            id,
            at,
            at + Duration::seconds(2),
        ))
    } else {
        t
    }
}

/// Seeds `n` traces evenly over `[from, from + span)`; returns their ids.
fn seed(
    stack: &TestStack,
    prefix: &str,
    n: usize,
    from: DateTime<Utc>,
    span: Duration,
) -> Vec<String> {
    let step = span.num_milliseconds() / n as i64;
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i:05}");
            stack.langfuse.add_trace(seeded(
                &id,
                from + Duration::milliseconds(step * i as i64),
                i,
            ));
            id
        })
        .collect()
}

/// Moves the clock to `real now + offset`.
fn clock_at(stack: &TestStack, offset: Duration) {
    let current = stack.clock.now() - Utc::now();
    stack.clock.advance(offset - current);
}

fn per_1000(requests: u64, traces: usize) -> f64 {
    (requests as f64 * 1000.0 / traces as f64 * 10.0).round() / 10.0
}
