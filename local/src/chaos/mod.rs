//! The reliability suite (binary `tracemeter-chaos`; `make test` runs a bounded run, `make
//! soak` a long one): the whole pipeline on the local stack with faults injected at every
//! boundary, then invariants checked against totals computed independently of the code
//! under test.
//!
//! Faults, each at a configurable rate (see [`crate::faults::Chaos`]):
//! - Langfuse (fake): 429 with `Retry-After`, 500/502/503, answers slower than the client's
//!   timeout, truncated and malformed JSON ([`LANGFUSE_KINDS`]); and, seeded into the data,
//!   missing and `null` fields, negative and absurd costs, absurd token counts.
//! - Stripe (fake): 429, 500, the response lost after the event was recorded, the
//!   duplicate-identifier 400 ([`STRIPE_KINDS`]).
//! - AWS: a proxy between the SDK and moto answering throttling errors, 500s, and closing
//!   connections before or after moto carried the call out ([`AWS_KINDS`]); the event source
//!   mapping and ingest go through it too.
//! - The process handler: invocations aborted after a claim, after Stripe or after all their
//!   work before answering, as a timeout or crash would ([`PROCESS_KINDS`]).
//!
//! The run: ingest and drain in rounds until an ingest run finds nothing new and the queue
//! is empty, then redrive the dead-letter queue as an operator would until it is empty, then
//! switch the faults off and check; then, a day later by Stripe's clock (past its 24 h
//! identifier window), deliver every settled trace again: nothing may be sent twice.

mod check;
mod expect;
mod replay;
mod report;
#[cfg(test)]
mod tests;

pub use check::{StripeSeen, check, check_against};
pub use expect::{Expect, expect, expect_priced, expected_totals, seed_bad_data};
pub use report::{ChaosReport, Invariant};

use crate::counting_proxy::{AWS_KINDS, CountingProxy};
use crate::drain::{self, Deadline, Drain, Drained};
use crate::fakes::langfuse::LANGFUSE_KINDS;
use crate::fakes::stripe::STRIPE_KINDS;
use crate::faults::{Abort, Chaos, Crash, Faults, NoFaults, PROCESS_KINDS, Step, invoke};
use crate::harness::{IngestRig, StackOptions, TestStack, send_bodies_to};
use crate::progress;
use crate::stack::Moto;
use crate::summary::{self, Summary};
use crate::workload::{self, Seeded};
use anyhow::{Context, Result};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Sample traces seeded (plus 4 % with bad data on top).
    pub traces: usize,
    /// The fault rate at every boundary (0.0–1.0).
    pub rate: f64,
    /// Seed of the workload and of the fault draws.
    pub seed: u64,
    /// Concurrent event-source pollers.
    pub pollers: usize,
    /// The run gives up (and fails) after this long.
    pub time_limit: Duration,
    /// `LANGFUSE_API` of the functions (`v2` or `legacy`).
    pub langfuse_api: String,
    /// `STRIPE_API_MODE` of the functions (`v1` or `v2_stream`).
    pub stripe_mode: String,
    /// `LANGFUSE_REQUESTS_PER_MINUTE` of the functions: the shared request budget (the
    /// template's default, 30, so that its takes meet the AWS faults too), or `unlimited`.
    pub langfuse_requests_per_minute: String,
    /// Each invocation's deadline, in seconds (the queue's visibility timeout is 2 s more):
    /// short, so that lost work comes back quickly; the template's function has 30 s.
    pub invocation_seconds: i64,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            traces: 300,
            rate: 0.1,
            seed: 42,
            pollers: 4,
            time_limit: Duration::from_secs(900),
            langfuse_api: "v2".into(),
            stripe_mode: "v2_stream".into(),
            langfuse_requests_per_minute: "30".into(),
            invocation_seconds: 10,
        }
    }
}

/// The client timeouts in the run, and how long a `slow` or lost answer takes (past them).
const CLIENT_TIMEOUT_MS: u64 = 1_000;
const SLOW: Duration = Duration::from_millis(1_300);
/// The queue's visibility timeout over each invocation's deadline, in seconds.
const VISIBILITY_OVER_INVOCATION_SECONDS: i64 = 2;

/// Every boundary's injector.
struct Boundaries {
    langfuse: Arc<Chaos>,
    stripe: Arc<Chaos>,
    aws: Arc<Chaos>,
    process: Arc<Chaos>,
}

impl Boundaries {
    fn new(rate: f64, seed: u64) -> Boundaries {
        let process = Chaos::new("process", PROCESS_KINDS, rate, seed);
        // At batch 100 a short run has a handful of invocations: a rate alone could abort
        // none of them. The first three abort, wherever the draw lands.
        process.set_minimum(PROCESS_KINDS.len() as u64);
        Boundaries {
            langfuse: Chaos::new("langfuse", LANGFUSE_KINDS, rate, seed),
            stripe: Chaos::new("stripe", STRIPE_KINDS, rate, seed),
            aws: Chaos::new("aws", AWS_KINDS, rate, seed),
            process,
        }
    }

    fn all(&self) -> [&Arc<Chaos>; 4] {
        [&self.langfuse, &self.stripe, &self.aws, &self.process]
    }

    fn off(&self) {
        for c in self.all() {
            c.set_rate(0.0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------

/// Runs the pipeline with faults and checks the invariants.
pub async fn run(options: &ChaosOptions) -> Result<ChaosReport> {
    let started = Instant::now();
    let mut run = ChaosRun::start(options, started + options.time_limit).await?;
    let (seeded, all) = run.seed().await?;
    let mut report = ChaosReport {
        seeded: options.traces + run.bad_data,
        bad_data: run.bad_data,
        rate: options.rate,
        ..ChaosReport::default()
    };
    let last_ingest = run.ingest_and_drain(&mut report).await?;
    run.redrive_all(&mut report).await?;
    for b in run.boundaries.all() {
        report.faults.insert(b.boundary(), b.counts());
        report.calls.insert(b.boundary(), b.calls());
    }
    run.boundaries.off();
    let summary = summary::collect(&run.stack).await?;
    report.states = summary.states.clone();
    report.failures = summary.failures.clone();
    report.credits = run.stack.stripe.events().iter().map(|e| e.value).sum();
    let cutoff = last_ingest - run.ingest.config.settle;
    let (expectations, settling) = due(&all, cutoff, &summary);
    report.settled = expectations.len();
    report.settling = settling.len();
    report.invariants = check(&run.stack, &seeded, &expectations, &settling, &summary);
    let settled: Vec<&str> = expectations.keys().map(String::as_str).collect();
    let later = replay::a_day_later(&run, &settled, &mut report).await?;
    report.invariants.push(later);
    let secrets = secrets_never_logged(&mut report);
    report.invariants.push(secrets);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A reliability run's stack: moto behind the fault-injecting proxy, the fakes with their
/// faults, the ingest function's adapters.
struct ChaosRun<'a> {
    options: &'a ChaosOptions,
    deadline: Instant,
    boundaries: Boundaries,
    moto: &'static Moto,
    _proxy: CountingProxy,
    stack: TestStack,
    ingest: IngestRig,
    bad_data: usize,
}

impl<'a> ChaosRun<'a> {
    async fn start(options: &'a ChaosOptions, deadline: Instant) -> Result<ChaosRun<'a>> {
        let boundaries = Boundaries::new(options.rate, options.seed);
        let moto = Moto::try_shared()?;
        let proxy =
            CountingProxy::start_with(moto.endpoint(), Some(boundaries.aws.clone())).await?;
        let timeout = CLIENT_TIMEOUT_MS.to_string();
        let stack = TestStack::start_with(
            "chaos",
            StackOptions {
                visibility_timeout: Some(
                    i32::try_from(options.invocation_seconds + VISIBILITY_OVER_INVOCATION_SECONDS)
                        .context("CHAOS_INVOCATION_SECONDS")?,
                ),
                aws_endpoint: Some(proxy.url()),
                ..StackOptions::default()
            }
            .var("LANGFUSE_TIMEOUT_MS", &timeout)
            .var("STRIPE_TIMEOUT_MS", &timeout)
            .var("RETRY_BASE_SECONDS", 1)
            .var("RETRY_MAX_SECONDS", 4)
            .var("LEASE_MARGIN_SECONDS", 2)
            .var("LANGFUSE_API", &options.langfuse_api)
            .var("STRIPE_API_MODE", &options.stripe_mode)
            .var(
                "LANGFUSE_REQUESTS_PER_MINUTE",
                &options.langfuse_requests_per_minute,
            ),
        )
        .await?;
        let ingest = stack.ingest(&[("INGEST_START_LOOKBACK_SECONDS", &(41 * 86_400).to_string())]);
        Ok(ChaosRun {
            options,
            deadline,
            boundaries,
            moto,
            _proxy: proxy,
            stack,
            ingest,
            bad_data: 0,
        })
    }

    /// Seeds the workload and the bad data (setup, not under test: the AWS faults start
    /// after it), switches the fakes' faults on; returns every trace's usage time and
    /// expected outcome.
    async fn seed(&mut self) -> Result<(Seeded, BTreeMap<String, (DateTime<Utc>, Expect)>)> {
        self.boundaries.aws.set_rate(0.0);
        let seeded = workload::seed(&self.stack, self.options.traces, self.options.seed).await?;
        // A price change in the middle of the usage: the default margin doubles.
        let change = crate::prices::doubled_margin(&self.stack, Utc::now()).await?;
        self.bad_data = seed_bad_data(&self.stack, self.options.traces.div_ceil(25));
        self.boundaries.aws.set_rate(self.options.rate);
        let b = &self.boundaries;
        self.stack
            .langfuse
            .set_chaos(Some(b.langfuse.clone()), SLOW);
        self.stack.stripe.set_chaos(Some(b.stripe.clone()), SLOW);
        let now = Utc::now();
        let mappings: BTreeMap<&str, &str> = workload::USER_MAPPINGS.into_iter().collect();
        let all = self
            .stack
            .langfuse
            .traces()
            .iter()
            .map(|t| {
                let at = t.observations.iter().map(|o| o.start_time).min();
                let at = at.unwrap_or(t.timestamp);
                (
                    t.id.clone(),
                    (at, expect_priced(t, &mappings, now, Some(change))),
                )
            })
            .collect();
        Ok((seeded, all))
    }

    async fn drain(&self) -> Result<Drained> {
        let b = &self.boundaries;
        let seconds = self.options.invocation_seconds;
        drain(
            &self.stack,
            &b.process,
            self.options.pollers,
            seconds,
            self.deadline,
        )
        .await
    }

    /// Rounds of: ingest (as the schedule runs it), then drain the queue. Done when a
    /// completed ingest run finds nothing new and the queue is empty. Returns when the last
    /// ingest run started.
    async fn ingest_and_drain(&self, report: &mut ChaosReport) -> Result<DateTime<Utc>> {
        loop {
            anyhow::ensure!(
                Instant::now() < self.deadline,
                "the run did not settle within {:?}",
                self.options.time_limit
            );
            report.ingest_runs += 1;
            let last_ingest = Utc::now();
            let enqueued = match self
                .ingest
                .run_with(&self.stack, &self.ingest.sqs, 30)
                .await
            {
                Ok(summary) => {
                    report.enqueued += summary.enqueued;
                    eprintln!(
                        "      ingest run {}: {:?}, {} enqueued",
                        report.ingest_runs, summary.outcome, summary.enqueued
                    );
                    (summary.outcome == ingest::RunOutcome::Completed).then_some(summary.enqueued)
                }
                Err(e) => {
                    report.ingest_errors += 1;
                    eprintln!("      ingest run {} failed: {e}", report.ingest_runs);
                    None
                }
            };
            report.add(&self.drain().await?);
            match enqueued {
                Some(0) => return Ok(last_ingest),
                Some(_) => {}
                // A run that did not complete (lease still held after a lost release,
                // errors): wait for its lease to lapse before the next one.
                None => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }

    /// The operator's redrive: dead-lettered messages back to the queue, until none is left.
    async fn redrive_all(&self, report: &mut ChaosReport) -> Result<()> {
        let direct =
            aws_sdk_sqs::Client::new(&crate::stack::sdk_config(self.moto.endpoint()).await);
        loop {
            let moved = redrive(&direct, &self.stack).await?;
            if moved == 0 {
                return Ok(());
            }
            report.dlq += moved;
            report.redrives += 1;
            eprintln!("      redrive {}: {moved} messages", report.redrives);
            report.add(&self.drain().await?);
        }
    }
}

/// Which traces must be billed by the end, and which are still settling: every trace is in
/// exactly one of the two. Usage older than the last ingest run's `cutoff` must be billed;
/// younger usage must not be touched yet (traces seeded as "settling" settle during a long
/// run); within 5 s of the cutoff either is right, so a trace there is expected when it has
/// a ledger entry and settling (it must stay untouched, nothing sent) when it has none.
fn due(
    all: &BTreeMap<String, (DateTime<Utc>, Expect)>,
    cutoff: DateTime<Utc>,
    summary: &Summary,
) -> (BTreeMap<String, Expect>, BTreeSet<String>) {
    let margin = ChronoDuration::seconds(5);
    let touched: BTreeSet<&str> = summary
        .entries
        .iter()
        .map(|e| e.trace_id.as_str())
        .collect();
    let mut expectations = BTreeMap::new();
    let mut settling = BTreeSet::new();
    for (id, (at, expected)) in all {
        if *at < cutoff - margin || (*at <= cutoff + margin && touched.contains(id.as_str())) {
            expectations.insert(id.clone(), expected.clone());
        } else {
            settling.insert(id.clone());
        }
    }
    (expectations, settling)
}

/// The invariant that no log line held a secret (and that lines were scanned at all).
fn secrets_never_logged(report: &mut ChaosReport) -> Invariant {
    let scan = crate::logscan::results();
    report.log_lines = scan.lines;
    Invariant {
        name: "secrets never logged",
        holds: scan.lines > 0 && scan.leaks.is_empty(),
        detail: if scan.leaks.is_empty() {
            format!(
                "{} log lines ({} bytes) scanned for the Langfuse and Stripe secret keys and the Basic credentials",
                scan.lines, scan.bytes
            )
        } else {
            scan.leaks.join("; ")
        },
    }
}

/// Drains the queue with `pollers` concurrent pollers, each invocation possibly aborted,
/// through the fault-injecting proxy (its errors are counted, not fatal).
async fn drain(
    stack: &TestStack,
    process: &Arc<Chaos>,
    pollers: usize,
    invocation_seconds: i64,
    deadline: Instant,
) -> Result<Drained> {
    let options = Drain {
        pollers,
        deadline: Some(Deadline::Fail(deadline)),
        quiet_checks: 2,
        tolerate_errors: true,
        progress: Some(progress::counter("messages done")),
        ..Drain::default()
    };
    let drained = drain::drain(&stack.esm, &options, |_, event| {
        invoke_aborting(stack, process, invocation_seconds, event)
    })
    .await;
    if let Some(bar) = &options.progress {
        bar.finish_and_clear();
    }
    drained
}

/// Invokes the real handler on `event`; the process boundary may abort it at a step check or,
/// its work done, before it answers (a timeout at the very end: the whole batch comes back).
async fn invoke_aborting(
    stack: &TestStack,
    process: &Arc<Chaos>,
    invocation_seconds: i64,
    event: SqsEvent,
) -> std::result::Result<SqsBatchResponse, Crash> {
    let abort = Abort::plan(process, event.records.len());
    let faults: &dyn Faults = match &abort {
        Some(a) => a,
        None => &NoFaults,
    };
    let deadline =
        tracemeter::clock::Clock::now(&stack.clock) + ChronoDuration::seconds(invocation_seconds);
    let result = invoke(&stack.deps(), faults, event, deadline).await;
    if result.is_ok() && abort.as_ref().is_some_and(|a| a.before_response()) {
        return Err(Crash {
            step: Step::AfterStripe,
            identifier: "(before the response)".to_string(),
        });
    }
    result
}

/// Moves every dead-lettered message back to the queue (what `StartMessageMoveTask` does).
async fn redrive(sqs: &aws_sdk_sqs::Client, stack: &TestStack) -> Result<u64> {
    let mut moved = 0;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&stack.resources.dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .context("ReceiveMessage (DLQ)")?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            let (visible, in_flight) = stack.esm.depth(&stack.resources.dlq_url).await?;
            if visible + in_flight == 0 {
                return Ok(moved);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let bodies: Vec<String> = messages
            .iter()
            .map(|m| m.body().unwrap_or_default().to_string())
            .collect();
        send_bodies_to(sqs, &stack.resources.queue_url, &bodies)
            .await
            .context("SendMessageBatch (redrive)")?;
        for m in &messages {
            sqs.delete_message()
                .queue_url(&stack.resources.dlq_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .context("DeleteMessage (DLQ)")?;
        }
        moved += messages.len() as u64;
    }
}
