//! The ledger table: trace entries and their claims, deliveries, budgets and the customer
//! mapping (DynamoDB in production). Four small traits, one per concern; [`Ledger`] is all
//! four, for the handler that needs them together.

use crate::domain::budget::{BudgetPolicy, BudgetUsage};
use crate::domain::budget_event::BudgetEvent;
use crate::domain::claim::{ClaimBatch, ClaimResult, FailureKey};
use crate::domain::ledger::{LedgerEntry, PendingClaim};
use crate::error::{FailureReason, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Reading a trace's entry and claiming revisions.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// The trace's entry, read consistently.
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>>;
    /// The entries of these traces that exist (a batch's, in as few reads as the store
    /// allows), read as `entry` reads them but possibly stale: a decision taken on one must
    /// be guarded by a conditional write, or confirmed with `entry` first.
    async fn entries(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerEntry>>;
    /// Claims revisions of one customer and period (ledger entries + one budget counter
    /// update, in one transaction).
    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult>;
    /// Takes over the expired claim `pending` (the entry's, as read). False when it is not
    /// claimable (anymore): another claim, a lease still running, or delivered through its
    /// receipt.
    async fn take_over(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Marks the claim `pending`, which outlived Stripe's dedup window, as ambiguous. False
    /// when it is no longer the entry's claim, or its receipt lists it as delivered.
    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records that the entry (at `version`) covers usage up to `last_observation_at` though
    /// its credits did not grow (a late zero-cost observation), so ingest stops enqueuing it.
    /// Never moves the time back. False when the entry changed or already covers it.
    async fn note_seen(
        &self,
        trace_id: &str,
        version: u64,
        last_observation_at: DateTime<Utc>,
    ) -> Result<bool>;
}

/// Settling claims: delivered, released for a retry, or failed for good.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records in one write that the claimed revisions with these identifiers, claimed with
    /// this receipt, were delivered to Stripe (the batch counterpart of `mark_metered`).
    async fn record_delivered(
        &self,
        receipt: &str,
        identifiers: &[String],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Marks a claimed revision delivered. False when it was not claimed (anymore).
    async fn mark_metered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Ends a claim's lease early (after a transient failure) so a retry can resume at once.
    async fn release(&self, trace_id: &str, revision: u32, now: DateTime<Utc>) -> Result<()>;
    /// Records a permanent failure of a claimed revision and gives its credits back to the
    /// budget, in one transaction. False when `pending` is no longer the entry's claim, or
    /// its receipt lists it as delivered (a delivered revision stays billed).
    async fn fail_claim(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        reason: FailureReason,
        detail: &str,
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
}

/// Budget policies, counters and alerts.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// The customer's own budget, if configured in the table.
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>>;
    /// The own budgets of several customers (`None`: none configured), in as few reads as
    /// the store allows. By default one [`budget_policy`](Self::budget_policy) each.
    async fn budget_policies_of(
        &self,
        customer_ids: &[String],
    ) -> Result<HashMap<String, Option<BudgetPolicy>>> {
        let mut out = HashMap::new();
        for c in customer_ids {
            out.insert(c.clone(), self.budget_policy(c).await?);
        }
        Ok(out)
    }
    /// A budget counter.
    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage>;
    /// Several budget counters, each `(customer, period)` read strongly (a counter not
    /// written yet reads as unused), in as few reads as the store allows. By default one
    /// [`budget_usage`](Self::budget_usage) each.
    async fn budget_usages(
        &self,
        counters: &[(String, String)],
    ) -> Result<HashMap<(String, String), BudgetUsage>> {
        let mut out = HashMap::new();
        for (customer, period) in counters {
            let usage = self.budget_usage(customer, period).await?;
            out.insert((customer.clone(), period.clone()), usage);
        }
        Ok(out)
    }
    /// Records a budget event: one item per customer, period and event key (the threshold,
    /// or the limit episode), created by a conditional put. True only for the one caller
    /// that created it; the item is the event (the table's stream carries it on).
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool>;
    /// Clears the exceeded flag of `event`'s period and ends its limit episode (`clears` +
    /// 1), storing `event.limit` on the counter (removing it for 0, no limit), and records
    /// the `LimitCleared` event of `event.episode` in the same transaction. Only a raised
    /// flag in that episode, and, for a hard limit, only while usage is under it. True only
    /// for the one caller that cleared it.
    async fn clear_exceeded(&self, event: &BudgetEvent) -> Result<bool>;
    /// Sets the exceeded flag an LLM gateway can read, if the period is still in limit
    /// episode `episode` (a clearing since the caller read the counter wins); whether set.
    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        episode: u64,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

/// The Langfuse user id to Stripe customer mapping.
#[async_trait]
pub trait CustomerDirectory: Send + Sync {
    /// The customer mapped to a Langfuse user id, if any.
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>>;
    /// The customers mapped to several users (`None`: not mapped), in as few reads as the
    /// store allows. By default one [`customer_for_user`](Self::customer_for_user) each.
    async fn customers_for_users(
        &self,
        user_ids: &[String],
    ) -> Result<HashMap<String, Option<String>>> {
        let mut out = HashMap::new();
        for u in user_ids {
            out.insert(u.clone(), self.customer_for_user(u).await?);
        }
        Ok(out)
    }
}

/// The whole ledger, as the processing handler uses it.
pub trait Ledger: ClaimStore + DeliveryStore + BudgetStore + CustomerDirectory {}

impl<T: ClaimStore + DeliveryStore + BudgetStore + CustomerDirectory> Ledger for T {}
