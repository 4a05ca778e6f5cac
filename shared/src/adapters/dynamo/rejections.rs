//! Recording what Stripe's asynchronous validation dropped: the revision's entry becomes
//! `failed` (`stripe_rejected`) and its credits go back to its budget counter, in one
//! transaction conditional on the version read; the identifier is added to the entry's
//! `rejected` set, which makes a second call a no-op.

use super::DynamoLedger;
use super::claims::parse_entry;
use super::items::{
    Item, PENDING_FIELDS, SERVICE, budget_key, get_s, ms, n, s, trace_key, truncate,
};
use crate::domain::ledger::LedgerState;
use crate::domain::meter_errors::{
    GiveBack, Rejection, RejectionPlan, RejectionTarget, plan_rejection,
};
use crate::error::{Error, FailureReason, Result};
use crate::ports::StripeRejections;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Reads and writes before giving up on an entry that keeps changing.
const ATTEMPTS: usize = 3;

#[async_trait]
impl StripeRejections for DynamoLedger {
    async fn reject_delivered(
        &self,
        trace_id: &str,
        revision: u32,
        identifier: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<Rejection> {
        for _ in 0..ATTEMPTS {
            let item = self.get(trace_key(trace_id), true).await?;
            let Some((item, entry)) = item.and_then(|i| parse_entry(&i).map(|e| (i, e))) else {
                return Ok(Rejection::NotFound);
            };
            let target = RejectionTarget {
                entry: &entry,
                committed_period: get_s(&item, "period"),
                already_rejected: rejected(&item).iter().any(|id| id == identifier),
            };
            let give = match plan_rejection(&target, revision, identifier) {
                RejectionPlan::AlreadyRejected => return Ok(Rejection::AlreadyRejected),
                RejectionPlan::Refused(why) => return Ok(Rejection::Refused(why)),
                RejectionPlan::GiveBack(g) => g,
            };
            if self
                .give_back(trace_id, identifier, &give, detail, now)
                .await?
            {
                return Ok(Rejection::Rejected {
                    customer_id: give.customer_id,
                    period: give.period,
                    billable: give.billable,
                });
            }
        }
        Err(Error::transient(
            SERVICE,
            format!("trace {trace_id} kept changing while its rejection was recorded"),
        ))
    }
}

/// The identifiers an entry records as rejected by Stripe.
fn rejected(item: &Item) -> &[String] {
    match item.get("rejected") {
        Some(AttributeValue::Ss(ids)) => ids,
        _ => &[],
    }
}

impl DynamoLedger {
    /// The entry failed at the rejected revision and the counter given back, in one
    /// transaction; false when the entry changed since it was read.
    async fn give_back(
        &self,
        trace_id: &str,
        identifier: &str,
        g: &GiveBack,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (total, billed, capped) = g.totals;
        let ledger = self.tx_update(
            trace_key(trace_id),
            &format!(
                "SET #state = :failed, #reason = :reason, #detail = :detail, #failed_at = :now, \
                 #updated_at = :now, #revision = :rev, #total_credits = :total, \
                 #billed_credits = :billed, #capped_credits = :capped \
                 REMOVE {PENDING_FIELDS} ADD #ver :one, #rejected :ids"
            ),
            Some("#ver = :ver"),
            HashMap::from([
                (":failed".into(), s(LedgerState::Failed.as_str())),
                (":reason".into(), s(FailureReason::StripeRejected.as_str())),
                (":detail".into(), s(truncate(detail, 1000))),
                (":now".into(), ms(now)),
                (":rev".into(), n(g.revision)),
                (":total".into(), n(total)),
                (":billed".into(), n(billed)),
                (":capped".into(), n(capped)),
                (":one".into(), n(1)),
                (":ver".into(), n(g.version)),
                (
                    ":ids".into(),
                    AttributeValue::Ss(vec![identifier.to_string()]),
                ),
            ]),
        )?;
        let budget = self.tx_update(
            budget_key(&g.customer_id, &g.period),
            "SET #updated_at = :now ADD #used :minus_billable, #capped :minus_capped",
            None,
            HashMap::from([
                (":now".into(), ms(now)),
                (
                    ":minus_billable".into(),
                    AttributeValue::N(format!("-{}", g.billable)),
                ),
                (
                    ":minus_capped".into(),
                    AttributeValue::N(format!("-{}", g.capped)),
                ),
            ]),
        )?;
        match self.transact(vec![ledger, budget]).await? {
            None => Ok(true),
            Some(reasons)
                if reasons.first().is_some_and(|r| {
                    r.0 == "ConditionalCheckFailed" || r.0 == "TransactionConflict"
                }) =>
            {
                Ok(false)
            }
            Some(reasons) => Err(Error::transient(
                SERVICE,
                format!(
                    "recording Stripe's rejection of trace {trace_id} cancelled: {:?}",
                    reasons.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()
                ),
            )),
        }
    }
}
