//! The processor's rules, GIVEN / WHEN / THEN, on the in-memory adapters of
//! `tracemeter::testing` (no moto, no HTTP): the same rules `tests/tests/it/process.rs`
//! checks end to end on the local stack, in milliseconds.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use process::Deps;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracemeter::clock::{Clock, OffsetClock};
use tracemeter::config::ProcessConfig;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, BudgetUsage, Period};
use tracemeter::domain::claim::{BilledUsage, Claim, ClaimBatch, ClaimResult, Expect, Settled};
use tracemeter::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use tracemeter::domain::message::MeterMessage;
use tracemeter::domain::meter::{MeterEvent, identifier};
use tracemeter::domain::usage::TraceUsage;
use tracemeter::ports::{BudgetStore, ClaimStore, MeterSink};
use tracemeter::testing::{MemoryLedger, MemoryMeter, MemoryQueue, MemoryUsage, StripeMode};

/// 0.004 USD, no latency: 100 credits at the default 0.00004 USD a credit.
const C_0004: u64 = 100;

/// Everything the handler talks to, in memory.
struct World {
    config: ProcessConfig,
    clock: Arc<OffsetClock>,
    usage: MemoryUsage,
    meter: MemoryMeter,
    ledger: MemoryLedger,
    queue: MemoryQueue,
}

/// The configuration the handler reads from its environment: the minimum plus `vars`.
fn config(vars: &[(&str, &str)]) -> ProcessConfig {
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("LANGFUSE_BASE_URL", "http://127.0.0.1:1"),
        ("LANGFUSE_PUBLIC_KEY", "pk"),
        ("LANGFUSE_SECRET_KEY", "sk"),
        ("STRIPE_SECRET_KEY", "sk_test_x"),
        ("STRIPE_METER_EVENT_NAME", "llm_credits"),
        ("TABLE_NAME", "ledger"),
        ("QUEUE_URL", "http://127.0.0.1:1/queue"),
        ("RETRY_BASE_SECONDS", "10"),
        ("RETRY_MAX_SECONDS", "300"),
    ]);
    env.extend(vars.iter().copied());
    ProcessConfig::from_lookup(&|k| env.get(k).map(|v| v.to_string())).expect("valid configuration")
}

impl World {
    /// Stripe's v1 API, default configuration.
    fn new() -> World {
        World::with(&[], StripeMode::V1)
    }

    fn with(vars: &[(&str, &str)], mode: StripeMode) -> World {
        let clock = Arc::new(OffsetClock::new());
        World {
            config: config(vars),
            meter: MemoryMeter::new(clock.clone(), mode),
            clock,
            usage: MemoryUsage::new(),
            ledger: MemoryLedger::new(),
            queue: MemoryQueue::new(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        let now = self.clock.now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }

    /// A trace in Langfuse: `cost_usd` of model cost, billed to `customer` by metadata.
    fn trace(&self, id: &str, customer: &str, cost_usd: &str, at: DateTime<Utc>) {
        let mut usage = usage(id, cost_usd, at);
        usage
            .metadata
            .insert("stripeCustomerId".into(), customer.into());
        self.usage.put(usage);
    }

    /// Runs the handler on one SQS batch of these bodies (message ids `m0`, `m1`, ...).
    async fn deliver(&self, bodies: &[String]) -> SqsBatchResponse {
        self.deliver_until(bodies, self.clock.now() + Duration::seconds(30))
            .await
    }

    /// Runs the handler on one SQS batch with this invocation deadline.
    async fn deliver_until(&self, bodies: &[String], deadline: DateTime<Utc>) -> SqsBatchResponse {
        process::handle(&self.deps(), event(bodies), deadline)
            .await
            .response
    }

    /// The handler's ports: this world's adapters.
    fn deps(&self) -> Deps<'_> {
        Deps {
            config: &self.config,
            usage: &self.usage,
            meter: &self.meter,
            ledger: &self.ledger,
            prices: &self.ledger,
            redelivery: &self.queue,
            clock: &*self.clock,
        }
    }

    /// Runs the handler on one batch with a message for each trace id.
    async fn meter(&self, trace_ids: &[&str]) -> SqsBatchResponse {
        let bodies: Vec<String> = trace_ids.iter().map(|id| body(id)).collect();
        self.deliver(&bodies).await
    }

    async fn entry(&self, trace_id: &str) -> LedgerEntry {
        self.ledger
            .entry(trace_id)
            .await
            .expect("ledger read")
            .unwrap_or_else(|| panic!("no ledger entry for {trace_id}"))
    }

    /// The customer's budget counter in the month of `at`.
    async fn budget(&self, customer: &str, at: DateTime<Utc>) -> BudgetUsage {
        let period = Period::Month.key(at);
        self.ledger
            .budget_usage(customer, &period)
            .await
            .expect("budget read")
    }

    /// A claim of `credits` for `trace_id`'s first revision made `ago` by an invocation that
    /// died before settling it, its lease ending at `lease_until`.
    async fn interrupted_claim(
        &self,
        trace_id: &str,
        customer: &str,
        at: DateTime<Utc>,
        ago: Duration,
        lease_until: DateTime<Utc>,
    ) -> PendingClaim {
        let claimed_at = self.now() - ago;
        let pending = PendingClaim {
            revision: 1,
            identifier: identifier(trace_id, 1),
            customer_id: customer.to_string(),
            billable: C_0004,
            capped: 0,
            total_after: C_0004,
            event_timestamp: at.timestamp(),
            period: Period::Month.key(at),
            claimed_at,
            lease_until,
            receipt: Some("dead-invocation-0".into()),
        };
        let claim = Claim {
            trace_id: trace_id.to_string(),
            expect: Expect::Absent,
            settled: Settled::default(),
            pending: pending.clone(),
            usage_at: at,
            last_observation_at: Some(at),
            seen: BilledUsage::default(),
            price_version: None,
        };
        let batch = ClaimBatch {
            customer_id: customer.to_string(),
            period: pending.period.clone(),
            hard_limit: None,
            limit: None,
            claims: vec![claim],
            now: claimed_at,
        };
        let result = self.ledger.claim_batch(&batch).await.expect("claim");
        assert_eq!(result, ClaimResult::Claimed);
        pending
    }
}

/// Langfuse usage of one generation costing `cost_usd`, no latency, no customer.
fn usage(id: &str, cost_usd: &str, at: DateTime<Utc>) -> TraceUsage {
    TraceUsage {
        trace_id: id.to_string(),
        timestamp: at,
        latency_seconds: Decimal::ZERO,
        ai_cost_usd: cost_usd.parse().expect("a decimal"),
        user_id: None,
        metadata: BTreeMap::new(),
        observation_count: 1,
        last_observation_at: Some(at),
        tokens: Vec::new(),
    }
}

fn body(trace_id: &str) -> String {
    MeterMessage::new(trace_id).to_body()
}

/// An SQS event of these bodies, received for the first time.
fn event(bodies: &[String]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("m{i}"));
            m.receipt_handle = Some(format!("receipt-m{i}"));
            m.body = Some(b.clone());
            m.attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            m
        })
        .collect();
    event
}

/// The message ids the handler asked to retry.
fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn hard(limit: u64) -> BudgetPolicy {
    BudgetPolicy {
        limit: Some(limit),
        period: Period::Month,
        mode: BudgetMode::Hard,
        thresholds: vec![50, 80, 100],
    }
}

fn an_hour_ago(world: &World) -> DateTime<Utc> {
    world.now() - Duration::hours(1)
}

#[path = "handler/billing.rs"]
mod billing;
#[path = "handler/budgets.rs"]
mod budgets;
#[path = "handler/deadline.rs"]
mod deadline;
#[path = "handler/deferrals.rs"]
mod deferrals;
#[path = "handler/failures.rs"]
mod failures;
#[path = "handler/prices.rs"]
mod prices;
#[path = "handler/reads.rs"]
mod reads;
#[path = "handler/resume.rs"]
mod resume;
