//! The ingest Lambda, end to end on the local stack: the real handler, the real DynamoDB and
//! SQS adapters against moto, the Langfuse fake over HTTP (both API generations).

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

#[tokio::test]
async fn v2_10k_traces_over_several_windows_are_each_enqueued_exactly_once() {
    let stack = TestStack::start("ing10k").await.expect("stack");
    let base = now();
    let ids = seed(
        &stack,
        "t",
        10_000,
        base - Duration::hours(4),
        Duration::minutes(216),
    );
    let ing = stack.ingest(&[
        ("RESCAN_SECONDS", "0"),
        ("INGEST_START_LOOKBACK_SECONDS", "18000"),
    ]);
    // Sends are counted by a recording sender (moto's SQS slows down with queue depth, ~40 ms
    // per message at 10k); the real SQS adapter is exercised by the other tests.
    let rec = Recording::new(None);
    let mut requests = 0;
    let mut enqueued = 0;
    // Three scheduled runs, 2.5 h apart in time: three disjoint windows.
    for offset in [
        Duration::minutes(-150),
        Duration::minutes(-60),
        Duration::zero(),
    ] {
        clock_at(&stack, offset);
        let s = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
        assert_eq!(s.outcome, RunOutcome::Completed, "{s:?}");
        assert_eq!(s.send_failed, 0);
        assert!(s.enqueued > 0, "every window holds traces: {s:?}");
        requests += s.requests;
        enqueued += s.enqueued;
    }
    let sent = rec.sent();
    assert_eq!(enqueued, 10_000);
    assert_eq!(sent.len(), 10_000, "every trace enqueued");
    assert!(sent.values().all(|n| *n == 1), "none twice");
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    println!(
        "v2: {requests} Langfuse requests for 10000 traces (11000 observations) = {} per 1000 traces",
        per_1000(requests, 10_000)
    );
}

#[tokio::test]
async fn legacy_keyset_pages_over_several_windows_miss_nothing() {
    let stack = TestStack::start_with(
        "ingleg",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    let base = now();
    let mut ids = seed(
        &stack,
        "l",
        2_500,
        base - Duration::hours(4),
        Duration::minutes(216),
    );
    // 250 traces in one millisecond: more than a page (100) at one timestamp.
    let same = base - Duration::hours(2);
    for i in 0..250 {
        let id = format!("same-{i:03}");
        stack.langfuse.add_trace(seeded(&id, same, 1));
        ids.push(id);
    }
    let ing = stack.ingest(&[
        ("RESCAN_SECONDS", "0"),
        ("INGEST_START_LOOKBACK_SECONDS", "18000"),
    ]);
    let rec = Recording::new(None);
    let mut requests = 0;
    for offset in [
        Duration::minutes(-150),
        Duration::minutes(-60),
        Duration::zero(),
    ] {
        clock_at(&stack, offset);
        let s = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
        assert_eq!(s.outcome, RunOutcome::Completed, "{s:?}");
        assert!(s.enqueued > 0, "every window holds traces: {s:?}");
        requests += s.requests;
    }
    let sent = rec.sent();
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        set(&ids),
        "none missed"
    );
    assert!(sent.values().all(|n| *n == 1), "none twice");
    println!(
        "legacy: {requests} Langfuse requests for {} traces = {} per 1000 traces",
        ids.len(),
        per_1000(requests, ids.len())
    );
}

async fn ledger_skip_and_late_usage(api: &str) {
    let stack = TestStack::start_with(
        &format!("ingskip{api}"),
        StackOptions::default().var("LANGFUSE_API", api),
    )
    .await
    .expect("stack");
    let at = now() - Duration::hours(2);
    let ids: Vec<String> = (0..5).map(|i| format!("bill-{api}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack.langfuse.add_trace(trace(
            id,
            "cus_ing",
            0.01,
            2,
            at + Duration::seconds(i as i64),
        ));
    }
    let ing = stack.ingest(&[]);
    let first = ing.run(&stack).await.expect("ingest run");
    assert_eq!(first.enqueued, 5, "{first:?}");
    // The processor bills them.
    stack.drain(30).await.expect("processed");
    assert_eq!(stack.stripe.events().len(), 5);

    // The re-scan sees them again; the ledger covers them: nothing is enqueued.
    let again = ing.run(&stack).await.expect("ingest run");
    assert_eq!(again.enqueued, 0, "{again:?}");
    assert_eq!(again.skipped_covered, 5, "{again:?}");
    assert!(drain_ids(&stack).await.is_empty());

    // A late observation adds usage to a billed trace: it is enqueued again and its
    // difference billed.
    stack.langfuse.add_observation(FakeObservation::generation(
        format!("{}-late", ids[2]),
        &ids[2],
        at + Duration::seconds(30),
        at + Duration::seconds(40),
        "gpt-4o-mini",
        100,
        100,
        0.004,
    ));
    let late = ing.run(&stack).await.expect("ingest run");
    assert_eq!(late.enqueued, 1, "{late:?}");
    assert_eq!(late.skipped_covered, 4);
    stack.drain(30).await.expect("processed");
    let events = stack.stripe.events();
    assert_eq!(
        events.len(),
        6,
        "the late usage billed once more: {events:?}"
    );
    let last = ing.run(&stack).await.expect("ingest run");
    assert_eq!(last.enqueued, 0, "{last:?}");
}

#[tokio::test]
async fn v2_billed_traces_are_skipped_and_late_usage_enqueued_again() {
    ledger_skip_and_late_usage("v2").await;
}

#[tokio::test]
async fn legacy_billed_traces_are_skipped_and_late_usage_enqueued_again() {
    ledger_skip_and_late_usage("legacy").await;
}

#[tokio::test]
async fn late_ingestion_is_found_by_a_later_run_and_unsettled_traces_wait() {
    let stack = TestStack::start("inglate").await.expect("stack");
    let base = now();
    stack
        .langfuse
        .add_trace(trace("early", "cus_1", 0.01, 1, base - Duration::hours(3)));
    // Still running / not settled (settle is 15 min).
    stack.langfuse.add_trace(trace(
        "fresh",
        "cus_1",
        0.01,
        1,
        base - Duration::minutes(2),
    ));
    let ing = stack.ingest(&[]);
    let first = ing.run(&stack).await.expect("ingest run");
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!(drain_ids(&stack).await, vec!["early".to_string()]);

    // Langfuse ingests, late, a trace whose observations started 2 h ago: before the
    // watermark, within the re-scan.
    stack.langfuse.add_trace(trace(
        "late-arrival",
        "cus_1",
        0.01,
        1,
        base - Duration::hours(2),
    ));
    let second = ing.run(&stack).await.expect("ingest run");
    let ids = drain_ids(&stack).await;
    assert!(ids.contains(&"late-arrival".to_string()), "{ids:?}");
    assert!(
        !ids.contains(&"fresh".to_string()),
        "not settled yet: {second:?}"
    );

    // 15 minutes later, it has settled.
    stack.clock.advance(Duration::minutes(15));
    ing.run(&stack).await.expect("ingest run");
    let ids = drain_ids(&stack).await;
    assert!(ids.contains(&"fresh".to_string()), "{ids:?}");
}

#[tokio::test]
async fn two_runs_started_together_one_works_the_other_exits() {
    let stack = TestStack::start("inglease").await.expect("stack");
    let ids = seed(
        &stack,
        "c",
        30,
        now() - Duration::hours(2),
        Duration::minutes(30),
    );
    stack
        .langfuse
        .set_latency(std::time::Duration::from_millis(300));
    let ing = stack.ingest(&[]);
    let (a, b) = tokio::join!(ing.run(&stack), ing.run(&stack));
    let (a, b) = (a.expect("ingest run a"), b.expect("ingest run b"));
    let outcomes = [a.outcome, b.outcome];
    assert!(outcomes.contains(&RunOutcome::Completed), "{a:?} {b:?}");
    assert!(outcomes.contains(&RunOutcome::LeaseHeld), "{a:?} {b:?}");
    let held = if a.outcome == RunOutcome::LeaseHeld {
        &a
    } else {
        &b
    };
    assert_eq!((held.requests, held.enqueued), (0, 0));
    let got = drain_ids(&stack).await;
    assert_eq!(got.len(), 30, "enqueued once, by one run");
    assert_eq!(set(&got), set(&ids));
    // The lease was released: the next run works.
    stack.langfuse.set_latency(std::time::Duration::ZERO);
    let next = ing.run(&stack).await.expect("ingest run");
    assert_ne!(next.outcome, RunOutcome::LeaseHeld);
}

#[tokio::test]
async fn a_lease_put_retried_after_a_lost_answer_is_still_ours() {
    // The SDK retries a put whose answer was lost; moto already stored the lease. The retry
    // must succeed for its owner (found by the reliability suite) and fail for anyone else.
    let stack = TestStack::start("inglease2").await.expect("stack");
    let ing = stack.ingest(&[]);
    let at = stack.clock.now();
    let until = at + Duration::seconds(60);
    let take = |owner: &'static str| ing.store.acquire_lease("v2", owner, at, until);
    assert!(take("run-a").await.expect("first put"));
    assert!(take("run-a").await.expect("retried put"), "its own lease");
    assert!(!take("run-b").await.expect("other run"), "held by run-a");
    ing.store
        .release_lease("v2", "run-a")
        .await
        .expect("release");
    assert!(take("run-b").await.expect("after release"));
}

#[tokio::test]
async fn a_run_cut_off_mid_window_resumes_from_its_checkpoint() {
    let stack = TestStack::start_with(
        "ingcut",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    let ids = seed(
        &stack,
        "r",
        500,
        now() - Duration::hours(3),
        Duration::hours(2),
    );
    let ing = stack.ingest(&[("INGEST_TIME_BUDGET_MARGIN_SECONDS", "1")]);
    stack
        .langfuse
        .set_latency(std::time::Duration::from_millis(400));
    // About 2 s of work: a few pages of the 8.
    let cut = ing.run_with(&stack, &ing.sqs, 3).await.expect("ingest run");
    assert_eq!(cut.outcome, RunOutcome::OutOfTime, "{cut:?}");
    assert!(cut.pages >= 1 && cut.enqueued < 500, "{cut:?}");
    let saved = ing.store.load_cursor("legacy").await.expect("cursor");
    let pending = saved.pending.expect("position saved");
    assert!(pending.position > pending.from, "{saved:?}");
    assert_eq!(
        saved.watermark, None,
        "watermark moves only when the window is done"
    );
    let mut got = drain_ids(&stack).await;

    stack.langfuse.set_latency(std::time::Duration::ZERO);
    let resumed = ing.run(&stack).await.expect("ingest run");
    assert!(resumed.resumed, "{resumed:?}");
    assert_eq!(resumed.outcome, RunOutcome::Completed);
    assert_eq!(resumed.scan_from, Some(pending.from));
    assert!(
        resumed.pages < 6,
        "resumed at the checkpoint, not from the start: {resumed:?}"
    );
    got.extend(drain_ids(&stack).await);
    assert_eq!(set(&got), set(&ids), "none lost across the cut");
    let done = ing.store.load_cursor("legacy").await.expect("cursor");
    assert_eq!(done.pending, None);
    assert_eq!(done.watermark, Some(pending.to));
}

#[tokio::test]
async fn a_429_storm_slows_the_run_without_failing_or_losing_traces() {
    let stack = TestStack::start_with(
        "ing429",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    let ids = seed(
        &stack,
        "q",
        300,
        now() - Duration::hours(3),
        Duration::hours(2),
    );
    // One request per 2 s window; the run needs 4.
    stack
        .langfuse
        .set_rate_limit_window(Some(1), std::time::Duration::from_secs(2));
    let ing = stack.ingest(&[]);
    let s = ing.run(&stack).await.expect("ingest run");
    assert_eq!(s.outcome, RunOutcome::Completed, "{s:?}");
    assert!(s.rate_limited >= 1, "{s:?}");
    assert!(s.waited_ms >= 1000, "{s:?}");
    let got = drain_ids(&stack).await;
    assert_eq!(set(&got), set(&ids));
    let statuses: Vec<u16> = stack.langfuse.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429));
}

#[tokio::test]
async fn the_request_budget_stops_a_run_instead_of_overrunning_its_deadline() {
    let stack = TestStack::start_with(
        "ingbudget",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    seed(
        &stack,
        "b",
        500,
        now() - Duration::hours(3),
        Duration::hours(2),
    );
    let ing = stack.ingest(&[("LANGFUSE_REQUESTS_PER_MINUTE", "2")]);
    let started = std::time::Instant::now();
    let s = ing
        .run_with(&stack, &ing.sqs, 10)
        .await
        .expect("ingest run");
    assert_eq!(s.outcome, RunOutcome::OutOfTime, "{s:?}");
    assert_eq!(s.requests, 2, "no more than the budget: {s:?}");
    assert_eq!(s.rate_limited, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(stack.langfuse.request_count(), 2);
    // Two pages of 100 rows; the keyset re-reads the last timestamp of page 1 and drops it.
    assert_eq!(s.enqueued, 199);
    assert_eq!(drain_ids(&stack).await.len(), 199);
}

#[tokio::test]
async fn sqs_send_failures_are_retried_or_reported_never_lost() {
    let stack = TestStack::start("ingsend").await.expect("stack");
    let ids = seed(
        &stack,
        "s",
        50,
        now() - Duration::hours(2),
        Duration::minutes(30),
    );
    let ing = stack.ingest(&[]);
    let rec = Recording::new(Some(&ing.sqs));
    // Three entries fail twice, then go through; one fails every time.
    for id in &ids[..3] {
        rec.flaky.lock().expect("lock").insert(id.clone(), 2);
    }
    rec.broken.lock().expect("lock").insert(ids[40].clone());
    let first = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
    assert_eq!(first.outcome, RunOutcome::SendFailures, "{first:?}");
    assert_eq!(first.send_failed, 1, "{first:?}");
    assert!(first.send_retries >= 6, "{first:?}");
    assert_eq!(first.enqueued, 49);
    let mut got = drain_ids(&stack).await;
    assert!(!got.contains(&ids[40]));
    for id in &ids[..3] {
        assert!(got.contains(id), "retried and delivered: {id}");
    }
    // The page was not checkpointed past: the next run reads it again and delivers.
    rec.broken.lock().expect("lock").clear();
    let second = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
    assert_eq!(second.outcome, RunOutcome::Completed, "{second:?}");
    got.extend(drain_ids(&stack).await);
    assert_eq!(set(&got), set(&ids), "none lost");

    // A queue that does not exist: every entry fails; reported, the run stops, nothing lost.
    let missing = SqsSender::new(
        stack.sqs.clone(),
        format!("{}-missing", stack.resources.queue_url),
    );
    stack
        .langfuse
        .add_trace(trace("after", "cus_1", 0.01, 1, now() - Duration::hours(1)));
    let ing_fast = stack.ingest(&[("INGEST_SEND_ATTEMPTS", "2")]);
    let broken = ing_fast
        .run_with(&stack, &missing, 60)
        .await
        .expect("ingest run");
    assert_eq!(broken.outcome, RunOutcome::SendFailures, "{broken:?}");
    assert!(broken.send_failed >= 1);
    let fixed = ing_fast.run(&stack).await.expect("ingest run");
    assert_eq!(fixed.outcome, RunOutcome::Completed);
    assert!(drain_ids(&stack).await.contains(&"after".to_string()));
}

/// Runs the real ingest binary of this build once, as Lambda runs it (under the Runtime API
/// emulator), over `n` pending traces; returns its peak RSS (`VmHWM`, KB).
async fn ingest_binary_peak_rss_kb(n: usize) -> u64 {
    let stack = TestStack::start(&format!("ingmem{n}"))
        .await
        .expect("stack");
    seed(
        &stack,
        "m",
        n,
        now() - Duration::hours(5),
        Duration::hours(4),
    );
    // The sends never reach moto (its SQS slows down with the queue's depth): the proxy
    // answers them and counts the messages.
    let proxy = CountingProxy::start_absorbing_sends(&stack.endpoint)
        .await
        .expect("proxy");
    let mut env = stack.env.clone();
    env.insert("AWS_ENDPOINT_URL".into(), proxy.url());
    for (name, value) in [
        ("RESCAN_SECONDS", "0"),
        ("INGEST_START_LOOKBACK_SECONDS", "21600"),
        ("LANGFUSE_REQUESTS_PER_MINUTE", "100000"),
        ("INGEST_TIME_BUDGET_MARGIN_SECONDS", "2"),
    ] {
        env.insert(name.into(), value.into());
    }
    let mut ingest = Function::spawn("ingest", &function_binary("ingest"), &env, 128)
        .await
        .expect("spawn the ingest binary");
    let event = scheduled_event().expect("events/scheduled.json");
    let reply = ingest
        .invoke(event, 1, std::time::Duration::from_secs(300))
        .await
        .expect("the ingest binary answered");
    let (peak_kb, _) = ingest.usage().expect("/proc of the ingest process");
    let sent = proxy
        .counts()
        .get("AmazonSQS.SendMessageBatch")
        .map_or(0, |c| c.messages);
    assert_eq!(reply["outcome"], "completed", "{reply}");
    assert_eq!(reply["enqueued"], n as u64, "{reply}");
    assert_eq!(sent, n as u64, "every trace sent once");
    println!(
        "ingest binary over {n} traces: peak RSS {peak_kb} kB, {} Langfuse requests, {} pages",
        reply["requests"], reply["pages"]
    );
    peak_kb
}

/// How much more the ingest binary's peak RSS may be over 40,000 pending traces than over
/// 1,000. Measured (debug build, this machine): 23.3 MB at 1,000, 25.0 MB at 40,000, +1.8 MB.
/// 6 MB is three times that, for the allocator's noise, and far below what keeping the
/// range's traces would take: 40,000 ids alone are ~3 MB in a set, their observations as
/// parsed rows ~20 MB.
const FLAT_MARGIN_KB: u64 = 6 * 1024;
/// And its peak RSS at most this over 40,000 traces: the benchmark's target for the
/// release bootstrap (40 MB), which the larger debug build also keeps (measured 25.0 MB).
const PEAK_BOUND_KB: u64 = 40 * 1024;

#[tokio::test]
async fn memory_stays_flat_over_40k_traces() {
    let small = ingest_binary_peak_rss_kb(1_000).await;
    let large = ingest_binary_peak_rss_kb(40_000).await;
    assert!(
        large <= small + FLAT_MARGIN_KB,
        "peak RSS grew with the traces: {small} kB at 1,000, {large} kB at 40,000"
    );
    assert!(
        large < PEAK_BOUND_KB,
        "peak RSS {large} kB over 40,000 traces (bound {PEAK_BOUND_KB} kB)"
    );
}
