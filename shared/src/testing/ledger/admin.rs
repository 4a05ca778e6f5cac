//! The operator's ports: entries needing attention (as the sparse `attention` index holds
//! them: every trace entry with a reason), settling ambiguous claims, policies and mappings.

use super::MemoryLedger;
use crate::domain::attention::{AttentionEntry, AttentionQuery, MessageFailure};
use crate::domain::budget::BudgetPolicy;
use crate::domain::budget::BudgetUsage;
use crate::domain::budget_event::BudgetEventKind;
use crate::domain::ledger::{LedgerState, PendingClaim};
use crate::domain::reconcile::{BilledTotals, add};
use crate::error::{FailureReason, Result};
use crate::ports::{
    AmbiguousSettlement, AttentionIndex, CustomerAdmin, LedgerInspection, LedgerTotals,
    MessageFailures,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

#[async_trait]
impl AttentionIndex for MemoryLedger {
    async fn needing_attention(&self, query: &AttentionQuery) -> Result<Vec<AttentionEntry>> {
        let state = self.state();
        let mut out: Vec<AttentionEntry> = state
            .traces
            .iter()
            .filter(|(_, item)| item.reason.is_some())
            .filter_map(|(id, item)| Some((item.view(id), item.updated_at?)))
            .filter(|(entry, at)| query.matches(entry, *at))
            .map(|(entry, updated_at)| AttentionEntry { entry, updated_at })
            .collect();
        out.sort_by(|a, b| {
            (a.updated_at, &a.entry.trace_id).cmp(&(b.updated_at, &b.entry.trace_id))
        });
        Ok(out)
    }
}

#[async_trait]
impl MessageFailures for MemoryLedger {
    async fn failed_messages(&self, since: Option<DateTime<Utc>>) -> Result<Vec<MessageFailure>> {
        let mut out: Vec<MessageFailure> = self
            .state()
            .messages
            .iter()
            .filter(|(_, m)| since.is_none_or(|t| m.updated_at >= t))
            .map(|(id, m)| MessageFailure {
                message_id: id.clone(),
                reason: m.reason.clone(),
                detail: m.detail.clone(),
                body: m.body.clone(),
                updated_at: m.updated_at,
            })
            .collect();
        out.sort_by(|a, b| (a.updated_at, &a.message_id).cmp(&(b.updated_at, &b.message_id)));
        Ok(out)
    }

    async fn forget_message(&self, message_id: &str) -> Result<bool> {
        Ok(self.state().messages.remove(message_id).is_some())
    }
}

#[async_trait]
impl LedgerInspection for MemoryLedger {
    async fn counted_period(&self, trace_id: &str) -> Result<Option<String>> {
        Ok(self.stored(trace_id).and_then(|item| match item.pending {
            Some(p) => Some(p.period),
            None => item.period,
        }))
    }
}

#[async_trait]
impl AmbiguousSettlement for MemoryLedger {
    async fn settle_delivered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        _now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.metered_from(LedgerState::Ambiguous, trace_id, pending))
    }

    async fn settle_not_delivered(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let failure = (FailureReason::NotDelivered, detail);
        Ok(self.failed_from(LedgerState::Ambiguous, trace_id, pending, failure, now))
    }
}

#[async_trait]
impl CustomerAdmin for MemoryLedger {
    async fn set_budget_policy(&self, customer_id: &str, policy: &BudgetPolicy) -> Result<()> {
        self.put_budget_policy(customer_id, policy);
        Ok(())
    }

    async fn budget_policies(&self) -> Result<Vec<(String, BudgetPolicy)>> {
        // Read back as the adapter parses the item: a limit of 0 is no limit.
        Ok(self
            .state()
            .policies
            .iter()
            .map(|(c, p)| {
                let limit = p.limit.filter(|l| *l > 0);
                (c.clone(), BudgetPolicy { limit, ..p.clone() })
            })
            .collect())
    }

    async fn budget_alerts(&self, customer_id: &str, period: &str) -> Result<Vec<u32>> {
        let mut pcts: Vec<u32> = self
            .state()
            .events
            .values()
            .filter(|e| e.customer_id == customer_id && e.period == period)
            .filter_map(|e| match e.kind {
                BudgetEventKind::ThresholdCrossed { percent } => Some(percent),
                _ => None,
            })
            .collect();
        pcts.sort_unstable();
        Ok(pcts)
    }

    async fn map_user(&self, user_id: &str, customer_id: &str) -> Result<()> {
        self.put_user_mapping(user_id, customer_id);
        Ok(())
    }

    async fn unmap_user(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self.state().users.remove(user_id))
    }
}

#[async_trait]
impl LedgerTotals for MemoryLedger {
    async fn billed_by_customer(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<BTreeMap<String, BilledTotals>> {
        let state = self.state();
        let mut out = BTreeMap::new();
        for (id, item) in &state.traces {
            if !item.usage_at.is_some_and(|at| at >= start && at < end) {
                continue;
            }
            let entry = item.view(id);
            let delivered = entry.pending.as_ref().is_some_and(|p| {
                p.receipt
                    .as_ref()
                    .and_then(|r| state.receipts.get(r))
                    .is_some_and(|ids| ids.contains(&p.identifier))
            });
            add(&mut out, &entry, delivered);
        }
        Ok(out)
    }

    async fn counters(&self, customer_id: &str) -> Result<BTreeMap<String, BudgetUsage>> {
        let read = |v: Option<i128>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        Ok(self
            .state()
            .counters
            .iter()
            .filter(|((c, _), _)| c == customer_id)
            .map(|((_, period), c)| {
                let usage = BudgetUsage {
                    used: read(c.used),
                    capped: read(c.capped),
                    exceeded: c.exceeded,
                    clears: c.clears,
                    ..BudgetUsage::default()
                };
                (period.clone(), usage)
            })
            .collect())
    }
}
