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
//! switch the faults off and check.

use crate::counting_proxy::{AWS_KINDS, CountingProxy};
use crate::drain::{self, Deadline, Drain, Drained};
use crate::fakes::langfuse::{FakeObservation, FakeTrace, LANGFUSE_KINDS};
use crate::fakes::stripe::STRIPE_KINDS;
use crate::faults::{Abort, Chaos, Crash, Faults, NoFaults, PROCESS_KINDS, Step, invoke};
use crate::harness::{StackOptions, TestStack};
use crate::progress;
use crate::stack::Moto;
use crate::summary::{self, Summary, fmt_map};
use crate::workload::{self, Seeded};
use anyhow::{Context, Result};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};
use tracemeter::domain::ledger::LedgerState;

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
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            traces: 300,
            rate: 0.1,
            seed: 42,
            pollers: 4,
            time_limit: Duration::from_secs(900),
        }
    }
}

/// The client timeouts in the run, and how long a `slow` or lost answer takes (past them).
const CLIENT_TIMEOUT_MS: u64 = 1_000;
const SLOW: Duration = Duration::from_millis(1_300);
/// The queue's visibility timeout and each invocation's deadline, in seconds.
const VISIBILITY_SECONDS: i32 = 12;
const INVOCATION_SECONDS: i64 = 10;

/// One checked invariant.
#[derive(Debug, Clone)]
pub struct Invariant {
    /// What it promises.
    pub name: &'static str,
    /// Whether it held.
    pub holds: bool,
    /// Figures, or what broke it.
    pub detail: String,
}

/// The figures of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// Traces seeded, of which settled (enqueued by ingest), still settling, with bad data.
    pub seeded: usize,
    /// Settled traces.
    pub settled: usize,
    /// Traces still settling.
    pub settling: usize,
    /// Traces seeded with bad data.
    pub bad_data: usize,
    /// The fault rate.
    pub rate: f64,
    /// Faults injected, by boundary and kind.
    pub faults: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Calls each boundary saw while its faults were on (invocations for `process`).
    pub calls: BTreeMap<&'static str, u64>,
    /// Ingest runs, and those that returned an error.
    pub ingest_runs: u64,
    /// Ingest runs that failed.
    pub ingest_errors: u64,
    /// Messages enqueued by ingest (duplicates included).
    pub enqueued: u64,
    /// Process invocations.
    pub invocations: u64,
    /// Invocations that died (injected aborts).
    pub aborted: u64,
    /// Messages returned to the queue for a retry (partial batch failures).
    pub retried: u64,
    /// Event source mapping calls (receive, delete) that failed.
    pub esm_errors: u64,
    /// Messages found in the dead-letter queue, over all redrive rounds.
    pub dlq: u64,
    /// Redrive rounds.
    pub redrives: u64,
    /// Final ledger states.
    pub states: BTreeMap<String, u64>,
    /// Permanent failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Credits billed in total (Stripe).
    pub credits: u64,
    /// Log lines scanned for secrets.
    pub log_lines: u64,
    /// The invariants.
    pub invariants: Vec<Invariant>,
    /// Wall time.
    pub seconds: f64,
}

impl ChaosReport {
    /// Adds a drain's figures.
    fn add(&mut self, drained: &Drained) {
        self.invocations += drained.invocations;
        self.aborted += drained.failed_invocations;
        self.retried += drained.retried;
        self.esm_errors += drained.esm_errors;
    }

    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        !self.invariants.is_empty() && self.invariants.iter().all(|i| i.holds)
    }

    /// The printed summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\ntracemeter reliability run: {} traces seeded ({} settled, {} settling, {} with bad data), fault rate {:.0} % per boundary, {:.1} s",
            self.seeded,
            self.settled,
            self.settling,
            self.bad_data,
            self.rate * 100.0,
            self.seconds
        );
        let _ = writeln!(s, "faults injected:");
        for (boundary, kinds) in &self.faults {
            let total: u64 = kinds.values().sum();
            let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let calls = self.calls.get(boundary).copied().unwrap_or(0);
            let share = if calls > 0 {
                100.0 * total as f64 / calls as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "  {boundary:<9} {total:>6} of {calls:>7} calls ({share:>4.1} %)  ({})",
                list.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "retries: {} messages returned to the queue, {} invocations aborted of {}, {} event-source call errors, {} ingest runs ({} failed, {} messages enqueued)",
            self.retried,
            self.aborted,
            self.invocations,
            self.esm_errors,
            self.ingest_runs,
            self.ingest_errors,
            self.enqueued
        );
        let _ = writeln!(
            s,
            "dead-letter queue: {} messages over {} redrive rounds",
            self.dlq, self.redrives
        );
        let _ = writeln!(
            s,
            "ledger: {}; permanent failures: {}; {} credits billed; {} log lines scanned",
            fmt_map(&self.states),
            fmt_map(&self.failures),
            self.credits,
            self.log_lines
        );
        let _ = writeln!(s, "invariants:");
        for i in &self.invariants {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if i.holds { "ok" } else { "FAILED" },
                i.name,
                i.detail
            );
        }
        let _ = writeln!(s, "result: {}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }
}

/// Every boundary's injector.
struct Boundaries {
    langfuse: Arc<Chaos>,
    stripe: Arc<Chaos>,
    aws: Arc<Chaos>,
    process: Arc<Chaos>,
}

impl Boundaries {
    fn new(rate: f64, seed: u64) -> Boundaries {
        Boundaries {
            langfuse: Chaos::new("langfuse", LANGFUSE_KINDS, rate, seed),
            stripe: Chaos::new("stripe", STRIPE_KINDS, rate, seed),
            aws: Chaos::new("aws", AWS_KINDS, rate, seed),
            process: Chaos::new("process", PROCESS_KINDS, rate, seed),
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
// The expected outcome of every trace, from the stored trace and the documented rules only.
// ---------------------------------------------------------------------------------------

/// What a seeded trace must end as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Billed to `customer`: `credits` in total (billed + capped), usage at `at`.
    Bill {
        /// The Stripe customer.
        customer: String,
        /// Whole credits.
        credits: u64,
        /// The usage time (its first observation).
        at: DateTime<Utc>,
    },
    /// A permanent failure with one of these reasons (a trace can have several defects).
    Fail(BTreeSet<&'static str>),
}

/// Documented defaults (README, docs/ARCHITECTURE.md): 1 credit = 0.00004 USD, margin 1, compute
/// 0.05 USD per minute of latency, a trace above 1,000 USD is invalid, Stripe takes usage up
/// to 35 days old, customers from `stripeCustomerId` then `customerId` then the user
/// mapping, `aiCredentialsOwnership=user` means the customer's own model key.
const MAX_TRACE_USD_UNITS: i128 = 1_000 * 100_000_000;

fn served(o: &FakeObservation, key: &str) -> Option<Option<Value>> {
    o.raw
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// An observation's cost in units of 1e-8 USD as served, or None when it is not a valid
/// number (negative or not finite).
fn cost_units(o: &FakeObservation) -> Option<i128> {
    let total = match served(o, "totalCost") {
        Some(v) => v.and_then(|v| v.as_f64()),
        None => o.total_cost,
    };
    let details: BTreeMap<String, f64> = match served(o, "costDetails") {
        Some(v) => v
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        None => o.cost_details.clone(),
    };
    let usd = total
        .or_else(|| details.get("total").copied())
        .unwrap_or_else(|| details.values().sum());
    if !usd.is_finite() || usd < 0.0 {
        return None;
    }
    Some((usd * 1e8).round() as i128)
}

/// The expected outcome of `trace`, given the user mappings, at `now`.
pub fn expect(trace: &FakeTrace, mappings: &BTreeMap<&str, &str>, now: DateTime<Utc>) -> Expect {
    let mut defects = BTreeSet::new();
    let obs = &trace.observations;
    if obs
        .iter()
        .any(|o| served(o, "startTime") == Some(None) || served(o, "id") == Some(None))
    {
        defects.insert("invalid_usage");
    }
    let meta = |key: &str| {
        obs.iter()
            .filter_map(|o| o.metadata.get(key))
            .chain(trace.metadata.get(key))
            .find_map(Value::as_str)
            .map(str::to_owned)
    };
    let mut ai_units: i128 = 0;
    for o in obs {
        match cost_units(o) {
            Some(units) => ai_units += units,
            None => {
                defects.insert("invalid_usage");
            }
        }
    }
    if meta("aiCredentialsOwnership").as_deref() == Some("user") {
        ai_units = 0;
    }
    let at = obs
        .iter()
        .map(|o| o.start_time)
        .min()
        .unwrap_or(trace.timestamp);
    let end = obs
        .iter()
        .map(|o| o.end_time.unwrap_or(o.start_time))
        .max()
        .unwrap_or(at);
    let ms = i128::from((end - at).num_milliseconds().max(0));
    // USD = ai_units / 1e8 + ms / 1,200,000; credits = USD / 0.00004 rounded up
    //     = (ai_units * 48 + ms * 4000) / 192,000 rounded up.
    // In 1e-8 USD: ai_units + ms * 250 / 3 above the maximum (times 3, to stay exact).
    if 3 * ai_units + 250 * ms > 3 * MAX_TRACE_USD_UNITS {
        defects.insert("invalid_usage");
    }
    let numerator = ai_units * 48 + ms * 4_000;
    let credits = u64::try_from((numerator + 191_999) / 192_000).unwrap_or(u64::MAX);
    let customer = meta("stripeCustomerId")
        .or_else(|| meta("customerId"))
        .or_else(|| {
            trace
                .user_id
                .as_deref()
                .and_then(|u| mappings.get(u))
                .map(|c| c.to_string())
        });
    if customer.is_none() {
        defects.insert("unmapped_customer");
    }
    if at < now - ChronoDuration::days(35) {
        defects.insert("usage_too_old");
    }
    match customer {
        Some(customer) if defects.is_empty() => Expect::Bill {
            customer,
            credits,
            at,
        },
        _ => Expect::Fail(defects),
    }
}

/// Expected credits per customer: the sum of their traces, and for a hard limit, per period,
/// at most the limit (the excess is capped).
pub fn expected_totals(
    expectations: &BTreeMap<String, Expect>,
    budgets: &[(String, Option<BudgetPolicy>)],
) -> BTreeMap<String, u64> {
    let policies: BTreeMap<&str, &BudgetPolicy> = budgets
        .iter()
        .filter_map(|(c, p)| p.as_ref().map(|p| (c.as_str(), p)))
        .collect();
    let mut per_period: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in expectations.values() {
        if let Expect::Bill {
            customer,
            credits,
            at,
        } = e
        {
            let period = match policies.get(customer.as_str()) {
                Some(p) => match p.period {
                    tracemeter::domain::budget::Period::Day => at.format("%Y-%m-%d").to_string(),
                    tracemeter::domain::budget::Period::Week => at.format("%G-W%V").to_string(),
                    tracemeter::domain::budget::Period::Month => at.format("%Y-%m").to_string(),
                },
                None => String::new(),
            };
            *per_period.entry((customer.clone(), period)).or_default() += credits;
        }
    }
    let mut totals = BTreeMap::new();
    for ((customer, _), sum) in per_period {
        let billed = match policies.get(customer.as_str()) {
            Some(p) if p.mode == BudgetMode::Hard => sum.min(p.limit.unwrap_or(u64::MAX)),
            _ => sum,
        };
        *totals.entry(customer).or_default() += billed;
    }
    totals
}

/// Traces with data Langfuse should never send, one kind after another: a negative cost,
/// an absurd cost, absurd (and negative) token counts, `null` costs, a missing `startTime`.
pub fn seed_bad_data(stack: &TestStack, n: usize) -> usize {
    let base = Utc::now() - ChronoDuration::hours(2);
    for i in 0..n {
        let id = format!("bad-{i:05}");
        let at = base + ChronoDuration::seconds(i as i64);
        let generation = |cost: f64| {
            FakeObservation::generation(
                format!("{id}-g"),
                &id,
                at,
                at + ChronoDuration::milliseconds(1_500),
                "gpt-4o",
                1_000,
                200,
                cost,
            )
        };
        let observation = match i % 5 {
            0 => generation(-0.25),
            1 => generation(5_000.0),
            2 => generation(0.0042)
                .usage("input", 9_000_000_000_000_000)
                .usage("output", -40),
            3 => generation(0.0042)
                .raw_field("totalCost", Some(Value::Null))
                .raw_field("costDetails", Some(Value::Null)),
            _ => generation(0.0042).raw_field("startTime", None),
        };
        stack.langfuse.add_trace(
            FakeTrace::new(&id, at)
                .name("bad-data")
                .meta("customerId", "cus_initech")
                .observation(observation),
        );
    }
    n
}

// ---------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------

/// Runs the pipeline with faults and checks the invariants.
pub async fn run(options: &ChaosOptions) -> Result<ChaosReport> {
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let boundaries = Boundaries::new(options.rate, options.seed);
    let moto = Moto::try_shared()?;
    let proxy = CountingProxy::start_with(moto.endpoint(), Some(boundaries.aws.clone())).await?;
    let timeout = CLIENT_TIMEOUT_MS.to_string();
    let stack = TestStack::start_with(
        "chaos",
        StackOptions {
            visibility_timeout: Some(VISIBILITY_SECONDS),
            aws_endpoint: Some(proxy.url()),
            ..StackOptions::default()
        }
        .var("LANGFUSE_TIMEOUT_MS", &timeout)
        .var("STRIPE_TIMEOUT_MS", &timeout)
        .var("RETRY_BASE_SECONDS", 1)
        .var("RETRY_MAX_SECONDS", 4)
        .var("LEASE_MARGIN_SECONDS", 2),
    )
    .await?;
    // Seeding is setup, not under test: the AWS faults start after it.
    boundaries.aws.set_rate(0.0);
    let seeded = workload::seed(&stack, options.traces, options.seed).await?;
    let bad_data = seed_bad_data(&stack, options.traces.div_ceil(25));
    boundaries.aws.set_rate(options.rate);
    stack
        .langfuse
        .set_chaos(Some(boundaries.langfuse.clone()), SLOW);
    stack
        .stripe
        .set_chaos(Some(boundaries.stripe.clone()), SLOW);
    let now = Utc::now();
    let mappings: BTreeMap<&str, &str> = workload::USER_MAPPINGS.into_iter().collect();
    // Every trace's expected outcome and usage time; which of them must be billed by the
    // end depends on when the last ingest run's settle cutoff falls (below).
    let all: BTreeMap<String, (DateTime<Utc>, Expect)> = stack
        .langfuse
        .traces()
        .iter()
        .map(|t| {
            let at = t
                .observations
                .iter()
                .map(|o| o.start_time)
                .min()
                .unwrap_or(t.timestamp);
            (t.id.clone(), (at, expect(t, &mappings, now)))
        })
        .collect();
    let mut report = ChaosReport {
        seeded: options.traces + bad_data,
        bad_data,
        rate: options.rate,
        ..ChaosReport::default()
    };
    let ingest = stack.ingest(&[("INGEST_START_LOOKBACK_SECONDS", &(41 * 86_400).to_string())]);
    let drain_all = || drain(&stack, &boundaries.process, options.pollers, deadline);
    // Rounds of: ingest (as the schedule runs it), then drain the queue. Done when a
    // completed ingest run finds nothing new and the queue is empty.
    let mut quiet = false;
    let mut last_ingest = Utc::now();
    while !quiet {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the run did not settle within {:?}",
            options.time_limit
        );
        report.ingest_runs += 1;
        last_ingest = Utc::now();
        let enqueued = match ingest.run_with(&stack, &ingest.sqs, 30).await {
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
        report.add(&drain_all().await?);
        quiet = enqueued == Some(0);
        if enqueued.is_none() {
            // A run that did not complete (lease still held after a lost release, errors):
            // wait for its lease to lapse before the next one.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // The operator's redrive: dead-lettered messages back to the queue, until none is left.
    let direct = aws_sdk_sqs::Client::new(&crate::stack::sdk_config(moto.endpoint()).await);
    loop {
        let moved = redrive(&direct, &stack).await?;
        if moved == 0 {
            break;
        }
        report.dlq += moved;
        report.redrives += 1;
        eprintln!("      redrive {}: {moved} messages", report.redrives);
        report.add(&drain_all().await?);
    }
    for b in boundaries.all() {
        report.faults.insert(b.boundary(), b.counts());
        report.calls.insert(b.boundary(), b.calls());
    }
    boundaries.off();
    let summary = summary::collect(&stack).await?;
    report.states = summary.states.clone();
    report.failures = summary.failures.clone();
    report.credits = stack.stripe.events().iter().map(|e| e.value).sum();
    // Usage older than the last ingest run's cutoff must be billed; younger usage must not
    // be touched yet (traces seeded as "settling" settle during a long run); within 5 s of
    // the cutoff either is right.
    let cutoff = last_ingest - ingest.config.settle;
    let margin = ChronoDuration::seconds(5);
    let touched: BTreeSet<&str> = summary
        .entries
        .iter()
        .map(|e| e.trace_id.as_str())
        .collect();
    let mut expectations = BTreeMap::new();
    let mut settling = BTreeSet::new();
    for (id, (at, expected)) in &all {
        if *at < cutoff - margin || (*at <= cutoff + margin && touched.contains(id.as_str())) {
            expectations.insert(id.clone(), expected.clone());
        } else if *at > cutoff + margin {
            settling.insert(id.clone());
        }
    }
    report.settled = expectations.len();
    report.settling = settling.len();
    report.invariants = check(&stack, &seeded, &expectations, &settling, &summary);
    let scan = crate::logscan::results();
    report.log_lines = scan.lines;
    report.invariants.push(Invariant {
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
    });
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Drains the queue with `pollers` concurrent pollers, each invocation possibly aborted,
/// through the fault-injecting proxy (its errors are counted, not fatal).
async fn drain(
    stack: &TestStack,
    process: &Arc<Chaos>,
    pollers: usize,
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
        invoke_aborting(stack, process, event)
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
    event: SqsEvent,
) -> std::result::Result<SqsBatchResponse, Crash> {
    let abort = Abort::plan(process, event.records.len());
    let faults: &dyn Faults = match &abort {
        Some(a) => a,
        None => &NoFaults,
    };
    let deadline =
        tracemeter::clock::Clock::now(&stack.clock) + ChronoDuration::seconds(INVOCATION_SECONDS);
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
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("r{i}"))
                    .message_body(m.body().unwrap_or_default())
                    .build()
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        sqs.send_message_batch()
            .queue_url(&stack.resources.queue_url)
            .set_entries(Some(entries))
            .send()
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

/// The trace an identifier `tm_<trace>_r<revision>` names.
fn trace_of(identifier: &str) -> Option<&str> {
    identifier
        .strip_prefix("tm_")?
        .rsplit_once("_r")
        .map(|(t, _)| t)
}

/// The invariants, checked against the independently computed expectations.
pub fn check(
    stack: &TestStack,
    seeded: &Seeded,
    expectations: &BTreeMap<String, Expect>,
    settling: &BTreeSet<String>,
    summary: &Summary,
) -> Vec<Invariant> {
    let events = stack.stripe.events();
    let mut stripe_by_trace: BTreeMap<&str, u64> = BTreeMap::new();
    let mut stripe_by_customer: BTreeMap<String, u64> = BTreeMap::new();
    let mut identifiers = BTreeSet::new();
    let mut repeated = Vec::new();
    for e in &events {
        if !identifiers.insert(e.identifier.as_str()) {
            repeated.push(e.identifier.clone());
        }
        *stripe_by_trace
            .entry(trace_of(&e.identifier).unwrap_or("?"))
            .or_default() += e.value;
        *stripe_by_customer.entry(e.customer.clone()).or_default() += e.value;
    }
    check_against(
        expectations,
        &seeded.budgets,
        settling,
        summary,
        &stripe_by_trace,
        &stripe_by_customer,
        &repeated,
    )
}

/// [`check`] on plain figures (what the unit tests feed it).
pub fn check_against(
    expectations: &BTreeMap<String, Expect>,
    budgets: &[(String, Option<BudgetPolicy>)],
    settling: &BTreeSet<String>,
    summary: &Summary,
    stripe_by_trace: &BTreeMap<&str, u64>,
    stripe_by_customer: &BTreeMap<String, u64>,
    repeated_identifiers: &[String],
) -> Vec<Invariant> {
    let mut out = Vec::new();
    let entries: BTreeMap<&str, &tracemeter::domain::ledger::LedgerEntry> = summary
        .entries
        .iter()
        .map(|e| (e.trace_id.as_str(), e))
        .collect();
    let hard: BTreeMap<&str, &BudgetPolicy> = budgets
        .iter()
        .filter_map(|(c, p)| {
            p.as_ref()
                .filter(|p| p.mode == BudgetMode::Hard)
                .map(|p| (c.as_str(), p))
        })
        .collect();

    // 1. Billed exactly once: Stripe's totals per customer are the expected ones.
    let expected = expected_totals(expectations, budgets);
    let mut diffs = Vec::new();
    let customers: BTreeSet<&String> = expected.keys().chain(stripe_by_customer.keys()).collect();
    for c in customers {
        let want = expected.get(c).copied().unwrap_or(0);
        let got = stripe_by_customer.get(c).copied().unwrap_or(0);
        if want != got {
            diffs.push(format!("{c}: Stripe {got}, expected {want}"));
        }
    }
    out.push(Invariant {
        name: "Stripe totals per customer = expected totals",
        holds: diffs.is_empty(),
        detail: if diffs.is_empty() {
            format!(
                "{} customers, {} credits",
                expected.len(),
                expected.values().sum::<u64>()
            )
        } else {
            diffs.join("; ")
        },
    });

    // 2. Per trace: the outcome the rules say, and Stripe got exactly the ledger's credits.
    let mut wrong = Vec::new();
    let (mut billed, mut failed) = (0, 0);
    for (id, want) in expectations {
        let entry = entries.get(id.as_str());
        let sent = stripe_by_trace.get(id.as_str()).copied().unwrap_or(0);
        match (want, entry) {
            (
                Expect::Bill {
                    customer, credits, ..
                },
                Some(e),
            ) => {
                let ok = matches!(e.state, LedgerState::Metered | LedgerState::Capped)
                    && e.customer_id.as_deref() == Some(customer.as_str())
                    && e.total_credits == *credits
                    && e.billed_credits == sent
                    && (hard.contains_key(customer.as_str()) || e.capped_credits == 0);
                if ok {
                    billed += 1;
                } else {
                    wrong.push(format!(
                        "{id}: expected {credits} credits to {customer}, ledger {} {:?} total {} billed {} capped {}, Stripe {sent}",
                        e.state.as_str(),
                        e.customer_id,
                        e.total_credits,
                        e.billed_credits,
                        e.capped_credits
                    ));
                }
            }
            (Expect::Fail(reasons), Some(e)) => {
                let ok = e.state == LedgerState::Failed
                    && e.reason.as_deref().is_some_and(|r| reasons.contains(r))
                    && sent == 0;
                if ok {
                    failed += 1;
                } else {
                    wrong.push(format!(
                        "{id}: expected a failure ({reasons:?}), ledger {} {:?}, Stripe {sent}",
                        e.state.as_str(),
                        e.reason
                    ));
                }
            }
            (_, None) => wrong.push(format!("{id}: no ledger entry (lost), Stripe {sent}")),
        }
    }
    let shown: Vec<String> = wrong.iter().take(10).cloned().collect();
    out.push(Invariant {
        name: "every trace accounted for with its expected outcome",
        holds: wrong.is_empty(),
        detail: if wrong.is_empty() {
            format!("{billed} billed as expected, {failed} permanent failures with their reason")
        } else {
            format!("{} traces wrong: {}", wrong.len(), shown.join("; "))
        },
    });

    // 3. No identifier recorded twice, nothing billed for unknown or settling traces.
    let strays: Vec<&&str> = stripe_by_trace
        .keys()
        .filter(|t| !expectations.contains_key(**t))
        .collect();
    let early: Vec<&String> = settling
        .iter()
        .filter(|t| entries.contains_key(t.as_str()))
        .collect();
    out.push(Invariant {
        name: "no double billing, nothing billed early",
        holds: repeated_identifiers.is_empty() && strays.is_empty() && early.is_empty(),
        detail: format!(
            "{} identifiers recorded twice, {} events for traces not seeded, {} settling traces touched",
            repeated_identifiers.len(),
            strays.len(),
            early.len()
        ),
    });

    // 4. Budget counters = ledger = Stripe, per customer.
    let mismatched: Vec<String> = summary
        .customers
        .iter()
        .filter(|(_, c)| c.ledger_credits != c.budget_used || c.ledger_credits != c.stripe_credits)
        .map(|(n, c)| {
            format!(
                "{n}: ledger {} budget {} Stripe {}",
                c.ledger_credits, c.budget_used, c.stripe_credits
            )
        })
        .collect();
    out.push(Invariant {
        name: "budget counters = ledger = Stripe",
        holds: mismatched.is_empty(),
        detail: if mismatched.is_empty() {
            format!("{} customers", summary.customers.len())
        } else {
            mismatched.join("; ")
        },
    });

    // 5. Hard limits never exceeded.
    let mut over = Vec::new();
    let mut checked = 0;
    for (customer, period, used, _) in &summary.periods {
        if let Some(limit) = hard.get(customer.as_str()).and_then(|p| p.limit) {
            checked += 1;
            if *used > limit {
                over.push(format!("{customer} {period}: {used} > {limit}"));
            }
        }
    }
    out.push(Invariant {
        name: "hard limits never exceeded",
        holds: over.is_empty(),
        detail: if over.is_empty() {
            format!("{checked} hard-limited periods within their limit")
        } else {
            over.join("; ")
        },
    });

    // 6. Nothing left in flight: no claim unresolved, no message queued or dead-lettered.
    let open = summary.states.get("claimed").copied().unwrap_or(0)
        + summary.states.get("ambiguous").copied().unwrap_or(0);
    out.push(Invariant {
        name: "no message lost or left in flight",
        holds: open == 0 && summary.queued == 0 && summary.dlq == 0,
        detail: format!(
            "{open} claims unresolved, {} messages queued, {} in the dead-letter queue",
            summary.queued, summary.dlq
        ),
    });
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tracemeter::domain::budget::Period;
    use tracemeter::domain::ledger::LedgerEntry;

    fn at(h: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 23, h, 0, 0).unwrap()
    }

    fn trace(id: &str, cost: f64, ms: i64) -> FakeTrace {
        FakeTrace::new(id, at(10)).observation(FakeObservation::generation(
            format!("{id}-g"),
            id,
            at(10),
            at(10) + ChronoDuration::milliseconds(ms),
            "gpt-4o",
            100,
            10,
            cost,
        ))
    }

    #[test]
    fn expected_credits_follow_the_documented_formula() {
        let maps = BTreeMap::from([("u-1", "cus_u")]);
        let now = at(12);
        // 0.004 USD + 3 s x 0.05/60 = 0.0065 USD = 162.5 -> 163 credits.
        let t = trace("a", 0.004, 3_000).meta("stripeCustomerId", "cus_a");
        assert_eq!(
            expect(&t, &maps, now),
            Expect::Bill {
                customer: "cus_a".into(),
                credits: 163,
                at: at(10)
            }
        );
        // BYO key: only compute, 3 s = 0.0025 USD = 62.5 -> 63.
        let t = trace("b", 0.004, 3_000)
            .meta("customerId", "cus_b")
            .meta("aiCredentialsOwnership", "user");
        assert!(matches!(
            expect(&t, &maps, now),
            Expect::Bill { credits: 63, .. }
        ));
        // Exact multiple: 0.004 USD, 0 ms = 100 credits, not 101.
        let t = trace("c", 0.004, 0).user("u-1");
        assert_eq!(
            expect(&t, &maps, now),
            Expect::Bill {
                customer: "cus_u".into(),
                credits: 100,
                at: at(10)
            }
        );
        let t = trace("d", 0.004, 0).user("u-unknown");
        assert_eq!(
            expect(&t, &maps, now),
            Expect::Fail(BTreeSet::from(["unmapped_customer"]))
        );
        let t = trace("e", -0.1, 0).meta("customerId", "c");
        assert_eq!(
            expect(&t, &maps, now),
            Expect::Fail(BTreeSet::from(["invalid_usage"]))
        );
        let t = trace("f", 2_000.0, 0).meta("customerId", "c");
        assert_eq!(
            expect(&t, &maps, now),
            Expect::Fail(BTreeSet::from(["invalid_usage"]))
        );
        let t = trace("g", 0.01, 0).meta("customerId", "c");
        let old = at(10) + ChronoDuration::days(36);
        assert_eq!(
            expect(&t, &maps, old),
            Expect::Fail(BTreeSet::from(["usage_too_old"]))
        );
    }

    #[test]
    fn hard_limits_cap_each_period_and_soft_limits_do_not() {
        let bill = |c: &str, credits, h| Expect::Bill {
            customer: c.into(),
            credits,
            at: at(h),
        };
        let ex = BTreeMap::from([
            ("1".to_string(), bill("hard", 70, 1)),
            ("2".to_string(), bill("hard", 70, 2)),
            ("3".to_string(), bill("soft", 70, 1)),
            ("4".to_string(), bill("soft", 70, 2)),
        ]);
        let policy = |mode| {
            Some(BudgetPolicy {
                limit: Some(100),
                period: Period::Month,
                mode,
                thresholds: vec![],
            })
        };
        let budgets = vec![
            ("hard".to_string(), policy(BudgetMode::Hard)),
            ("soft".to_string(), policy(BudgetMode::Soft)),
        ];
        let totals = expected_totals(&ex, &budgets);
        assert_eq!(totals["hard"], 100);
        assert_eq!(totals["soft"], 140);
    }

    fn entry(id: &str, customer: &str, credits: u64) -> LedgerEntry {
        LedgerEntry {
            trace_id: id.into(),
            state: LedgerState::Metered,
            version: 2,
            revision: 1,
            total_credits: credits,
            billed_credits: credits,
            capped_credits: 0,
            customer_id: Some(customer.into()),
            last_observation_at: None,
            pending: None,
            reason: None,
            detail: None,
            receipted: None,
        }
    }

    #[test]
    fn the_checker_catches_double_billing_and_loss() {
        let ex = BTreeMap::from([
            (
                "t1".to_string(),
                Expect::Bill {
                    customer: "c".into(),
                    credits: 10,
                    at: at(1),
                },
            ),
            (
                "t2".to_string(),
                Expect::Bill {
                    customer: "c".into(),
                    credits: 5,
                    at: at(1),
                },
            ),
        ]);
        let mut summary = Summary {
            entries: vec![entry("t1", "c", 10), entry("t2", "c", 5)],
            ..Summary::default()
        };
        let line = summary.customers.entry("c".into()).or_default();
        line.ledger_credits = 15;
        line.budget_used = 15;
        line.stripe_credits = 15;
        let by_trace = BTreeMap::from([("t1", 10), ("t2", 5)]);
        let by_customer = BTreeMap::from([("c".to_string(), 15)]);
        let none = BTreeSet::new();
        let ok = check_against(&ex, &[], &none, &summary, &by_trace, &by_customer, &[]);
        assert!(ok.iter().all(|i| i.holds), "{ok:?}");

        // t1 billed twice under two identifiers: totals and the per-trace check fail.
        let twice = BTreeMap::from([("t1", 20), ("t2", 5)]);
        let twice_c = BTreeMap::from([("c".to_string(), 25)]);
        let r = check_against(&ex, &[], &none, &summary, &twice, &twice_c, &[]);
        assert!(!r[0].holds && !r[1].holds, "{r:?}");

        // t2 lost: no ledger entry, nothing sent.
        summary.entries.pop();
        let lost = BTreeMap::from([("t1", 10)]);
        let lost_c = BTreeMap::from([("c".to_string(), 10)]);
        let r = check_against(&ex, &[], &none, &summary, &lost, &lost_c, &[]);
        assert!(!r[0].holds && !r[1].holds, "{r:?}");
        assert!(r[1].detail.contains("t2"), "{}", r[1].detail);

        // A message left in the dead-letter queue.
        summary.dlq = 1;
        let r = check_against(&ex, &[], &none, &summary, &lost, &lost_c, &[]);
        assert!(!r[5].holds);
    }

    #[test]
    fn identifiers_name_their_trace() {
        assert_eq!(trace_of("tm_tr-000001_r1"), Some("tr-000001"));
        assert_eq!(trace_of("tm_a_r_b_r2"), Some("a_r_b"));
        assert_eq!(trace_of("other"), None);
    }
}
