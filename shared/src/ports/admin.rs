//! What an operator's tooling needs of the ledger table beyond what the handlers use:
//! finding the entries that need attention, settling ambiguous claims, and writing the
//! operator's items (budget policies, user mappings).

use crate::domain::attention::{AttentionEntry, AttentionQuery, MessageFailure};
use crate::domain::budget::{BudgetPolicy, BudgetUsage};
use crate::domain::ledger::PendingClaim;
use crate::domain::meter_errors::Rejection;
use crate::domain::reconcile::BilledTotals;
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Failed and ambiguous entries, found through an index (never a table scan).
#[async_trait]
pub trait AttentionIndex: Send + Sync {
    /// The entries the query asks for, oldest write first.
    async fn needing_attention(&self, query: &AttentionQuery) -> Result<Vec<AttentionEntry>>;
}

/// The records of malformed messages (no trace to replay): listed, and deleted once read.
#[async_trait]
pub trait MessageFailures: Send + Sync {
    /// The records written at or after `since` (every one when `None`), oldest first,
    /// through the attention index.
    async fn failed_messages(&self, since: Option<DateTime<Utc>>) -> Result<Vec<MessageFailure>>;
    /// Deletes a message's record; false when there was none.
    async fn forget_message(&self, message_id: &str) -> Result<bool>;
}

/// What the entry view leaves out.
#[async_trait]
pub trait LedgerInspection: Send + Sync {
    /// The budget period a trace's credits were last counted in: its pending revision's, else
    /// the one its last committed revision was counted in.
    async fn counted_period(&self, trace_id: &str) -> Result<Option<String>>;
}

/// Totals for reconciling the ledger with Stripe and the budget counters.
#[async_trait]
pub trait LedgerTotals: Send + Sync {
    /// Per customer, the credits of revisions known delivered and of claims not known
    /// delivered (in flight or ambiguous), for usage in `[start, end)`: a read of every trace
    /// entry (and the receipts of claimed ones), for an occasional operator check.
    async fn billed_by_customer(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<BTreeMap<String, BilledTotals>>;
    /// Every budget counter of a customer, by period key.
    async fn counters(&self, customer_id: &str) -> Result<BTreeMap<String, BudgetUsage>>;
}

/// Settling an ambiguous claim once an operator knows whether Stripe has its event.
#[async_trait]
pub trait AmbiguousSettlement: Send + Sync {
    /// Stripe has the event: the ambiguous revision becomes metered, exactly as marking a
    /// claim delivered would (its credits stay counted). False when the entry is not
    /// ambiguous at this revision (anymore).
    async fn settle_delivered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Stripe does not have the event: the entry becomes failed (`not_delivered`) and the
    /// revision's credits go back to the budget, in one transaction, so a replay bills it.
    /// False when the entry is not ambiguous at this revision (anymore).
    async fn settle_not_delivered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

/// Recording what Stripe's asynchronous validation dropped.
#[async_trait]
pub trait StripeRejections: Send + Sync {
    /// The revision `revision` of a trace, whose event `identifier` Stripe accepted and then
    /// dropped, becomes `failed` (`stripe_rejected`, `detail`) and its credits go back to the
    /// budget counter they were counted in, in one transaction conditional on the entry's
    /// version. Exactly once: a second call answers [`Rejection::AlreadyRejected`].
    async fn reject_delivered(
        &self,
        trace_id: &str,
        revision: u32,
        identifier: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<Rejection>;
}

/// The operator's items: budget policies and user-to-customer mappings.
#[async_trait]
pub trait CustomerAdmin: Send + Sync {
    /// Writes a customer's budget policy (replacing any).
    async fn set_budget_policy(&self, customer_id: &str, policy: &BudgetPolicy) -> Result<()>;
    /// Every configured budget policy, by customer.
    async fn budget_policies(&self) -> Result<Vec<(String, BudgetPolicy)>>;
    /// The alert thresholds (percent) recorded for a customer's period, ascending.
    async fn budget_alerts(&self, customer_id: &str, period: &str) -> Result<Vec<u32>>;
    /// Maps a Langfuse user id to a Stripe customer (replacing any mapping).
    async fn map_user(&self, user_id: &str, customer_id: &str) -> Result<()>;
    /// Removes a user's mapping; the customer it was mapped to, if any.
    async fn unmap_user(&self, user_id: &str) -> Result<Option<String>>;
}

/// The whole ledger as an operator's tooling uses it.
pub trait OperatorLedger:
    super::Ledger
    + super::PriceBook
    + AttentionIndex
    + MessageFailures
    + LedgerInspection
    + LedgerTotals
    + AmbiguousSettlement
    + StripeRejections
    + CustomerAdmin
{
}

impl<T> OperatorLedger for T where
    T: super::Ledger
        + super::PriceBook
        + AttentionIndex
        + MessageFailures
        + LedgerInspection
        + LedgerTotals
        + AmbiguousSettlement
        + StripeRejections
        + CustomerAdmin
{
}
