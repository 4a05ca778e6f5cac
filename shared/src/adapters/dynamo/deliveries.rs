//! Settling claims: delivered (per trace, or per receipt for a batch), released for a
//! retry, or failed for good (the credits go back to the budget in the same transaction).

use super::DynamoLedger;
use super::items::{
    Item, PENDING_FIELDS, budget_key, message_key, ms, n, receipt_key, s, trace_key, truncate,
};
use super::unsettled::{pins, settled_unless_cancelled};
use crate::domain::claim::FailureKey;
use crate::domain::ledger::{LedgerState, PendingClaim};
use crate::error::{FailureReason, Result};
use crate::ports::DeliveryStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

#[async_trait]
impl DeliveryStore for DynamoLedger {
    async fn record_delivered(
        &self,
        receipt: &str,
        identifiers: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if identifiers.is_empty() {
            return Ok(());
        }
        self.update(
            receipt_key(receipt),
            "SET #created_at = if_not_exists(#created_at, :now), #updated_at = :now ADD #delivered :ids",
            None,
            HashMap::from([
                (":now".into(), ms(now)),
                (":ids".into(), AttributeValue::Ss(identifiers.to_vec())),
            ]),
        )
        .await
        .map(|_| ())
    }

    async fn mark_metered(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.metered_from(LedgerState::Claimed, trace_id, p, now)
            .await
    }

    async fn release(&self, trace_id: &str, revision: u32, now: DateTime<Utc>) -> Result<()> {
        self.update(
            trace_key(trace_id),
            "SET #p_lease_until = :now, #updated_at = :now ADD #ver :one",
            Some("#state = :claimed AND #p_rev = :rev"),
            HashMap::from([
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
                (":rev".into(), n(revision)),
            ]),
        )
        .await
        .map(|_| ())
    }

    async fn fail_claim(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let failure = (reason, detail);
        self.failed_from(LedgerState::Claimed, trace_id, p, failure, now)
            .await
    }

    async fn record_failure(
        &self,
        key: &FailureKey,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut values: Item = HashMap::from([
            (":failed".into(), s(LedgerState::Failed.as_str())),
            (":reason".into(), s(reason.as_str())),
            (":detail".into(), s(truncate(detail, 1000))),
            (":now".into(), ms(now)),
            (":one".into(), n(1)),
        ]);
        let (db_key, update) = match key {
            // Keeps the state of an entry that was billed before (a later revision failed);
            // a new entry becomes `failed`.
            FailureKey::Trace(trace_id) => (
                trace_key(trace_id),
                "SET #state = if_not_exists(#state, :failed), #reason = :reason, #detail = :detail, \
                 #failed_at = :now, #updated_at = :now, #created_at = if_not_exists(#created_at, :now) \
                 ADD #ver :one, #failures :one"
                    .to_string(),
            ),
            FailureKey::Message { message_id, body } => {
                values.insert(":body".into(), s(truncate(body, 2048)));
                (
                    message_key(message_id),
                    "SET #state = :failed, #reason = :reason, #detail = :detail, #body = :body, \
                     #failed_at = :now, #updated_at = :now ADD #ver :one, #failures :one"
                        .to_string(),
                )
            }
        };
        self.update(db_key, &update, None, values).await.map(|_| ())
    }
}

impl DynamoLedger {
    /// Marks the pending revision of an entry in state `from` delivered (a claim, or an
    /// ambiguous claim an operator settled). False when it is not in `from` at that revision.
    pub(super) async fn metered_from(
        &self,
        from: LedgerState,
        trace_id: &str,
        p: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let update = format!(
            "SET #state = :metered, #revision = :rev, #total_credits = :total, \
             #billed_credits = #billed_credits + :billable, #capped_credits = #capped_credits + :capped, \
             #period = :period, #metered_at = :now, #updated_at = :now \
             REMOVE #reason, #detail, {PENDING_FIELDS} ADD #ver :one, #identifiers :ids"
        );
        self.update(
            trace_key(trace_id),
            &update,
            Some("#state = :from AND #p_rev = :rev"),
            HashMap::from([
                (":metered".into(), s(LedgerState::Metered.as_str())),
                (":from".into(), s(from.as_str())),
                (":rev".into(), n(p.revision)),
                (":total".into(), n(p.total_after)),
                (":billable".into(), n(p.billable)),
                (":capped".into(), n(p.capped)),
                (":period".into(), s(&p.period)),
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
                (
                    ":ids".into(),
                    AttributeValue::Ss(vec![p.identifier.clone()]),
                ),
            ]),
        )
        .await
    }

    /// Records the permanent failure of the pending revision of an entry in state `from` and
    /// gives its credits back to the budget, in one transaction.
    pub(super) async fn failed_from(
        &self,
        from: LedgerState,
        trace_id: &str,
        p: &PendingClaim,
        (reason, detail): (FailureReason, &str),
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut values = HashMap::from([
            (":failed".into(), s(LedgerState::Failed.as_str())),
            (":from".into(), s(from.as_str())),
            (":reason".into(), s(reason.as_str())),
            (":detail".into(), s(truncate(detail, 1000))),
            (":now".into(), ms(now)),
            (":one".into(), n(1)),
        ]);
        let condition = format!("#state = :from AND {}", pins(p, &mut values));
        let ledger = self.tx_update(
            trace_key(trace_id),
            &format!(
                "SET #state = :failed, #reason = :reason, #detail = :detail, #failed_at = :now, #updated_at = :now \
                 REMOVE {PENDING_FIELDS} ADD #ver :one"
            ),
            Some(&condition),
            values,
        )?;
        let budget = self.tx_update(
            budget_key(&p.customer_id, &p.period),
            "SET #updated_at = :now ADD #used :minus_billable, #capped :minus_capped",
            None,
            HashMap::from([
                (":now".into(), ms(now)),
                (
                    ":minus_billable".into(),
                    AttributeValue::N(format!("-{}", p.billable)),
                ),
                (
                    ":minus_capped".into(),
                    AttributeValue::N(format!("-{}", p.capped)),
                ),
            ]),
        )?;
        // The claim's receipt must not list it as delivered: a delivered revision is billed.
        let items = [Some(ledger), Some(budget), self.tx_not_delivered(p)?];
        let reasons = self.transact(items.into_iter().flatten().collect()).await?;
        settled_unless_cancelled(reasons, &p.identifier)
    }
}
