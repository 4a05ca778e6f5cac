//! Faults on the ledger port, by wrapping it (the wrapper never changes a write it lets
//! through):
//! - a process invocation that dies right after it recorded a budget event (the conditional
//!   put succeeded, nothing after it ran), as a Lambda timeout or crash there would cut it
//!   short: [`invoke_dying_after_budget_event`] drops the handler's future;
//! - batch claims that meet another writer's transaction (DynamoDB's `TransactionConflict`,
//!   which moto, serialising every call, never answers): [`invoke_with_claim_conflicts`].

use crate::harness::TestStack;
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use process::Deps;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use tracemeter::Result;
use tracemeter::domain::budget::{BudgetPolicy, BudgetUsage};
use tracemeter::domain::budget_event::BudgetEvent;
use tracemeter::domain::claim::{ClaimBatch, ClaimResult, FailureKey};
use tracemeter::domain::ledger::{LedgerEntry, PendingClaim};
use tracemeter::error::FailureReason;
use tracemeter::ports::{BudgetStore, ClaimStore, CustomerDirectory, DeliveryStore, Ledger};

/// What goes wrong.
enum Fault {
    /// Dies after the first budget event it records.
    DieAfterBudgetEvent,
    /// Answers `Conflict` to this many batch claims (without writing), then claims.
    ClaimConflicts(AtomicUsize),
}

/// A ledger with one fault.
pub struct FaultyLedger<'a> {
    inner: &'a dyn Ledger,
    fault: Fault,
    died: Notify,
    claims: AtomicUsize,
}

impl<'a> FaultyLedger<'a> {
    fn new(inner: &'a dyn Ledger, fault: Fault) -> FaultyLedger<'a> {
        FaultyLedger {
            inner,
            fault,
            died: Notify::new(),
            claims: AtomicUsize::new(0),
        }
    }

    async fn die(&self) -> ! {
        self.died.notify_one();
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes")
    }

    async fn after_budget_event(&self, recorded: bool) {
        if recorded && matches!(self.fault, Fault::DieAfterBudgetEvent) {
            self.die().await;
        }
    }
}

/// Runs the real handler on `event` with a ledger that dies right after the first budget
/// event it records. `None`: the invocation died there (its future dropped, the batch comes
/// back after the visibility timeout); `Some`: it recorded no event and answered.
pub async fn invoke_dying_after_budget_event(
    stack: &TestStack,
    event: SqsEvent,
) -> Option<SqsBatchResponse> {
    let ledger = FaultyLedger::new(&stack.ledger, Fault::DieAfterBudgetEvent);
    let deps = Deps {
        ledger: &ledger,
        ..stack.deps()
    };
    let deadline = tracemeter::clock::Clock::now(&stack.clock) + chrono::Duration::seconds(30);
    tokio::select! {
        biased;
        () = ledger.died.notified() => None,
        handled = process::handle(&deps, event, deadline) => Some(handled.response),
    }
}

/// Runs the real handler on `event` with a ledger whose first `conflicts` batch claims meet
/// another writer's transaction; its response, and how many batch claims it tried.
pub async fn invoke_with_claim_conflicts(
    stack: &TestStack,
    event: SqsEvent,
    conflicts: usize,
) -> (SqsBatchResponse, usize) {
    let ledger = FaultyLedger::new(
        &stack.ledger,
        Fault::ClaimConflicts(AtomicUsize::new(conflicts)),
    );
    let deps = Deps {
        ledger: &ledger,
        ..stack.deps()
    };
    let deadline = tracemeter::clock::Clock::now(&stack.clock) + chrono::Duration::seconds(30);
    let handled = process::handle(&deps, event, deadline).await;
    (handled.response, ledger.claims.load(Ordering::Relaxed))
}

#[async_trait]
impl BudgetStore for FaultyLedger<'_> {
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>> {
        self.inner.budget_policy(customer_id).await
    }
    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        self.inner.budget_usage(customer_id, period).await
    }
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool> {
        let recorded = self.inner.record_budget_event(event).await?;
        self.after_budget_event(recorded).await;
        Ok(recorded)
    }
    async fn clear_exceeded(&self, event: &BudgetEvent) -> Result<bool> {
        let cleared = self.inner.clear_exceeded(event).await?;
        self.after_budget_event(cleared).await;
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
impl ClaimStore for FaultyLedger<'_> {
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>> {
        self.inner.entry(trace_id).await
    }
    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult> {
        self.claims.fetch_add(1, Ordering::Relaxed);
        if let Fault::ClaimConflicts(left) = &self.fault {
            let take = |n: usize| n.checked_sub(1);
            if left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
                .is_ok()
            {
                return Ok(ClaimResult::Conflict);
            }
        }
        self.inner.claim_batch(batch).await
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
impl DeliveryStore for FaultyLedger<'_> {
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
impl CustomerDirectory for FaultyLedger<'_> {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        self.inner.customer_for_user(user_id).await
    }
}
