//! A claim: the conditional write that moves a trace's ledger entry to a new revision and
//! adds its credits to the customer's budget counter, all or nothing.

use crate::domain::ledger::{LedgerEntry, PendingClaim};
use chrono::{DateTime, Utc};

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
    pub seen: BilledUsage,
    /// The price version the revision was priced with, recorded on the entry: every later
    /// revision of the trace is priced with it.
    pub price_version: Option<String>,
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
pub struct BilledUsage {
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
