//! Faults on the ledger port, by wrapping it ([`tracemeter::testing::FaultyLedger`], which
//! never changes a write it lets through):
//! - a process invocation that dies right after it recorded a budget event (the conditional
//!   put succeeded, nothing after it ran), as a Lambda timeout or crash there would cut it
//!   short: [`invoke_dying_after_budget_event`] drops the handler's future;
//! - batch claims that meet another writer's transaction (DynamoDB's `TransactionConflict`,
//!   which moto, serialising every call, never answers): [`invoke_with_claim_conflicts`].

use crate::harness::TestStack;
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use process::Deps;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use tracemeter::domain::claim::ClaimResult;
use tracemeter::testing::{FaultyLedger, LedgerFaults};

/// Dies after the first budget event it records.
#[derive(Default)]
struct DieAfterBudgetEvent {
    died: Notify,
}

#[async_trait]
impl LedgerFaults for DieAfterBudgetEvent {
    async fn after_budget_event(&self, recorded: bool) {
        if recorded {
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// Answers `Conflict` to the first `left` batch claims (without writing), then claims;
/// counts the batch claims tried.
struct ClaimConflicts {
    left: AtomicUsize,
    claims: AtomicUsize,
}

impl LedgerFaults for ClaimConflicts {
    fn claim_batch(&self) -> Option<ClaimResult> {
        self.claims.fetch_add(1, Ordering::Relaxed);
        let take = |n: usize| n.checked_sub(1);
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .ok()
            .map(|_| ClaimResult::Conflict)
    }
}

/// Runs the real handler on `event` with a ledger that dies right after the first budget
/// event it records. `None`: the invocation died there (its future dropped, the batch comes
/// back after the visibility timeout); `Some`: it recorded no event and answered.
pub async fn invoke_dying_after_budget_event(
    stack: &TestStack,
    event: SqsEvent,
) -> Option<SqsBatchResponse> {
    let ledger = FaultyLedger {
        inner: &stack.ledger,
        faults: DieAfterBudgetEvent::default(),
    };
    let deps = Deps {
        ledger: &ledger,
        ..stack.deps()
    };
    let deadline = tracemeter::clock::Clock::now(&stack.clock) + chrono::Duration::seconds(30);
    tokio::select! {
        biased;
        () = ledger.faults.died.notified() => None,
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
    let ledger = FaultyLedger {
        inner: &stack.ledger,
        faults: ClaimConflicts {
            left: AtomicUsize::new(conflicts),
            claims: AtomicUsize::new(0),
        },
    };
    let deps = Deps {
        ledger: &ledger,
        ..stack.deps()
    };
    let deadline = tracemeter::clock::Clock::now(&stack.clock) + chrono::Duration::seconds(30);
    let handled = process::handle(&deps, event, deadline).await;
    (
        handled.response,
        ledger.faults.claims.load(Ordering::Relaxed),
    )
}
