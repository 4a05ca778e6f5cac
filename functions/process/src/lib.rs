//! The processing Lambda: meters each SQS message (one trace id) exactly once.
//!
//! Per message, a resumable state machine (see DESIGN.md, "Process"):
//! fetch usage → credits → customer → claim (ledger + budget in one transaction) →
//! Stripe meter event → mark metered → alerts → optional Langfuse score.
//! A crash between any two steps is safe: the message comes back, the ledger says where it
//! stopped, and that step is resumed, never repeated.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracemeter::clock::Clock;
use tracemeter::config::Config;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};
use tracemeter::domain::credits;
use tracemeter::domain::customer::{self, CustomerSource};
use tracemeter::domain::ledger::{self as ledger_domain, LedgerEntry, LedgerState, PendingClaim};
use tracemeter::domain::message::MeterMessage;
use tracemeter::domain::usage::TraceUsage;
use tracemeter::ports::{
    Claim, ClaimResult, Delivery, Expect, FailureKey, Ledger, MeterEvent, MeterSink, Redelivery,
    SeenUsage, UsageSource,
};
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
    pub config: &'a Config,
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

/// Per-invocation state: the deadline, caches and one lock per customer, so that one
/// customer's Stripe calls never run concurrently (Stripe allows one at a time per
/// customer and meter).
struct Invocation {
    deadline: DateTime<Utc>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    policies: Mutex<HashMap<String, BudgetPolicy>>,
    customers: Mutex<HashMap<String, Option<String>>>,
}

impl Invocation {
    fn lock_for(&self, customer: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(customer.to_string()).or_default().clone()
    }
}

/// Handles one SQS batch. Returns the messages to retry; an `Err` means the invocation died
/// (only through injected faults) and Lambda retries the whole batch.
pub async fn handle(
    deps: &Deps<'_>,
    event: SqsEvent,
    deadline: DateTime<Utc>,
) -> Result<SqsBatchResponse, Crash> {
    let started = Instant::now();
    let inv = Invocation {
        deadline,
        locks: Mutex::default(),
        policies: Mutex::default(),
        customers: Mutex::default(),
    };
    let records = event.records;
    let total = records.len();
    let results: Vec<(SqsMessage, Result<Outcome, Crash>)> = futures::stream::iter(records)
        .map(|record| {
            let inv = &inv;
            async move {
                let outcome = process_record(deps, inv, &record).await;
                (record, outcome)
            }
        })
        .buffer_unordered(deps.config.process.concurrency)
        .collect()
        .await;

    let mut response = SqsBatchResponse::default();
    let mut delays = Vec::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut credits_billed = 0u64;
    let mut crash = None;
    for (record, result) in results {
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
    config: &Config,
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

async fn process_record(
    deps: &Deps<'_>,
    inv: &Invocation,
    record: &SqsMessage,
) -> Result<Outcome, Crash> {
    let message_id = record.message_id.clone().unwrap_or_default();
    let body = record.body.clone().unwrap_or_default();
    let msg = match MeterMessage::parse(&body) {
        Ok(m) => m,
        Err(Error::Permanent { reason, detail }) => {
            let detail = format!("message {message_id}: {detail}");
            let key = FailureKey::Message {
                message_id: message_id.clone(),
                body: body.clone(),
            };
            return Ok(record_permanent(deps, &key, reason, &detail).await);
        }
        Err(e) => {
            return Ok(Outcome::Retry {
                detail: e.to_string(),
                after: None,
            });
        }
    };
    let trace_id = msg.trace_id;
    match meter_trace(deps, inv, &trace_id).await {
        Ok(outcome) => {
            if let Outcome::Retry { detail, .. } = &outcome {
                warn!(trace_id = %trace_id, message_id = %message_id, detail = %detail, "will retry");
            }
            Ok(outcome)
        }
        Err(Halt::Crash(c)) => Err(c),
        Err(Halt::Err(Error::Permanent { reason, detail })) => {
            let key = FailureKey::Trace(trace_id.clone());
            Ok(record_permanent(deps, &key, reason, &detail).await)
        }
        Err(Halt::Err(e)) => {
            warn!(trace_id = %trace_id, message_id = %message_id, error = %e, "transient failure, will retry");
            Ok(Outcome::Retry {
                after: e.retry_after(),
                detail: e.to_string(),
            })
        }
    }
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

async fn meter_trace(deps: &Deps<'_>, inv: &Invocation, trace_id: &str) -> Result<Outcome, Halt> {
    let mut usage: Option<Option<TraceUsage>> = None;
    for _ in 0..MAX_LEDGER_ROUNDS {
        let now = deps.clock.now();
        let entry = deps.ledger.entry(trace_id).await?;
        if let Some(e) = &entry {
            match e.state {
                LedgerState::Claimed => match resume_claim(deps, inv, e, now).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                },
                LedgerState::Ambiguous => {
                    warn!(
                        trace_id,
                        "ledger entry is ambiguous: an operator must settle it; not billed"
                    );
                    return Ok(Outcome::Ambiguous);
                }
                _ => {}
            }
        }
        if usage.is_none() {
            usage = Some(deps.usage.trace_usage(trace_id).await?);
        }
        let Some(Some(trace)) = &usage else {
            return Err(Error::permanent(
                FailureReason::TraceNotFound,
                format!(
                    "trace {trace_id} not found in Langfuse ({:?} API at {})",
                    deps.config.langfuse.api, deps.config.langfuse.base_url
                ),
            )
            .into());
        };
        match claim_and_deliver(deps, inv, trace, entry.as_ref(), now).await? {
            Some(outcome) => return Ok(outcome),
            None => continue,
        }
    }
    Ok(Outcome::Retry {
        detail: format!("ledger entry of trace {trace_id} kept changing under concurrent writers"),
        after: None,
    })
}

/// A claimed revision found in the ledger. `None`: the entry changed, read it again.
async fn resume_claim(
    deps: &Deps<'_>,
    inv: &Invocation,
    entry: &LedgerEntry,
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, Halt> {
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
            return Ok(Some(Outcome::Ambiguous));
        }
        return Ok(None);
    }
    if p.lease_until > now {
        let wait = (p.lease_until - now).to_std().unwrap_or_default();
        return Ok(Some(Outcome::Retry {
            detail: format!(
                "trace {trace_id} revision {} is being processed by another invocation until {}",
                p.revision, p.lease_until
            ),
            after: Some(wait),
        }));
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
    let p = PendingClaim { lease_until, ..p };
    let lock = inv.lock_for(&p.customer_id);
    let _guard = lock.lock().await;
    let policy = policy_for(deps, inv, &p.customer_id).await?;
    deliver(deps, trace_id, &p, &policy, true).await.map(Some)
}

/// Prices the trace and claims the difference to what the ledger already covers.
/// `None`: the ledger entry changed under us, read it again.
async fn claim_and_deliver(
    deps: &Deps<'_>,
    inv: &Invocation,
    usage: &TraceUsage,
    entry: Option<&LedgerEntry>,
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, Halt> {
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
        return Ok(Some(Outcome::AlreadyBilled));
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
    let delta = quote.credits - prev_total;
    let revision = prev_revision + 1;
    let expect = match entry {
        None => Expect::Absent,
        Some(e) => Expect::Version(e.version),
    };
    let lock = inv.lock_for(&customer_id);
    let _guard = lock.lock().await;
    let mut used = 0u64;
    for _ in 0..MAX_CLAIM_TRIES {
        let split = policy.split(used, delta);
        let pending = PendingClaim {
            revision,
            identifier: ledger_domain::identifier(trace_id, revision),
            customer_id: customer_id.clone(),
            billable: split.billable,
            capped: split.capped,
            total_after: quote.credits,
            event_timestamp: usage.timestamp.min(now).timestamp(),
            period: period.clone(),
            claimed_at: now,
            lease_until: inv.deadline + cfg.process.lease_margin,
        };
        let claim = Claim {
            trace_id: trace_id.to_string(),
            expect,
            pending: pending.clone(),
            hard_limit: policy.hard_limit(),
            limit: policy.limit,
            usage_at: usage.timestamp,
            last_observation_at: usage.last_observation_at,
            seen: SeenUsage {
                cost_usd: usage.ai_cost_usd,
                latency_seconds: usage.latency_seconds,
                observations: usage.observation_count,
            },
            now,
        };
        match deps.ledger.claim(&claim).await? {
            ClaimResult::Claimed => {
                if pending.billable == 0 && pending.capped == 0 {
                    info!(
                        trace_id,
                        "trace costs no credits: recorded, nothing to send"
                    );
                    return Ok(Some(Outcome::Metered {
                        billable: 0,
                        capped: 0,
                        resumed: false,
                    }));
                }
                if pending.billable == 0 {
                    info!(trace_id, customer = %customer_id, capped = pending.capped, period = %period,
                          "usage over the hard limit: recorded as capped, not billed");
                    check_budget(deps, &customer_id, &period, &policy).await?;
                    return Ok(Some(Outcome::Capped {
                        capped: pending.capped,
                    }));
                }
                deps.faults.check(Step::AfterClaim, trace_id)?;
                return deliver(deps, trace_id, &pending, &policy, false)
                    .await
                    .map(Some);
            }
            ClaimResult::OverBudget { used: now_used } => used = now_used,
            ClaimResult::Conflict => tokio::task::yield_now().await,
            ClaimResult::LedgerChanged => return Ok(None),
        }
    }
    Ok(Some(Outcome::Retry {
        detail: format!("budget of {customer_id} in {period} is under heavy contention"),
        after: None,
    }))
}

/// Sends the claimed revision to Stripe and marks it metered.
async fn deliver(
    deps: &Deps<'_>,
    trace_id: &str,
    p: &PendingClaim,
    policy: &BudgetPolicy,
    resumed: bool,
) -> Result<Outcome, Halt> {
    let event = MeterEvent {
        identifier: p.identifier.clone(),
        customer_id: p.customer_id.clone(),
        value: p.billable,
        timestamp: p.event_timestamp,
    };
    match deps.meter.send(&event).await {
        Ok(Delivery::Recorded) => {}
        Ok(Delivery::AlreadyRecorded) => {
            info!(trace_id, identifier = %p.identifier, "Stripe already had this event: treated as delivered");
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
            return Ok(Outcome::Permanent(reason));
        }
        Err(e) => {
            if let Err(release) = deps
                .ledger
                .release(trace_id, p.revision, deps.clock.now())
                .await
            {
                warn!(trace_id, error = %release, "could not release the claim's lease; the retry waits for it");
            }
            return Ok(Outcome::Retry {
                after: e.retry_after(),
                detail: e.to_string(),
            });
        }
    }
    deps.faults.check(Step::AfterStripe, trace_id)?;
    let now = deps.clock.now();
    if !deps.ledger.mark_metered(trace_id, p, now).await? {
        warn!(
            trace_id,
            revision = p.revision,
            "revision was already marked by another invocation"
        );
    }
    info!(trace_id, customer = %p.customer_id, revision = p.revision, credits = p.billable,
          capped = p.capped, identifier = %p.identifier, resumed, "metered");
    check_budget(deps, &p.customer_id, &p.period, policy).await?;
    if deps.config.langfuse.score_enabled
        && let Err(e) = deps
            .usage
            .record_billed(trace_id, &p.identifier, p.total_after)
            .await
    {
        warn!(trace_id, error = %e, "could not mark the trace in Langfuse (best effort)");
    }
    Ok(Outcome::Metered {
        billable: p.billable,
        capped: p.capped,
        resumed,
    })
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

    fn config(base: u32, max: u32) -> Config {
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
        Config::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
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
