//! The small traits the handlers depend on. Adapters implement them against the real
//! services; tests can implement them in memory.

use crate::domain::budget::BudgetPolicy;
use crate::domain::ledger::{LedgerEntry, PendingClaim};
use crate::domain::usage::TraceUsage;
use crate::error::{FailureReason, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Reads usage from Langfuse (either API generation).
#[async_trait]
pub trait UsageSource: Send + Sync {
    /// The trace's usage, or `None` when Langfuse does not know the trace.
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>>;

    /// Marks a billed trace in Langfuse (a score with a deterministic id, so it upserts).
    async fn record_billed(&self, trace_id: &str, identifier: &str, credits: u64) -> Result<()>;
}

/// One Stripe meter event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    /// Deterministic identifier, also used as the `Idempotency-Key`.
    pub identifier: String,
    /// The Stripe customer.
    pub customer_id: String,
    /// Whole credits.
    pub value: u64,
    /// Usage time, Unix seconds.
    pub timestamp: i64,
}

/// What Stripe said about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Recorded now.
    Recorded,
    /// Stripe already had an event with this identifier: delivered before.
    AlreadyRecorded,
}

/// Sends meter events to Stripe.
#[async_trait]
pub trait MeterSink: Send + Sync {
    /// Sends one event.
    async fn send(&self, event: &MeterEvent) -> Result<Delivery>;

    /// Whether [`MeterSink::send_batch`] sends many events per request (the v2 stream). When
    /// false, events go one per request and one customer's must not overlap (Stripe allows
    /// one concurrent v1 call per customer and meter).
    fn batches(&self) -> bool {
        false
    }

    /// Sends events, one result per event in order. Default: one at a time, in order.
    async fn send_batch(&self, events: &[MeterEvent]) -> Vec<Result<Delivery>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(self.send(e).await);
        }
        out
    }
}

/// What a claim expects the ledger to look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No entry exists yet.
    Absent,
    /// The entry has this version.
    Version(u64),
}

/// One trace's part of a claim: advance its ledger entry from what it covers to the new
/// revision.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The trace.
    pub trace_id: String,
    /// The ledger precondition.
    pub expect: Expect,
    /// What the entry covers before this claim, written as absolute values (safe: the claim is
    /// conditional on the version they were read at).
    pub settled: Settled,
    /// The revision being claimed.
    pub pending: PendingClaim,
    /// Usage time, for the ledger.
    pub usage_at: DateTime<Utc>,
    /// Newest observation time included.
    pub last_observation_at: Option<DateTime<Utc>>,
    /// The usage as seen, so ingest can tell whether a trace changed since it was billed:
    /// Langfuse's model cost (USD, before the BYO-key rule), latency (s), observation count.
    pub seen: SeenUsage,
}

/// What a ledger entry covers before a claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Revisions delivered (or capped).
    pub revision: u32,
    /// Credits covered.
    pub total_credits: u64,
    /// Credits billed.
    pub billed_credits: u64,
    /// Credits capped.
    pub capped_credits: u64,
    /// A delivered identifier known only from its receipt, to fold into the item.
    pub receipted: Option<String>,
}

impl Settled {
    /// What `entry` covers (nothing when there is no entry).
    pub fn of(entry: Option<&LedgerEntry>) -> Settled {
        entry
            .map(|e| Settled {
                revision: e.revision,
                total_credits: e.total_credits,
                billed_credits: e.billed_credits,
                capped_credits: e.capped_credits,
                receipted: e.receipted.clone(),
            })
            .unwrap_or_default()
    }
}

/// Claims of one customer and budget period, committed together: every ledger entry and ONE
/// budget counter update with the summed credits, in one transaction.
#[derive(Debug, Clone)]
pub struct ClaimBatch {
    /// The customer.
    pub customer_id: String,
    /// The budget period key.
    pub period: String,
    /// The hard limit to enforce on the counter, if any.
    pub hard_limit: Option<u64>,
    /// The policy's limit (hard or soft), stored on the counter for readers.
    pub limit: Option<u64>,
    /// The claims (at most [`MAX_CLAIMS_PER_BATCH`]), each of this customer and period.
    pub claims: Vec<Claim>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// DynamoDB transactions hold at most 100 items: 99 ledger entries and the counter.
pub const MAX_CLAIMS_PER_BATCH: usize = 99;

/// What the ledger remembers of the usage it billed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeenUsage {
    /// Model cost in USD as Langfuse reported it.
    pub cost_usd: rust_decimal::Decimal,
    /// Latency in seconds.
    pub latency_seconds: rust_decimal::Decimal,
    /// Number of observations.
    pub observations: u32,
}

/// The outcome of a batch claim. Nothing is written unless it is `Claimed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResult {
    /// All claimed (those with nothing billable committed as capped at once).
    Claimed,
    /// These claims (indices into `claims`) found their ledger entry changed since it was read.
    LedgerChanged(Vec<usize>),
    /// The hard limit would be passed; `used` is the counter's current value.
    OverBudget {
        /// Credits already counted in the period.
        used: u64,
    },
    /// Another transaction touched the same items at the same time: try again.
    Conflict,
}

/// A budget counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetUsage {
    /// Credits billed in the period.
    pub used: u64,
    /// Credits capped in the period.
    pub capped: u64,
    /// Whether the hard limit was reached.
    pub exceeded: bool,
}

/// Where a permanent failure is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKey {
    /// A trace's ledger entry.
    Trace(String),
    /// A message that named no usable trace.
    Message {
        /// The SQS message id.
        message_id: String,
        /// The body, truncated.
        body: String,
    },
}

/// The ledger, budgets, customer mapping and alerts (DynamoDB in production).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// The trace's entry, read consistently.
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>>;
    /// Claims revisions of one customer and period (ledger entries + one budget counter
    /// update, in one transaction).
    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult>;
    /// Records in one write that the claimed revisions with these identifiers, claimed with
    /// this receipt, were delivered to Stripe (the batch counterpart of `mark_metered`).
    async fn record_delivered(
        &self,
        receipt: &str,
        identifiers: &[String],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Takes over an expired claim. False when it is not claimable (anymore).
    async fn take_over(
        &self,
        trace_id: &str,
        revision: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Ends a claim's lease early (after a transient failure) so a retry can resume at once.
    async fn release(&self, trace_id: &str, revision: u32, now: DateTime<Utc>) -> Result<()>;
    /// Marks a claimed revision delivered. False when it was not claimed (anymore).
    async fn mark_metered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records a permanent failure of a claimed revision and gives its credits back to the
    /// budget, in one transaction.
    async fn fail_claim(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Marks a claim that outlived Stripe's dedup window as ambiguous.
    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        revision: u32,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records a permanent failure that happened before any claim.
    async fn record_failure(
        &self,
        key: &FailureKey,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The customer's own budget, if configured in the table.
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>>;
    /// The customer mapped to a Langfuse user id, if any.
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>>;
    /// A budget counter.
    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage>;
    /// Records that a threshold was crossed. True only for the one caller that created it.
    async fn record_alert(
        &self,
        customer_id: &str,
        period: &str,
        threshold: u32,
        usage: BudgetUsage,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Sets the exceeded flag an LLM gateway can read.
    async fn set_exceeded(&self, customer_id: &str, period: &str, now: DateTime<Utc>)
    -> Result<()>;
}

/// Delays redelivery of failed messages (SQS `ChangeMessageVisibility`).
#[async_trait]
pub trait Redelivery: Send + Sync {
    /// Sets each receipt handle's visibility timeout, in seconds.
    async fn delay(&self, items: &[(String, i32)]) -> Result<()>;
}
