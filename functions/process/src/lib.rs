//! The processing Lambda: meters each SQS message (one trace id) exactly once.
//!
//! Per message, a resumable state machine (see DESIGN.md, "Process"):
//! fetch usage → credits → customer → claim (ledger + budget in one transaction) →
//! Stripe meter event → mark metered → alerts → optional Langfuse score.
//! A crash between any two steps is safe: the message comes back, the ledger says where it
//! stopped, and that step is resumed, never repeated.
//!
//! The steps run in phases over the batch, to save writes: one claim transaction per
//! customer and budget period (the entries and ONE counter update with the summed credits),
//! the Stripe events (v1: one request each, one customer's one at a time; v2 stream: as few
//! requests as possible), then ONE receipt write that marks every delivered revision.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracemeter::clock::Clock;
use tracemeter::config::ProcessConfig;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};
use tracemeter::domain::claim::{
    BilledUsage, Claim, ClaimBatch, ClaimResult, Expect, FailureKey, MAX_CLAIMS_PER_BATCH, Settled,
};
use tracemeter::domain::credits;
use tracemeter::domain::customer::{self, CustomerSource};
use tracemeter::domain::ledger::{self as ledger_domain, LedgerEntry, LedgerState, PendingClaim};
use tracemeter::domain::message::MeterMessage;
use tracemeter::domain::meter::{Delivery, MeterEvent};
use tracemeter::domain::usage::TraceUsage;
use tracemeter::ports::{Ledger, MeterSink, Redelivery, UsageSource};
use tracemeter::{Error, FailureReason};
use tracing::{error, info, warn};

/// Stripe accepts meter events up to 35 days old; keep an hour of margin.
pub const MAX_USAGE_AGE: chrono::Duration = chrono::Duration::hours(35 * 24 - 1);
/// Stripe accepts timestamps at most 5 minutes in the future.
pub const MAX_FUTURE_SKEW: chrono::Duration = chrono::Duration::minutes(5);
const MAX_LEDGER_ROUNDS: usize = 5;
const MAX_CLAIM_TRIES: usize = 25;

/// A step after which a simulated crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The claim transaction committed; Stripe not called yet.
    AfterClaim,
    /// Stripe accepted the event; the ledger not yet marked.
    AfterStripe,
}

/// The invocation died (a simulated Lambda timeout or crash).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invocation aborted after {step:?} of trace {trace_id}")]
pub struct Crash {
    /// Where.
    pub step: Step,
    /// Which trace.
    pub trace_id: String,
}

/// Fault injection points; production uses [`NoFaults`].
pub trait Faults: Send + Sync {
    /// Called after each step; an error aborts the whole invocation there.
    fn check(&self, step: Step, trace_id: &str) -> Result<(), Crash>;
}

/// No faults.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaults;

impl Faults for NoFaults {
    fn check(&self, _step: Step, _trace_id: &str) -> Result<(), Crash> {
        Ok(())
    }
}

/// Everything the handler needs, built once per cold start.
pub struct Deps<'a> {
    /// Configuration.
    pub config: &'a ProcessConfig,
    /// Langfuse.
    pub usage: &'a dyn UsageSource,
    /// Stripe.
    pub meter: &'a dyn MeterSink,
    /// DynamoDB ledger and budgets.
    pub ledger: &'a dyn Ledger,
    /// SQS visibility changes.
    pub redelivery: &'a dyn Redelivery,
    /// Time.
    pub clock: &'a dyn Clock,
    /// Fault injection.
    pub faults: &'a dyn Faults,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A revision was delivered to Stripe.
    Metered {
        /// Credits sent.
        billable: u64,
        /// Credits over a hard limit.
        capped: u64,
        /// Whether an interrupted earlier attempt was resumed.
        resumed: bool,
    },
    /// Everything was over the hard limit (or zero): recorded, nothing sent.
    Capped {
        /// Credits not billed.
        capped: u64,
    },
    /// The ledger already covers this usage.
    AlreadyBilled,
    /// Recorded in the ledger with its reason and acknowledged.
    Permanent(FailureReason),
    /// Claimed long ago and never marked: left for an operator.
    Ambiguous,
    /// Failed for now; the message returns after `delay`.
    Retry {
        /// What failed.
        detail: String,
        /// The wait asked for, if any.
        after: Option<Duration>,
    },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Metered { .. } => "metered",
            Outcome::Capped { .. } => "capped",
            Outcome::AlreadyBilled => "already_billed",
            Outcome::Permanent(_) => "permanent_failure",
            Outcome::Ambiguous => "ambiguous",
            Outcome::Retry { .. } => "retry",
        }
    }
}

enum Halt {
    Crash(Crash),
    Err(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Halt {
        Halt::Err(e)
    }
}

impl From<Crash> for Halt {
    fn from(c: Crash) -> Halt {
        Halt::Crash(c)
    }
}

/// Per-invocation state: the deadline, the receipt id, caches and one lock per customer, so
/// that one customer's v1 Stripe calls never run concurrently (Stripe allows one at a time
/// per customer and meter).
struct Invocation {
    deadline: DateTime<Utc>,
    receipt: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    policies: Mutex<HashMap<String, BudgetPolicy>>,
    customers: Mutex<HashMap<String, Option<String>>>,
}

/// Identifiers per receipt item: at most 100 characters each, so an item stays far below
/// DynamoDB's 400 KB.
const RECEIPT_CHUNK: usize = 1000;

impl Invocation {
    fn lock_for(&self, customer: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(customer.to_string()).or_default().clone()
    }

    /// The receipt that records the delivery of the batch's `index`-th message.
    fn receipt_for(&self, index: usize) -> String {
        format!("{}-{}", self.receipt, index / RECEIPT_CHUNK)
    }
}

/// A trace priced and ready to be claimed in its customer's batch.
struct Candidate {
    index: usize,
    trace_id: String,
    expect: Expect,
    settled: Settled,
    revision: u32,
    delta: u64,
    total_after: u64,
    customer_id: String,
    period: String,
    policy: BudgetPolicy,
    usage_at: DateTime<Utc>,
    last_observation_at: Option<DateTime<Utc>>,
    seen: BilledUsage,
    now: DateTime<Utc>,
}

/// A claimed revision on its way to Stripe.
struct Claimed {
    index: usize,
    trace_id: String,
    pending: PendingClaim,
    policy: BudgetPolicy,
    /// Taken over from an interrupted invocation.
    resumed: bool,
}

/// Where a message stands after reading its ledger entry and pricing it.
enum Stage {
    /// Settled (or failed) without a new claim.
    Done(Result<Outcome, Crash>),
    /// To be claimed with its customer's batch.
    Claim(Box<Candidate>),
    /// An interrupted claim taken over: to be sent with the batch's claims.
    Send(Box<Claimed>),
    /// The entry changed under us: read it again.
    Again,
}

/// What a customer's batch claim left to do.
#[derive(Default)]
struct GroupClaim {
    done: Vec<(usize, Result<Outcome, Crash>)>,
    again: Vec<usize>,
    claimed: Vec<Claimed>,
    /// Traces recorded as capped: their budget alerts are checked at the end.
    capped: Vec<(usize, String, String, BudgetPolicy)>,
}

/// Handles one SQS batch. Returns the messages to retry; an `Err` means the invocation died
/// (only through injected faults) and Lambda retries the whole batch.
///
/// The batch goes through phases: read and price every message; claim each customer's
/// traces of a budget period in ONE transaction (their ledger entries and one budget counter
/// update with the summed credits); send the claimed events to Stripe; record every delivery
/// of the invocation in ONE receipt write; check budget alerts.
pub async fn handle(
    deps: &Deps<'_>,
    event: SqsEvent,
    deadline: DateTime<Utc>,
) -> Result<SqsBatchResponse, Crash> {
    let started = Instant::now();
    let records = event.records;
    let total = records.len();
    let seed: Vec<&str> = records
        .iter()
        .filter_map(|r| r.receipt_handle.as_deref().or(r.message_id.as_deref()))
        .collect();
    let inv = Invocation {
        deadline,
        receipt: ledger_domain::receipt_id(&seed, deps.clock.now()),
        locks: Mutex::default(),
        policies: Mutex::default(),
        customers: Mutex::default(),
    };
    let results = meter_batch(deps, &inv, &records).await;

    let mut response = SqsBatchResponse::default();
    let mut delays = Vec::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut credits_billed = 0u64;
    let mut crash = None;
    for (record, result) in records.iter().zip(results) {
        let outcome = match result {
            Ok(o) => o,
            Err(c) => {
                crash = Some(c);
                continue;
            }
        };
        *counts.entry(outcome.label()).or_default() += 1;
        if let Outcome::Metered { billable, .. } = outcome {
            credits_billed += billable;
        }
        if let Outcome::Retry { after, .. } = &outcome {
            let message_id = record.message_id.clone().unwrap_or_default();
            let receives: u32 = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let delay = retry_delay(deps.config, &message_id, receives, *after);
            if let Some(receipt) = record.receipt_handle.clone() {
                delays.push((receipt, delay));
            }
            response.add_failure(message_id);
        }
    }
    if let Some(c) = crash {
        error!(step = ?c.step, trace_id = %c.trace_id, "invocation aborted (injected fault)");
        return Err(c);
    }
    if !delays.is_empty()
        && let Err(e) = deps.redelivery.delay(&delays).await
    {
        // The messages still come back, after the queue's own visibility timeout.
        warn!(error = %e, "could not extend the visibility of failed messages");
    }
    let secs = started.elapsed().as_secs_f64();
    info!(
        messages = total,
        metered = counts.get("metered").copied().unwrap_or(0),
        capped = counts.get("capped").copied().unwrap_or(0),
        already_billed = counts.get("already_billed").copied().unwrap_or(0),
        permanent_failures = counts.get("permanent_failure").copied().unwrap_or(0),
        ambiguous = counts.get("ambiguous").copied().unwrap_or(0),
        retries = counts.get("retry").copied().unwrap_or(0),
        credits_billed,
        duration_ms = (secs * 1000.0) as u64,
        messages_per_second = if secs > 0.0 { total as f64 / secs } else { 0.0 },
        "batch processed"
    );
    Ok(response)
}

/// The visibility timeout for a failed message: exponential in its receive count, with
/// jitter, at least what the service asked for, capped by `RETRY_MAX_SECONDS`.
pub fn retry_delay(
    config: &ProcessConfig,
    message_id: &str,
    receives: u32,
    asked: Option<Duration>,
) -> i32 {
    let tuning = &config.process;
    let exp = receives.saturating_sub(1).min(16);
    let base = u64::from(tuning.retry_base_seconds).saturating_mul(1u64 << exp);
    let capped = base.min(u64::from(tuning.retry_max_seconds));
    // Deterministic jitter in [50 %, 100 %] from the message id and attempt.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.bytes().chain(receives.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let jittered = capped / 2 + (h % (capped / 2 + 1));
    let asked = asked.map(|d| d.as_secs() + 1).unwrap_or(0);
    let secs = jittered
        .max(asked)
        .min(u64::from(tuning.retry_max_seconds))
        .max(1);
    i32::try_from(secs).unwrap_or(43_200)
}

fn crashed(outcomes: &[Option<Result<Outcome, Crash>>]) -> bool {
    outcomes.iter().any(|o| matches!(o, Some(Err(_))))
}

/// The outcome of every record, in order. Once a simulated crash happened, later phases do
/// not run (the invocation is dead).
async fn meter_batch(
    deps: &Deps<'_>,
    inv: &Invocation,
    records: &[SqsMessage],
) -> Vec<Result<Outcome, Crash>> {
    let n = records.len();
    let concurrency = deps.config.process.concurrency.max(1);
    let mut outcomes: Vec<Option<Result<Outcome, Crash>>> = vec![None; n];
    // One primary message per trace: a transaction names an item once, and a trace is
    // metered once anyway.
    let mut traces: Vec<String> = vec![String::new(); n];
    let mut primary: HashMap<String, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    let mut todo = Vec::new();
    let mut malformed = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        match MeterMessage::parse(&body) {
            Ok(m) => {
                match primary.get(&m.trace_id) {
                    Some(&p) => duplicates.push((i, p)),
                    None => {
                        primary.insert(m.trace_id.clone(), i);
                        todo.push(i);
                    }
                }
                traces[i] = m.trace_id;
            }
            Err(Error::Permanent { reason, detail }) => {
                let detail = format!("message {message_id}: {detail}");
                malformed.push((i, FailureKey::Message { message_id, body }, reason, detail));
            }
            Err(e) => {
                outcomes[i] = Some(Ok(Outcome::Retry {
                    detail: e.to_string(),
                    after: None,
                }));
            }
        }
    }
    let recorded: Vec<(usize, Outcome)> = futures::stream::iter(malformed)
        .map(|(i, key, reason, detail)| async move {
            (i, record_permanent(deps, &key, reason, &detail).await)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for (i, o) in recorded {
        outcomes[i] = Some(Ok(o));
    }

    let mut usages: HashMap<usize, Option<TraceUsage>> = HashMap::new();
    let mut to_send: Vec<Claimed> = Vec::new();
    let mut capped = Vec::new();
    for _ in 0..MAX_LEDGER_ROUNDS {
        if todo.is_empty() || crashed(&outcomes) {
            break;
        }
        // Read each entry; resume interrupted claims; fetch usage and price the rest.
        let prepared: Vec<(usize, Option<Option<TraceUsage>>, Stage)> =
            futures::stream::iter(std::mem::take(&mut todo))
                .map(|i| {
                    let mut usage = usages.get(&i).cloned();
                    let trace_id = traces[i].as_str();
                    async move {
                        let stage = prepare(deps, inv, i, trace_id, &mut usage).await;
                        (i, usage, stage)
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        let mut groups: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
        for (i, usage, stage) in prepared {
            if let Some(u) = usage {
                usages.insert(i, u);
            }
            match stage {
                Stage::Done(o) => outcomes[i] = Some(o),
                Stage::Claim(c) => groups
                    .entry((c.customer_id.clone(), c.period.clone()))
                    .or_default()
                    .push(*c),
                Stage::Send(c) => to_send.push(*c),
                Stage::Again => todo.push(i),
            }
        }
        if crashed(&outcomes) {
            break;
        }
        // One transaction per customer and period (split to the transaction size limit).
        let mut batches = Vec::new();
        for (_, mut group) in groups {
            group.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
            while group.len() > MAX_CLAIMS_PER_BATCH {
                let rest = group.split_off(MAX_CLAIMS_PER_BATCH);
                batches.push(group);
                group = rest;
            }
            batches.push(group);
        }
        let claimed: Vec<GroupClaim> = futures::stream::iter(batches)
            .map(|group| claim_group(deps, inv, group))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for g in claimed {
            for (i, o) in g.done {
                outcomes[i] = Some(o);
            }
            todo.extend(g.again);
            to_send.extend(g.claimed);
            capped.extend(g.capped);
        }
    }
    for i in todo {
        outcomes[i] = Some(Ok(Outcome::Retry {
            detail: format!(
                "ledger entry of trace {} kept changing under concurrent writers",
                traces[i]
            ),
            after: None,
        }));
    }

    if !crashed(&outcomes) {
        let sent = send_claims(deps, inv, to_send).await;
        let mut delivered = Vec::new();
        for (c, result) in sent {
            match result {
                Some(o) => outcomes[c.index] = Some(o),
                None => delivered.push(c),
            }
        }
        if !crashed(&outcomes) {
            for (i, o) in finish(deps, delivered, capped).await {
                outcomes[i] = Some(o);
            }
        }
    }

    for (i, p) in duplicates {
        outcomes[i] = Some(match &outcomes[p] {
            Some(Ok(Outcome::Metered { .. } | Outcome::Capped { .. })) => {
                Ok(Outcome::AlreadyBilled)
            }
            Some(o) => o.clone(),
            None => Ok(Outcome::Retry {
                detail: "not processed".into(),
                after: None,
            }),
        });
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Ok(Outcome::Retry {
                    detail: "not processed: the invocation stopped early".into(),
                    after: None,
                })
            })
        })
        .collect()
}

async fn record_permanent(
    deps: &Deps<'_>,
    key: &FailureKey,
    reason: FailureReason,
    detail: &str,
) -> Outcome {
    match deps
        .ledger
        .record_failure(key, reason, detail, deps.clock.now())
        .await
    {
        Ok(()) => {
            warn!(reason = %reason, detail = %detail, "permanent failure recorded; message acknowledged");
            Outcome::Permanent(reason)
        }
        Err(e) => Outcome::Retry {
            detail: format!("could not record permanent failure {reason} ({detail}): {e}"),
            after: None,
        },
    }
}

/// What an error means for a trace's message: a permanent one is recorded in the ledger and
/// acknowledged; a transient one retries.
async fn failure_outcome(deps: &Deps<'_>, trace_id: &str, e: Error) -> Outcome {
    match e {
        Error::Permanent { reason, detail } => {
            let key = FailureKey::Trace(trace_id.to_string());
            record_permanent(deps, &key, reason, &detail).await
        }
        e => {
            warn!(trace_id, error = %e, "transient failure, will retry");
            Outcome::Retry {
                after: e.retry_after(),
                detail: e.to_string(),
            }
        }
    }
}

async fn prepare(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    trace_id: &str,
    usage: &mut Option<Option<TraceUsage>>,
) -> Stage {
    match read_and_price(deps, inv, index, trace_id, usage).await {
        Ok(stage) => stage,
        Err(Halt::Crash(c)) => Stage::Done(Err(c)),
        Err(Halt::Err(e)) => Stage::Done(Ok(failure_outcome(deps, trace_id, e).await)),
    }
}

async fn read_and_price(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    trace_id: &str,
    usage: &mut Option<Option<TraceUsage>>,
) -> Result<Stage, Halt> {
    let now = deps.clock.now();
    let entry = deps.ledger.entry(trace_id).await?;
    if let Some(e) = &entry {
        match e.state {
            LedgerState::Claimed => {
                return Ok(resume_claim(deps, inv, index, e, now)
                    .await?
                    .unwrap_or(Stage::Again));
            }
            LedgerState::Ambiguous => {
                warn!(
                    trace_id,
                    "ledger entry is ambiguous: an operator must settle it; not billed"
                );
                return Ok(Stage::Done(Ok(Outcome::Ambiguous)));
            }
            _ => {}
        }
    }
    if usage.is_none() {
        *usage = Some(deps.usage.trace_usage(trace_id).await?);
    }
    let Some(Some(trace)) = usage.as_ref() else {
        return Err(Error::permanent(
            FailureReason::TraceNotFound,
            format!(
                "trace {trace_id} not found in Langfuse ({:?} API at {})",
                deps.config.langfuse.api, deps.config.langfuse.base_url
            ),
        )
        .into());
    };
    price(deps, inv, index, trace, entry.as_ref(), now).await
}

/// A claimed revision found in the ledger: taken over when its lease expired, to be sent
/// with the batch. `None`: the entry changed, read it again.
async fn resume_claim(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    entry: &LedgerEntry,
    now: DateTime<Utc>,
) -> Result<Option<Stage>, Halt> {
    let trace_id = entry.trace_id.as_str();
    let Some(p) = entry.pending.clone() else {
        return Err(Error::transient(
            "dynamodb",
            format!("ledger entry of trace {trace_id} is claimed without a pending revision"),
        )
        .into());
    };
    if now - p.claimed_at > deps.config.process.stripe_dedup_window {
        if deps
            .ledger
            .mark_ambiguous(trace_id, p.revision, now)
            .await?
        {
            error!(
                trace_id,
                identifier = %p.identifier,
                customer = %p.customer_id,
                credits = p.billable,
                claimed_at = %p.claimed_at,
                "claim outlived Stripe's dedup window without being marked: recorded as ambiguous, not resent"
            );
            return Ok(Some(Stage::Done(Ok(Outcome::Ambiguous))));
        }
        return Ok(None);
    }
    if p.lease_until > now {
        let wait = (p.lease_until - now).to_std().unwrap_or_default();
        return Ok(Some(Stage::Done(Ok(Outcome::Retry {
            detail: format!(
                "trace {trace_id} revision {} is being processed by another invocation until {}",
                p.revision, p.lease_until
            ),
            after: Some(wait),
        }))));
    }
    let lease_until = inv.deadline + deps.config.process.lease_margin;
    if !deps
        .ledger
        .take_over(trace_id, p.revision, now, lease_until)
        .await?
    {
        return Ok(None);
    }
    info!(trace_id, revision = p.revision, identifier = %p.identifier, "resuming an interrupted claim");
    let policy = policy_for(deps, inv, &p.customer_id).await?;
    Ok(Some(Stage::Send(Box::new(Claimed {
        index,
        trace_id: trace_id.to_string(),
        pending: PendingClaim { lease_until, ..p },
        policy,
        resumed: true,
    }))))
}

/// Prices the trace; what exceeds what the ledger covers becomes a candidate for its
/// customer's batch claim.
async fn price(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    usage: &TraceUsage,
    entry: Option<&LedgerEntry>,
    now: DateTime<Utc>,
) -> Result<Stage, Halt> {
    let trace_id = usage.trace_id.as_str();
    let cfg = deps.config;
    let quote = credits::quote(usage, &cfg.pricing, &cfg.byo_key)?;
    let (prev_total, prev_revision) = entry
        .map(|e| (e.total_credits, e.revision))
        .unwrap_or((0, 0));
    if prev_revision > 0 && quote.credits <= prev_total {
        if quote.credits < prev_total {
            info!(
                trace_id,
                now = quote.credits,
                billed = prev_total,
                "trace credits shrank after billing; nothing to do"
            );
        }
        if let Some(e) = entry
            && let Some(cus) = &e.customer_id
        {
            // A redelivery after a failed alert check: run it again (idempotent).
            let policy = policy_for(deps, inv, cus).await?;
            let period = policy.period.key(usage.timestamp);
            check_budget(deps, cus, &period, &policy).await?;
        }
        return Ok(Stage::Done(Ok(Outcome::AlreadyBilled)));
    }
    let customer_id = resolve_customer(deps, inv, usage).await?;
    if usage.timestamp < now - MAX_USAGE_AGE {
        return Err(Error::permanent(
            FailureReason::UsageTooOld,
            format!(
                "trace {trace_id}: usage at {} is older than Stripe's 35-day window for meter events (now {now})",
                usage.timestamp
            ),
        )
        .into());
    }
    if usage.timestamp > now + MAX_FUTURE_SKEW {
        return Err(Error::permanent(
            FailureReason::UsageInFuture,
            format!(
                "trace {trace_id}: usage at {} is more than 5 minutes in the future (now {now}); check the clock of the traced app",
                usage.timestamp
            ),
        )
        .into());
    }
    let policy = policy_for(deps, inv, &customer_id).await?;
    let period = policy.period.key(usage.timestamp);
    Ok(Stage::Claim(Box::new(Candidate {
        index,
        trace_id: trace_id.to_string(),
        expect: match entry {
            None => Expect::Absent,
            Some(e) => Expect::Version(e.version),
        },
        settled: Settled::of(entry),
        revision: prev_revision + 1,
        delta: quote.credits - prev_total,
        total_after: quote.credits,
        customer_id,
        period,
        policy,
        usage_at: usage.timestamp,
        last_observation_at: usage.last_observation_at,
        seen: BilledUsage {
            cost_usd: usage.ai_cost_usd,
            latency_seconds: usage.latency_seconds,
            observations: usage.observation_count,
        },
        now,
    })))
}

/// Claims one customer's traces of one budget period in one transaction. The hard limit is
/// shared out in trace id order: earlier traces get the room first, the rest is capped.
async fn claim_group(deps: &Deps<'_>, inv: &Invocation, mut group: Vec<Candidate>) -> GroupClaim {
    let mut out = GroupClaim::default();
    let Some(first) = group.first() else {
        return out;
    };
    let (customer_id, period, policy) = (
        first.customer_id.clone(),
        first.period.clone(),
        first.policy.clone(),
    );
    let lease_until = inv.deadline + deps.config.process.lease_margin;
    let mut used = 0u64;
    for _ in 0..MAX_CLAIM_TRIES {
        if group.is_empty() {
            return out;
        }
        let mut running = used;
        let claims: Vec<Claim> = group
            .iter()
            .map(|c| {
                let split = policy.split(running, c.delta);
                running += split.billable;
                Claim {
                    trace_id: c.trace_id.clone(),
                    expect: c.expect,
                    settled: c.settled.clone(),
                    pending: PendingClaim {
                        revision: c.revision,
                        identifier: ledger_domain::identifier(&c.trace_id, c.revision),
                        customer_id: customer_id.clone(),
                        billable: split.billable,
                        capped: split.capped,
                        total_after: c.total_after,
                        event_timestamp: c.usage_at.min(c.now).timestamp(),
                        period: period.clone(),
                        claimed_at: c.now,
                        lease_until,
                        receipt: Some(inv.receipt_for(c.index)),
                    },
                    usage_at: c.usage_at,
                    last_observation_at: c.last_observation_at,
                    seen: c.seen.clone(),
                }
            })
            .collect();
        let batch = ClaimBatch {
            customer_id: customer_id.clone(),
            period: period.clone(),
            hard_limit: policy.hard_limit(),
            limit: policy.limit,
            claims,
            now: deps.clock.now(),
        };
        match deps.ledger.claim_batch(&batch).await {
            Ok(ClaimResult::Claimed) => {
                for (c, claim) in group.into_iter().zip(batch.claims) {
                    let p = claim.pending;
                    let trace_id = c.trace_id;
                    if p.billable == 0 && p.capped == 0 {
                        info!(
                            trace_id,
                            "trace costs no credits: recorded, nothing to send"
                        );
                        out.done.push((
                            c.index,
                            Ok(Outcome::Metered {
                                billable: 0,
                                capped: 0,
                                resumed: false,
                            }),
                        ));
                    } else if p.billable == 0 {
                        info!(trace_id, customer = %customer_id, capped = p.capped, period = %period,
                              "usage over the hard limit: recorded as capped, not billed");
                        out.done
                            .push((c.index, Ok(Outcome::Capped { capped: p.capped })));
                        out.capped.push((
                            c.index,
                            customer_id.clone(),
                            period.clone(),
                            policy.clone(),
                        ));
                    } else {
                        out.claimed.push(Claimed {
                            index: c.index,
                            trace_id,
                            pending: p,
                            policy: policy.clone(),
                            resumed: false,
                        });
                    }
                }
                return out;
            }
            Ok(ClaimResult::LedgerChanged(changed)) => {
                // Another delivery claimed or settled these: read them again; claim the rest.
                info!(customer = %customer_id, changed = changed.len(), of = group.len(),
                      "ledger entries changed under the batch claim; claiming the rest");
                let mut kept = Vec::with_capacity(group.len());
                for (i, c) in group.into_iter().enumerate() {
                    if changed.contains(&i) {
                        out.again.push(c.index);
                    } else {
                        kept.push(c);
                    }
                }
                group = kept;
            }
            Ok(ClaimResult::OverBudget { used: now_used }) => used = now_used,
            Ok(ClaimResult::Conflict) => tokio::task::yield_now().await,
            Err(e) => {
                warn!(customer = %customer_id, period = %period, error = %e, "claim failed, will retry");
                for c in group {
                    out.done.push((
                        c.index,
                        Ok(Outcome::Retry {
                            detail: e.to_string(),
                            after: e.retry_after(),
                        }),
                    ));
                }
                return out;
            }
        }
    }
    for c in group {
        out.done.push((
            c.index,
            Ok(Outcome::Retry {
                detail: format!("budget of {customer_id} in {period} is under heavy contention"),
                after: None,
            }),
        ));
    }
    out
}

/// A claim and, unless Stripe has its event, its final outcome.
type Sent = (Claimed, Option<Result<Outcome, Crash>>);

/// Sends the claimed events. `None` for a claim: Stripe has its event; otherwise its final
/// outcome (recorded permanent failure, retry, or the simulated crash).
async fn send_claims(deps: &Deps<'_>, inv: &Invocation, claims: Vec<Claimed>) -> Vec<Sent> {
    if claims.is_empty() {
        return Vec::new();
    }
    if deps.meter.batches() {
        // The v2 stream: as few requests as possible; no per-customer limit applies.
        for c in &claims {
            if let Err(crash) = deps.faults.check(Step::AfterClaim, &c.trace_id) {
                return claims
                    .into_iter()
                    .map(|c| (c, Some(Err(crash.clone()))))
                    .collect();
            }
        }
        let events: Vec<MeterEvent> = claims
            .iter()
            .map(|c| MeterEvent::for_claim(&c.pending))
            .collect();
        let results = deps.meter.send_batch(&events).await;
        let mut out = Vec::with_capacity(claims.len());
        let mut results = results.into_iter();
        for c in claims {
            let result = results
                .next()
                .unwrap_or_else(|| Err(Error::transient("stripe", "no result for the event")));
            let settled = settle_claim(deps, &c, result).await;
            out.push((c, settled));
        }
        return out;
    }
    // v1: one request per event; one customer's requests one after the other.
    let mut by_customer: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
    for c in claims {
        by_customer
            .entry(c.pending.customer_id.clone())
            .or_default()
            .push(c);
    }
    let sent: Vec<Vec<Sent>> = futures::stream::iter(by_customer)
        .map(|(customer, claims)| async move {
            let lock = inv.lock_for(&customer);
            let _guard = lock.lock().await;
            let mut out = Vec::with_capacity(claims.len());
            let mut crash: Option<Crash> = None;
            for c in claims {
                if let Some(crash) = &crash {
                    out.push((c, Some(Err(crash.clone()))));
                    continue;
                }
                if let Err(e) = deps.faults.check(Step::AfterClaim, &c.trace_id) {
                    crash = Some(e.clone());
                    out.push((c, Some(Err(e))));
                    continue;
                }
                let result = deps.meter.send(&MeterEvent::for_claim(&c.pending)).await;
                let settled = settle_claim(deps, &c, result).await;
                if let Some(Err(e)) = &settled {
                    crash = Some(e.clone());
                }
                out.push((c, settled));
            }
            out
        })
        .buffer_unordered(deps.config.process.concurrency.max(1))
        .collect()
        .await;
    sent.into_iter().flatten().collect()
}

async fn settle_claim(
    deps: &Deps<'_>,
    c: &Claimed,
    result: tracemeter::Result<Delivery>,
) -> Option<Result<Outcome, Crash>> {
    match settle_send(deps, &c.trace_id, &c.pending, result).await {
        Ok(Some(outcome)) => Some(Ok(outcome)),
        Ok(None) => match deps.faults.check(Step::AfterStripe, &c.trace_id) {
            Ok(()) => None,
            Err(crash) => Some(Err(crash)),
        },
        Err(e) => Some(Ok(failure_outcome(deps, &c.trace_id, e).await)),
    }
}

/// What Stripe's answer means for a claimed revision. `None`: Stripe has the event.
/// A permanent rejection is recorded and the budget increment undone; a transient failure
/// ends the claim's lease so the retry resumes at once.
async fn settle_send(
    deps: &Deps<'_>,
    trace_id: &str,
    p: &PendingClaim,
    result: tracemeter::Result<Delivery>,
) -> Result<Option<Outcome>, Error> {
    match result {
        Ok(Delivery::Recorded) => Ok(None),
        Ok(Delivery::AlreadyRecorded) => {
            info!(trace_id, identifier = %p.identifier, "Stripe already had this event: treated as delivered");
            Ok(None)
        }
        Err(Error::Permanent { reason, detail }) => {
            let now = deps.clock.now();
            if deps
                .ledger
                .fail_claim(trace_id, p, reason, &detail, now)
                .await?
            {
                error!(trace_id, identifier = %p.identifier, reason = %reason, detail = %detail,
                       "Stripe rejected the meter event: recorded, budget increment undone");
            }
            Ok(Some(Outcome::Permanent(reason)))
        }
        Err(e) => {
            if let Err(release) = deps
                .ledger
                .release(trace_id, p.revision, deps.clock.now())
                .await
            {
                warn!(trace_id, error = %release, "could not release the claim's lease; the retry waits for it");
            }
            warn!(trace_id, error = %e, "Stripe failed for now, will retry");
            Ok(Some(Outcome::Retry {
                after: e.retry_after(),
                detail: e.to_string(),
            }))
        }
    }
}

/// Records every delivery of the invocation in one write per receipt (a resumed claim in the
/// receipt it was claimed with; a claim without a receipt is marked on its entry), then
/// checks the budget alerts once per customer and period, then (optionally) scores the traces
/// in Langfuse.
async fn finish(
    deps: &Deps<'_>,
    delivered: Vec<Claimed>,
    capped: Vec<(usize, String, String, BudgetPolicy)>,
) -> Vec<(usize, Result<Outcome, Crash>)> {
    let mut out: Vec<(usize, Result<Outcome, Crash>)> = Vec::new();
    let mut by_receipt: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
    let mut recorded: Vec<(String, Claimed)> = Vec::new();
    for c in delivered {
        match c.pending.receipt.clone() {
            Some(receipt) => by_receipt.entry(receipt).or_default().push(c),
            None => match deps
                .ledger
                .mark_metered(&c.trace_id, &c.pending, deps.clock.now())
                .await
            {
                Ok(marked) => {
                    if !marked {
                        warn!(trace_id = %c.trace_id, revision = c.pending.revision,
                              "revision was already marked by another invocation");
                    }
                    recorded.push(("none".to_string(), c));
                }
                Err(e) => out.push((
                    c.index,
                    Ok(Outcome::Retry {
                        detail: format!("could not mark the revision metered: {e}"),
                        after: None,
                    }),
                )),
            },
        }
    }
    for (receipt, claims) in by_receipt {
        let ids: Vec<String> = claims
            .iter()
            .map(|c| c.pending.identifier.clone())
            .collect();
        match deps
            .ledger
            .record_delivered(&receipt, &ids, deps.clock.now())
            .await
        {
            Ok(()) => recorded.extend(claims.into_iter().map(|c| (receipt.clone(), c))),
            Err(e) => {
                // Stripe has the events; the retry resumes the claims (Stripe dedups the
                // identifiers) and records them.
                warn!(receipt = %receipt, error = %e, "could not record the deliveries; they resume on retry");
                for c in claims {
                    out.push((
                        c.index,
                        Ok(Outcome::Retry {
                            detail: format!("could not record the delivery receipt: {e}"),
                            after: None,
                        }),
                    ));
                }
            }
        }
    }
    let mut checks: BTreeMap<(String, String), (BudgetPolicy, Vec<usize>)> = BTreeMap::new();
    for (i, customer, period, policy) in capped {
        checks
            .entry((customer, period))
            .or_insert_with(|| (policy, Vec::new()))
            .1
            .push(i);
    }
    let mut metered = Vec::new();
    for (receipt, c) in recorded {
        let p = &c.pending;
        info!(trace_id = %c.trace_id, customer = %p.customer_id, revision = p.revision,
              credits = p.billable, capped = p.capped, identifier = %p.identifier,
              receipt = %receipt, resumed = c.resumed, "metered");
        checks
            .entry((p.customer_id.clone(), p.period.clone()))
            .or_insert_with(|| (c.policy.clone(), Vec::new()))
            .1
            .push(c.index);
        out.push((
            c.index,
            Ok(Outcome::Metered {
                billable: p.billable,
                capped: p.capped,
                resumed: c.resumed,
            }),
        ));
        metered.push(c);
    }
    let failed_checks: Vec<Vec<usize>> = futures::stream::iter(checks)
        .map(|((customer, period), (policy, indices))| async move {
            match check_budget(deps, &customer, &period, &policy).await {
                Ok(()) => None,
                Err(e) => {
                    warn!(customer = %customer, period = %period, error = %e,
                          "budget alert check failed; the redelivery runs it again");
                    Some(indices)
                }
            }
        })
        .buffer_unordered(deps.config.process.concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await;
    for i in failed_checks.into_iter().flatten() {
        if let Some(slot) = out.iter_mut().find(|(j, _)| *j == i) {
            slot.1 = Ok(Outcome::Retry {
                detail: "budget alert check failed".into(),
                after: None,
            });
        } else {
            out.push((
                i,
                Ok(Outcome::Retry {
                    detail: "budget alert check failed".into(),
                    after: None,
                }),
            ));
        }
    }
    if deps.config.langfuse.score_enabled {
        futures::stream::iter(metered)
            .for_each_concurrent(deps.config.process.concurrency.max(1), |c| async move {
                if let Err(e) = deps
                    .usage
                    .record_billed(&c.trace_id, &c.pending.identifier, c.pending.total_after)
                    .await
                {
                    warn!(trace_id = %c.trace_id, error = %e, "could not mark the trace in Langfuse (best effort)");
                }
            })
            .await;
    }
    out
}

/// Writes one alert record per threshold crossed (conditional put: exactly once) and the
/// exceeded flag at a hard limit.
async fn check_budget(
    deps: &Deps<'_>,
    customer_id: &str,
    period: &str,
    policy: &BudgetPolicy,
) -> Result<(), Error> {
    let Some(limit) = policy.limit else {
        return Ok(());
    };
    let usage = deps.ledger.budget_usage(customer_id, period).await?;
    let now = deps.clock.now();
    for threshold in policy.thresholds_reached(usage.used) {
        if deps
            .ledger
            .record_alert(customer_id, period, threshold, usage, limit, now)
            .await?
        {
            warn!(
                alert = "budget_threshold",
                customer = customer_id,
                period,
                threshold_pct = threshold,
                used = usage.used,
                limit,
                mode = policy.mode.as_str(),
                "budget threshold crossed"
            );
        }
    }
    if policy.mode == BudgetMode::Hard && usage.used >= limit && !usage.exceeded {
        deps.ledger.set_exceeded(customer_id, period, now).await?;
    }
    Ok(())
}

async fn policy_for(
    deps: &Deps<'_>,
    inv: &Invocation,
    customer_id: &str,
) -> Result<BudgetPolicy, Error> {
    if let Some(p) = inv
        .policies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(customer_id)
    {
        return Ok(p.clone());
    }
    let policy = deps
        .ledger
        .budget_policy(customer_id)
        .await?
        .unwrap_or_else(|| deps.config.default_budget.clone());
    inv.policies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(customer_id.to_string(), policy.clone());
    Ok(policy)
}

async fn resolve_customer(
    deps: &Deps<'_>,
    inv: &Invocation,
    usage: &TraceUsage,
) -> Result<String, Error> {
    let rules = &deps.config.customers;
    if let Some((id, CustomerSource::Metadata(_))) =
        customer::from_metadata(usage, &rules.metadata_keys)
    {
        return Ok(id);
    }
    if let Some(user) = &usage.user_id {
        let cached = inv
            .customers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned();
        let mapped = match cached {
            Some(m) => m,
            None => {
                let m = deps.ledger.customer_for_user(user).await?;
                inv.customers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(user.clone(), m.clone());
                m
            }
        };
        if let Some(id) = mapped.filter(|id| customer::valid_customer_id(id)) {
            return Ok(id);
        }
    }
    if let Some(id) = &rules.default_customer {
        return Ok(id.clone());
    }
    Err(Error::permanent(
        FailureReason::UnmappedCustomer,
        format!(
            "trace {}: no Stripe customer in metadata keys {:?}, no mapping for user {:?}, and DEFAULT_CUSTOMER_ID is not set",
            usage.trace_id, rules.metadata_keys, usage.user_id
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base: u32, max: u32) -> ProcessConfig {
        let vars = [
            ("LANGFUSE_BASE_URL", "http://127.0.0.1:1".to_string()),
            ("LANGFUSE_PUBLIC_KEY", "pk".to_string()),
            ("LANGFUSE_SECRET_KEY", "sk".to_string()),
            ("STRIPE_SECRET_KEY", "sk_test_x".to_string()),
            ("STRIPE_METER_EVENT_NAME", "m".to_string()),
            ("TABLE_NAME", "t".to_string()),
            ("QUEUE_URL", "http://127.0.0.1:1/q".to_string()),
            ("RETRY_BASE_SECONDS", base.to_string()),
            ("RETRY_MAX_SECONDS", max.to_string()),
        ];
        ProcessConfig::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .expect("valid config")
    }

    #[test]
    fn retry_delay_grows_with_receives_and_is_capped() {
        let cfg = config(30, 900);
        for receives in 1..=10u32 {
            let d = retry_delay(&cfg, "msg-1", receives, None);
            let full = (30u64 << (receives - 1)).min(900) as i32;
            assert!(
                d >= full / 2 && d <= full,
                "receive {receives}: {d} not in [{}, {full}]",
                full / 2
            );
        }
        assert!(retry_delay(&cfg, "m", 30, None) <= 900);
    }

    #[test]
    fn retry_delay_honours_the_service_wait() {
        let cfg = config(1, 600);
        assert!(retry_delay(&cfg, "m", 1, Some(Duration::from_secs(120))) >= 120);
        // but never past the cap
        assert_eq!(
            retry_delay(&cfg, "m", 1, Some(Duration::from_secs(5000))),
            600
        );
    }

    #[test]
    fn jitter_differs_between_messages() {
        let cfg = config(100, 10_000);
        let delays: std::collections::BTreeSet<i32> = (0..20)
            .map(|i| retry_delay(&cfg, &format!("m{i}"), 3, None))
            .collect();
        assert!(delays.len() > 5, "{delays:?}");
    }
}
