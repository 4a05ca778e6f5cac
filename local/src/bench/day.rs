//! A simulated day of ingest ticks (the `day` scenario of `make bench`, and its cheap version
//! in the integration tests): the real ingest handler with the real DynamoDB and SQS adapters
//! against moto and the Langfuse fake, the clock moved tick by tick (not real time), traces
//! arriving steadily, some observations appearing late (planted in the fake only when their
//! time comes), and the queue drained by the real process handler after every tick.
//!
//! The day runs in the past (it ends about an hour before the real time), so Stripe's fake
//! accepts every timestamp. Before it, a day and a half of history is seeded, read by a
//! first run and billed (the warm-up, not counted), so the day sees the steady state: the
//! re-scan tiers re-read instants that arrived before the day began.

use super::enqueues::{RecordingSender, beyond_new_usage};
use crate::drain::{self, Drain};
use crate::fakes::langfuse::{FakeObservation, FakeTrace};
use crate::faults::NoFaults;
use crate::harness::{IngestRig, TestStack};
use anyhow::{Result, bail};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracemeter::adapters::ingest_store::DynamoIngestStore;
use tracemeter::adapters::sqs::SqsSender;
use tracemeter::clock::Clock;
use tracemeter::domain::ingest::{LedgerCoverage, covers};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::rescan::worst_detection;
use tracemeter::ports::IngestStore;

/// Ingest runs the warm-up may take to read the history.
const WARM_UP_RUNS: usize = 20;

/// The customer every simulated trace is billed to.
pub const DAY_CUSTOMER: &str = "cus_day";

/// The simulation's settings.
#[derive(Debug, Clone)]
pub struct DayOptions {
    /// Traces arriving per simulated day (evenly spread).
    pub traces_per_day: usize,
    /// Ticks simulated (288 = a day of 5-minute ticks).
    pub ticks: usize,
    /// The schedule's period.
    pub tick: Duration,
    /// One trace in this many (among those whose late observation can be found within the
    /// day) gets a late observation.
    pub late_every: usize,
    /// How late the planted observations appear after their start, cycled.
    pub delays: Vec<Duration>,
    /// One trace in this many has sub-millisecond times (microseconds and nanoseconds, as
    /// OpenTelemetry spans carry), its late observation too.
    pub sub_ms_every: usize,
}

impl Default for DayOptions {
    fn default() -> Self {
        DayOptions {
            traces_per_day: 5_000,
            ticks: 288,
            tick: Duration::minutes(5),
            late_every: 10,
            delays: [10, 40, 180, 720, 1_380]
                .into_iter()
                .map(Duration::minutes)
                .collect(),
            sub_ms_every: 3,
        }
    }
}

/// What the simulated day measured (the warm-up excluded).
#[derive(Debug, Clone, Default)]
pub struct DayFigures {
    /// Traces that arrived during the day.
    pub traces: usize,
    /// Ingest runs, and those that did not complete.
    pub runs: u64,
    /// Runs whose outcome was not `completed`.
    pub incomplete_runs: u64,
    /// Traces found per page, summed over the day's runs (listings).
    pub listings: u64,
    /// Of which in re-scan tier ranges.
    pub rescan_listings: u64,
    /// Re-scan tier ranges read.
    pub rescan_ranges: u64,
    /// Ledger look-ups: keys asked for in `BatchGetItem`.
    pub lookup_keys: u64,
    /// `BatchGetItem` calls (100 keys at most).
    pub lookup_calls: u64,
    /// Langfuse requests of ingest.
    pub langfuse_ingest: u64,
    /// Langfuse requests of the processor.
    pub langfuse_process: u64,
    /// Trace ids enqueued.
    pub enqueued: u64,
    /// Ingest's wall time over the day (in process, against moto).
    pub ingest_busy: std::time::Duration,
    /// The processor's invocations and their wall time.
    pub process_invocations: u64,
    /// Summed wall time of the processor's invocations.
    pub process_busy: std::time::Duration,
    /// Late observations planted (each within `settle + RESCAN_SECONDS`).
    pub late_planted: usize,
    /// Late observations planted, by delay in minutes.
    pub late_by_delay: Vec<(i64, usize)>,
    /// Trace ids whose late observation was not billed by the end of the day.
    pub late_missed: Vec<String>,
    /// Traces with sub-millisecond times (the warm-up's history included).
    pub sub_ms_traces: usize,
    /// Traces enqueued more often than new usage explains (once, plus once per late
    /// observation), warm-up included: a billed trace enqueued again without new usage.
    pub enqueued_again: Vec<String>,
    /// Wall time of the simulation (the warm-up excluded).
    pub wall: std::time::Duration,
}

/// Counts the ledger look-ups of ingest's store (a wrapper around the real adapter).
pub struct CountingStore<S> {
    inner: S,
    keys: AtomicU64,
    calls: AtomicU64,
}

#[async_trait]
impl<S: IngestStore> IngestStore for CountingStore<S> {
    async fn acquire_lease(
        &self,
        api: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> tracemeter::Result<bool> {
        self.inner.acquire_lease(api, owner, now, until).await
    }
    async fn release_lease(&self, api: &str, owner: &str) -> tracemeter::Result<()> {
        self.inner.release_lease(api, owner).await
    }
    async fn load_cursor(
        &self,
        api: &str,
    ) -> tracemeter::Result<tracemeter::domain::ingest::IngestCursor> {
        self.inner.load_cursor(api).await
    }
    async fn save_cursor(
        &self,
        api: &str,
        cursor: &tracemeter::domain::ingest::IngestCursor,
        now: DateTime<Utc>,
    ) -> tracemeter::Result<()> {
        self.inner.save_cursor(api, cursor, now).await
    }
    async fn coverage(
        &self,
        trace_ids: &[String],
    ) -> tracemeter::Result<HashMap<String, LedgerCoverage>> {
        let mut unique: Vec<&String> = trace_ids.iter().collect();
        unique.sort();
        unique.dedup();
        self.keys.fetch_add(unique.len() as u64, Ordering::Relaxed);
        let calls = unique.len().div_ceil(100) as u64;
        self.calls.fetch_add(calls, Ordering::Relaxed);
        self.inner.coverage(trace_ids).await
    }
}

/// A late observation: it appears in the fake at `appears`.
#[derive(Debug, Clone)]
struct Late {
    appears: DateTime<Utc>,
    observation: FakeObservation,
}

/// A simulated day on a stack, after its warm-up.
pub struct Day<'s> {
    stack: &'s TestStack,
    rig: IngestRig,
    sender: RecordingSender<SqsSender>,
    options: DayOptions,
    /// When the day starts (the warm-up tick's time).
    start: DateTime<Utc>,
    arriving: VecDeque<FakeTrace>,
    late: VecDeque<Late>,
    planted: Vec<Late>,
    sub_ms_traces: usize,
}

impl<'s> Day<'s> {
    /// Seeds the history and the day's traces and late observations, and runs the warm-up
    /// tick (a first run over the history, billed). `vars`: the ingest function's variables;
    /// `ingest_dynamo`: ingest's own DynamoDB client (the benchmark counts its calls apart),
    /// else the stack's.
    pub async fn start(
        stack: &'s TestStack,
        options: DayOptions,
        vars: &[(&str, &str)],
        ingest_dynamo: Option<aws_sdk_dynamodb::Client>,
    ) -> Result<Day<'s>> {
        let mut vars = vars.to_vec();
        vars.push(("INGEST_START_LOOKBACK_SECONDS", "172800"));
        let mut rig = stack.ingest(&vars);
        if let Some(client) = ingest_dynamo {
            rig.store = DynamoIngestStore::new(client, &rig.config.table_name);
        }
        let length = options.tick * options.ticks as i32;
        let start =
            tracemeter::domain::ingest::truncate_ms(Utc::now() - length - Duration::hours(1));
        set_clock(stack, start);
        let history = start - rig.config.settle - rig.config.rescan - Duration::hours(1);
        let (traces, late) = plan_traces(&rig, &options, history, start);
        let sub_ms_traces = traces.iter().filter(|t| has_sub_ms(t.timestamp)).count();
        let mut arriving: VecDeque<FakeTrace> = traces.into();
        while arriving.front().is_some_and(|t| t.timestamp < start) {
            if let Some(t) = arriving.pop_front() {
                stack.langfuse.add_trace(t);
            }
        }
        let mut day = Day {
            stack,
            sender: RecordingSender::new(rig.sqs.clone()),
            rig,
            sub_ms_traces,
            options,
            start,
            arriving,
            planted: late.clone(),
            late: late.into(),
        };
        day.plant_due(start);
        // The history may take more than one run's time against moto: later runs resume
        // from the cursor's position, as the schedule's next ticks would.
        for run in 1.. {
            let warm = day.run_ingest(&day.counting()).await?;
            day.process().await?;
            match warm.outcome {
                ingest::RunOutcome::Completed => break,
                _ if run < WARM_UP_RUNS => continue,
                _ => bail!("the warm-up did not complete in {WARM_UP_RUNS} runs: {warm:?}"),
            }
        }
        Ok(day)
    }

    fn counting(&self) -> CountingStore<DynamoIngestStore> {
        CountingStore {
            inner: self.rig.store.clone(),
            keys: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// The ingest function's adapters (its configuration, for the figures).
    pub fn rig(&self) -> &IngestRig {
        &self.rig
    }

    /// Runs the day's ticks; every late observation planted is checked to be billed.
    pub async fn run(mut self) -> Result<DayFigures> {
        let wall = Instant::now();
        let store = self.counting();
        let mut f = DayFigures::default();
        let before = self.stack.langfuse.request_count() as u64;
        for k in 1..=self.options.ticks {
            let now = self.start + self.options.tick * k as i32;
            set_clock(self.stack, now);
            f.traces += self.arrive(now);
            self.plant_due(now);
            let run = Instant::now();
            let s = self.run_ingest(&store).await?;
            f.ingest_busy += run.elapsed();
            f.runs += 1;
            f.incomplete_runs += u64::from(s.outcome != ingest::RunOutcome::Completed);
            f.listings += s.traces_found;
            f.rescan_listings += s.rescan_traces_found;
            f.rescan_ranges += u64::from(s.rescan_ranges);
            f.langfuse_ingest += s.requests;
            f.enqueued += s.enqueued;
            let (invocations, busy) = self.process().await?;
            f.process_invocations += invocations;
            f.process_busy += busy;
        }
        f.langfuse_process =
            self.stack.langfuse.request_count() as u64 - before - f.langfuse_ingest;
        f.lookup_keys = store.keys.load(Ordering::Relaxed);
        f.lookup_calls = store.calls.load(Ordering::Relaxed);
        f.late_planted = self.planted.len();
        f.late_by_delay = by_delay(&self.planted);
        f.late_missed = self.late_missed().await?;
        f.sub_ms_traces = self.sub_ms_traces;
        let mut late: HashMap<String, u32> = HashMap::new();
        for l in &self.planted {
            *late.entry(l.observation.trace_id.clone()).or_default() += 1;
        }
        f.enqueued_again = beyond_new_usage(&self.sender.counts(), &late);
        f.wall = wall.elapsed();
        Ok(f)
    }

    /// Adds the traces that arrived by `now`; how many.
    fn arrive(&mut self, now: DateTime<Utc>) -> usize {
        let mut n = 0;
        while self.arriving.front().is_some_and(|t| t.timestamp < now) {
            if let Some(t) = self.arriving.pop_front() {
                self.stack.langfuse.add_trace(t);
                n += 1;
            }
        }
        n
    }

    /// Makes the late observations due by `now` visible.
    fn plant_due(&mut self, now: DateTime<Utc>) {
        while self.late.front().is_some_and(|l| l.appears <= now) {
            if let Some(l) = self.late.pop_front() {
                self.stack.langfuse.add_observation(l.observation);
            }
        }
    }

    async fn run_ingest(&self, store: &dyn IngestStore) -> Result<ingest::IngestSummary> {
        let deps = ingest::Deps {
            config: &self.rig.config,
            lister: &self.rig.lister,
            store,
            queue: &self.sender,
            clock: &self.stack.clock,
        };
        let event = serde_json::json!({"id": "day-tick", "detail-type": "Scheduled Event"});
        let deadline = self.stack.clock.now() + Duration::seconds(120);
        Ok(ingest::handle(&deps, &event, deadline).await?)
    }

    /// Drains the queue with the process handler: invocations and their summed wall time.
    async fn process(&self) -> Result<(u64, std::time::Duration)> {
        let busy = Mutex::new(std::time::Duration::ZERO);
        let options = Drain {
            wait_seconds: 0,
            max_polls: Some(10_000),
            ..Drain::default()
        };
        let drained = drain::drain(&self.stack.esm, &options, |_, event| async {
            let started = Instant::now();
            let reply = self.stack.invoke_with(&NoFaults, event).await;
            *busy.lock().unwrap_or_else(|e| e.into_inner()) += started.elapsed();
            reply
        })
        .await?;
        let busy = *busy.lock().unwrap_or_else(|e| e.into_inner());
        Ok((drained.invocations, busy))
    }

    /// The traces whose late observation the ledger does not cover as billed (the queue is
    /// drained, so a claimed entry was delivered).
    async fn late_missed(&self) -> Result<Vec<String>> {
        let ids: Vec<String> = self
            .planted
            .iter()
            .map(|l| l.observation.trace_id.clone())
            .collect();
        let coverage = self.rig.store.coverage(&ids).await?;
        Ok(self
            .planted
            .iter()
            .filter(|l| {
                let entry = coverage.get(&l.observation.trace_id);
                !entry.is_some_and(|e| {
                    // Batch claims leave an entry `claimed`, delivered through its receipt.
                    matches!(e.state, Some(LedgerState::Metered | LedgerState::Claimed))
                        && e.last_observation_at
                            .is_some_and(|b| covers(b, l.observation.start_time))
                })
            })
            .map(|l| l.observation.trace_id.clone())
            .collect())
    }
}

/// Moves the stack's clock to `at`.
fn set_clock(stack: &TestStack, at: DateTime<Utc>) {
    stack.clock.advance(at - stack.clock.now());
}

/// Late observations planted, by delay in minutes.
fn by_delay(planted: &[Late]) -> Vec<(i64, usize)> {
    let mut counts: std::collections::BTreeMap<i64, usize> = Default::default();
    for l in planted {
        *counts
            .entry((l.appears - l.observation.start_time).num_minutes())
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The traces from `history` to the day's end (sorted by time), and the late observations
/// (sorted by when they appear). The delays go round trace by trace; in one round of traces
/// in `late_every`, each trace gets a late observation if it appears after the warm-up and
/// is found by the end of the day at the latest (`worst_detection`).
fn plan_traces(
    rig: &IngestRig,
    options: &DayOptions,
    history: DateTime<Utc>,
    start: DateTime<Utc>,
) -> (Vec<FakeTrace>, Vec<Late>) {
    let end = start + options.tick * options.ticks as i32;
    let step = Duration::milliseconds(86_400_000 / options.traces_per_day.max(1) as i64);
    let cfg = &rig.config;
    let rounds = options.delays.len().max(1);
    let (mut traces, mut late) = (Vec::new(), Vec::new());
    let mut at = history;
    while at < end {
        let i = traces.len();
        let id = format!("day-{i}");
        // Every `sub_ms_every`-th trace starts 456 µs or 456,789 ns past its millisecond.
        let fine = match i % options.sub_ms_every.max(1) {
            0 if i % 2 == 0 => Duration::microseconds(456),
            0 => Duration::nanoseconds(456_789),
            _ => Duration::zero(),
        };
        let at_fine = at + fine;
        traces.push(trace(&id, at_fine));
        let delay = options.delays[i % rounds];
        let starts = at_fine + Duration::seconds(30);
        let found_by = worst_detection(&cfg.rescan_tiers, cfg.settle, options.tick, delay)
            .map(|w| starts + w + options.tick);
        let findable = starts + delay > start && found_by.is_some_and(|f| f <= end);
        if findable && (i / rounds).is_multiple_of(options.late_every.max(1)) {
            let observation = FakeObservation::generation(
                format!("{id}-late"),
                &id,
                starts,
                starts + Duration::seconds(2),
                "gpt-4o",
                3_000,
                1_000,
                0.02,
            );
            late.push(Late {
                appears: starts + delay,
                observation,
            });
        }
        at += step;
    }
    late.sort_by_key(|l| l.appears);
    (traces, late)
}

/// True when `t` is finer than a millisecond.
fn has_sub_ms(t: DateTime<Utc>) -> bool {
    !t.timestamp_subsec_nanos().is_multiple_of(1_000_000)
}

/// A billable trace of [`DAY_CUSTOMER`] with one cheap generation at `at`.
fn trace(id: &str, at: DateTime<Utc>) -> FakeTrace {
    FakeTrace::new(id, at)
        .meta("stripeCustomerId", DAY_CUSTOMER)
        .observation(FakeObservation::generation(
            format!("{id}-g"),
            id,
            at,
            at + Duration::seconds(1),
            "gpt-4o-mini",
            1_200,
            300,
            0.002,
        ))
}
