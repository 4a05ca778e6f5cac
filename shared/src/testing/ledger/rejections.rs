//! `StripeRejections`: the rejected revision's entry failed and its credits given back to the
//! counter in one step (one mutex, as one DynamoDB transaction), conditional on nothing but
//! what was read under the same lock.

use super::{MemoryLedger, ms, truncate};
use crate::domain::ledger::LedgerState;
use crate::domain::meter_errors::{Rejection, RejectionPlan, RejectionTarget, plan_rejection};
use crate::error::{FailureReason, Result};
use crate::ports::StripeRejections;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl StripeRejections for MemoryLedger {
    async fn reject_delivered(
        &self,
        trace_id: &str,
        revision: u32,
        identifier: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<Rejection> {
        let mut state = self.state();
        let Some(item) = state.traces.get(trace_id) else {
            return Ok(Rejection::NotFound);
        };
        let entry = item.view(trace_id);
        let target = RejectionTarget {
            entry: &entry,
            committed_period: item.period.as_deref(),
            already_rejected: item.rejected.contains(identifier),
        };
        let g = match plan_rejection(&target, revision, identifier) {
            RejectionPlan::AlreadyRejected => return Ok(Rejection::AlreadyRejected),
            RejectionPlan::Refused(why) => return Ok(Rejection::Refused(why)),
            RejectionPlan::GiveBack(g) => g,
        };
        if let Some(item) = state.traces.get_mut(trace_id) {
            item.state = LedgerState::Failed;
            item.reason = Some(FailureReason::StripeRejected.as_str().to_string());
            item.detail = Some(truncate(detail, 1000));
            item.revision = g.revision;
            (item.total_credits, item.billed_credits, item.capped_credits) = g.totals;
            item.pending = None;
            item.rejected.insert(identifier.to_string());
            item.updated_at = Some(ms(now));
            item.version += 1;
        }
        let counter = state
            .counters
            .entry((g.customer_id.clone(), g.period.clone()))
            .or_default();
        counter.used = Some(counter.used.unwrap_or(0) - i128::from(g.billable));
        counter.capped = Some(counter.capped.unwrap_or(0) - i128::from(g.capped));
        Ok(Rejection::Rejected {
            customer_id: g.customer_id,
            period: g.period,
            billable: g.billable,
        })
    }
}
