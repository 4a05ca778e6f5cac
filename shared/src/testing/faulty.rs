//! A ledger with planted faults: [`FaultyLedger`] wraps any [`Ledger`] and asks its
//! [`LedgerFaults`] before (or after) the calls a fault can hit. It never changes a write it
//! lets through.

use crate::Result;
use crate::domain::budget::{BudgetPolicy, BudgetUsage};
use crate::domain::budget_event::BudgetEvent;
use crate::domain::claim::{ClaimBatch, ClaimResult, FailureKey};
use crate::domain::ledger::{LedgerEntry, PendingClaim};
use crate::error::FailureReason;
use crate::ports::{BudgetStore, ClaimStore, CustomerDirectory, DeliveryStore, Ledger};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What goes wrong, call by call. Every hook defaults to "nothing".
#[async_trait]
pub trait LedgerFaults: Send + Sync {
    /// Before a budget counter read (the alert check's first step): an error answers it.
    fn budget_usage(&self) -> Result<()> {
        Ok(())
    }
    /// After a budget event was written (`recorded`) or a limit cleared: may never return,
    /// as an invocation dying there.
    async fn after_budget_event(&self, _recorded: bool) {}
    /// Before a batch claim: `Some` answers it without writing.
    fn claim_batch(&self) -> Option<ClaimResult> {
        None
    }
}

/// `inner` with `faults` planted.
pub struct FaultyLedger<'a, F> {
    /// The ledger the calls go to.
    pub inner: &'a dyn Ledger,
    /// What goes wrong.
    pub faults: F,
}

#[async_trait]
impl<F: LedgerFaults> BudgetStore for FaultyLedger<'_, F> {
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>> {
        self.inner.budget_policy(customer_id).await
    }
    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        self.faults.budget_usage()?;
        self.inner.budget_usage(customer_id, period).await
    }
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool> {
        let recorded = self.inner.record_budget_event(event).await?;
        self.faults.after_budget_event(recorded).await;
        Ok(recorded)
    }
    async fn clear_exceeded(&self, event: &BudgetEvent) -> Result<bool> {
        let cleared = self.inner.clear_exceeded(event).await?;
        self.faults.after_budget_event(cleared).await;
        Ok(cleared)
    }
    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        episode: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .set_exceeded(customer_id, period, episode, now)
            .await
    }
}

#[async_trait]
impl<F: LedgerFaults> ClaimStore for FaultyLedger<'_, F> {
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>> {
        self.inner.entry(trace_id).await
    }
    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult> {
        match self.faults.claim_batch() {
            Some(answer) => Ok(answer),
            None => self.inner.claim_batch(batch).await,
        }
    }
    async fn entries(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerEntry>> {
        self.inner.entries(trace_ids).await
    }
    async fn take_over(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .take_over(trace_id, pending, now, lease_until)
            .await
    }
    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.mark_ambiguous(trace_id, pending, now).await
    }
    async fn note_seen(&self, trace_id: &str, version: u64, last: DateTime<Utc>) -> Result<bool> {
        self.inner.note_seen(trace_id, version, last).await
    }
}

#[async_trait]
impl<F: LedgerFaults> DeliveryStore for FaultyLedger<'_, F> {
    async fn record_delivered(
        &self,
        receipt: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.inner.record_delivered(receipt, ids, now).await
    }
    async fn mark_metered(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.mark_metered(trace_id, p, now).await
    }
    async fn release(&self, trace_id: &str, revision: u32, now: DateTime<Utc>) -> Result<()> {
        self.inner.release(trace_id, revision, now).await
    }
    async fn fail_claim(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .fail_claim(trace_id, pending, reason, detail, now)
            .await
    }
    async fn record_failure(
        &self,
        key: &FailureKey,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.inner.record_failure(key, reason, detail, now).await
    }
}

#[async_trait]
impl<F: LedgerFaults> CustomerDirectory for FaultyLedger<'_, F> {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        self.inner.customer_for_user(user_id).await
    }
}
