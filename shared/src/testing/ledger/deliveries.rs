//! `DeliveryStore`: receipts, marking, releasing and failing claims, recording failures.

use super::claims::{claimed, unsettled};
use super::{FailedMessage, MemoryLedger, StoredTrace, ms, truncate};
use crate::domain::claim::FailureKey;
use crate::domain::ledger::{LedgerState, PendingClaim};
use crate::error::{FailureReason, Result};
use crate::ports::DeliveryStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl DeliveryStore for MemoryLedger {
    async fn record_delivered(
        &self,
        receipt: &str,
        identifiers: &[String],
        _now: DateTime<Utc>,
    ) -> Result<()> {
        if identifiers.is_empty() {
            return Ok(());
        }
        self.state()
            .receipts
            .entry(receipt.to_string())
            .or_default()
            .extend(identifiers.iter().cloned());
        Ok(())
    }

    async fn mark_metered(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        _now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.metered_from(LedgerState::Claimed, trace_id, p))
    }

    async fn release(&self, trace_id: &str, revision: u32, now: DateTime<Utc>) -> Result<()> {
        let mut state = self.state();
        if let Some(item) = claimed(&mut state, trace_id, revision) {
            if let Some(p) = item.pending.as_mut() {
                p.lease_until = ms(now);
            }
            item.version += 1;
        }
        Ok(())
    }

    async fn fail_claim(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.failed_from(LedgerState::Claimed, trace_id, p, (reason, detail), now))
    }

    async fn record_failure(
        &self,
        key: &FailureKey,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut state = self.state();
        match key {
            // Keeps the state of an entry that exists; a new entry becomes `failed`.
            FailureKey::Trace(trace_id) => {
                let item = state
                    .traces
                    .entry(trace_id.clone())
                    .or_insert_with(|| StoredTrace::new(LedgerState::Failed));
                item.reason = Some(reason.as_str().to_string());
                item.detail = Some(truncate(detail, 1000));
                item.updated_at = Some(ms(now));
                item.version += 1;
                item.failures += 1;
            }
            FailureKey::Message { message_id, body } => {
                let record =
                    state
                        .messages
                        .entry(message_id.clone())
                        .or_insert_with(|| FailedMessage {
                            reason: String::new(),
                            detail: String::new(),
                            body: String::new(),
                            version: 0,
                            failures: 0,
                            updated_at: ms(now),
                        });
                record.reason = reason.as_str().to_string();
                record.detail = truncate(detail, 1000);
                record.body = truncate(body, 2048);
                record.version += 1;
                record.failures += 1;
                record.updated_at = ms(now);
            }
        }
        Ok(())
    }
}

impl MemoryLedger {
    /// `DynamoLedger::metered_from`: the pending revision of an entry in state `from`
    /// delivered (its reason cleared).
    pub(super) fn metered_from(&self, from: LedgerState, trace_id: &str, p: &PendingClaim) -> bool {
        let mut state = self.state();
        let Some(item) = unsettled(&mut state, from, trace_id, p) else {
            return false;
        };
        // The totals come from the caller's pending revision, as the adapter's update writes.
        item.state = LedgerState::Metered;
        item.revision = p.revision;
        item.total_credits = p.total_after;
        item.billed_credits += p.billable;
        item.capped_credits += p.capped;
        item.period = Some(p.period.clone());
        item.pending = None;
        item.reason = None;
        item.detail = None;
        item.identifiers.insert(p.identifier.clone());
        item.version += 1;
        true
    }

    /// `DynamoLedger::failed_from`: the pending revision of an entry in state `from` failed
    /// for good, its credits given back to the counter in the same step.
    pub(super) fn failed_from(
        &self,
        from: LedgerState,
        trace_id: &str,
        p: &PendingClaim,
        (reason, detail): (FailureReason, &str),
        now: DateTime<Utc>,
    ) -> bool {
        let mut state = self.state();
        let Some(item) = unsettled(&mut state, from, trace_id, p) else {
            return false;
        };
        item.state = LedgerState::Failed;
        item.reason = Some(reason.as_str().to_string());
        item.detail = Some(truncate(detail, 1000));
        item.pending = None;
        item.updated_at = Some(ms(now));
        item.version += 1;
        // The same transaction gives the caller's credits back to the counter (unconditional).
        let counter = state
            .counters
            .entry((p.customer_id.clone(), p.period.clone()))
            .or_default();
        counter.used = Some(counter.used.unwrap_or(0) - i128::from(p.billable));
        counter.capped = Some(counter.capped.unwrap_or(0) - i128::from(p.capped));
        true
    }
}
