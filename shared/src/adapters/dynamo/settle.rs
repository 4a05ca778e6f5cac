//! Settling ambiguous claims: the same writes as a delivered or failed claim, conditional on
//! the entry being ambiguous at that revision.

use super::DynamoLedger;
use crate::domain::ledger::{LedgerState, PendingClaim};
use crate::error::{FailureReason, Result};
use crate::ports::AmbiguousSettlement;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl AmbiguousSettlement for DynamoLedger {
    async fn settle_delivered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.metered_from(LedgerState::Ambiguous, trace_id, pending, now)
            .await
    }

    async fn settle_not_delivered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let failure = (FailureReason::NotDelivered, detail);
        self.failed_from(LedgerState::Ambiguous, trace_id, pending, failure, now)
            .await
    }
}
