//! Claims: reading a trace's entry, claiming revisions of one customer and period in one
//! transaction (the entries and ONE budget counter update), taking over expired claims.

use super::DynamoLedger;
use super::items::{
    Item, PENDING_FIELDS, SERVICE, budget_key, get_i64, get_s, get_time, get_u64, ms, n,
    receipt_delivered, receipt_key, s, trace_key,
};
use crate::domain::attention::AMBIGUOUS_REASON;
use crate::domain::claim::{Claim, ClaimBatch, ClaimResult, Expect, MAX_CLAIMS_PER_BATCH};
use crate::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use crate::error::{Error, Result};
use crate::ports::ClaimStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A parsed ledger entry.
pub fn parse_entry(item: &Item) -> Option<LedgerEntry> {
    let pk = get_s(item, "pk")?;
    let trace_id = pk.strip_prefix("TRACE#")?.to_string();
    let state = LedgerState::parse(get_s(item, "state")?)?;
    let pending = match get_u64(item, "p_rev") {
        Some(rev) => Some(PendingClaim {
            revision: u32::try_from(rev).ok()?,
            identifier: get_s(item, "p_identifier")?.to_string(),
            customer_id: get_s(item, "p_customer")?.to_string(),
            billable: get_u64(item, "p_billable")?,
            capped: get_u64(item, "p_capped")?,
            total_after: get_u64(item, "p_total")?,
            event_timestamp: get_i64(item, "p_event_ts")?,
            period: get_s(item, "p_period")?.to_string(),
            claimed_at: get_time(item, "p_claimed_at")?,
            lease_until: get_time(item, "p_lease_until")?,
            receipt: get_s(item, "p_receipt").map(str::to_string),
        }),
        None => None,
    };
    Some(LedgerEntry {
        trace_id,
        state,
        version: get_u64(item, "ver").unwrap_or(0),
        revision: get_u64(item, "revision")
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0),
        total_credits: get_u64(item, "total_credits").unwrap_or(0),
        billed_credits: get_u64(item, "billed_credits").unwrap_or(0),
        capped_credits: get_u64(item, "capped_credits").unwrap_or(0),
        customer_id: get_s(item, "customer_id").map(str::to_string),
        last_observation_at: get_time(item, "last_observation_at"),
        pending,
        reason: get_s(item, "reason").map(str::to_string),
        detail: get_s(item, "detail").map(str::to_string),
        receipted: None,
        price_version: get_s(item, "price_version").map(str::to_string),
    })
}

/// A ledger update in the making: its `SET` clauses and the values they name.
struct Parts {
    values: Item,
    set: Vec<&'static str>,
}

impl DynamoLedger {
    /// The ledger part of a claim: the entry advanced to the claimed revision (or committed
    /// at once when nothing is billable), conditional on the version read.
    fn ledger_claim_item(&self, claim: &Claim, now: DateTime<Utc>) -> Result<TransactWriteItem> {
        let mut parts = common_parts(claim, now);
        let remove = if claim.pending.billable > 0 {
            claimed_parts(claim, &mut parts)
        } else {
            committed_parts(claim, &mut parts)
        };
        let Parts { mut values, set } = parts;
        let add = match &claim.settled.receipted {
            // Folds a revision delivered through its receipt into the item.
            Some(id) => {
                values.insert(":ids".into(), AttributeValue::Ss(vec![id.clone()]));
                "ADD #ver :one, #identifiers :ids"
            }
            None => "ADD #ver :one",
        };
        let ledger_update = format!("SET {} {remove} {add}", set.join(", "));
        let ledger_condition = match claim.expect {
            Expect::Absent => "attribute_not_exists(#state)".to_string(),
            Expect::Version(v) => {
                values.insert(":ver".into(), n(v));
                "#ver = :ver".to_string()
            }
        };
        self.tx_update(
            trace_key(&claim.trace_id),
            &ledger_update,
            Some(&ledger_condition),
            values,
        )
    }

    /// The budget part of a batch claim: the summed credits added to the counter, conditional
    /// on the hard limit.
    fn budget_claim_item(
        &self,
        batch: &ClaimBatch,
        billable: u64,
        capped: u64,
    ) -> Result<TransactWriteItem> {
        let (customer, period) = (&batch.customer_id, &batch.period);
        let mut budget_values: Item = HashMap::from([
            (":billable".into(), n(billable)),
            (":capped".into(), n(capped)),
            (":now".into(), ms(batch.now)),
            (":cus".into(), s(customer)),
            (":period".into(), s(period)),
        ]);
        let mut budget_set = vec![
            "#updated_at = :now",
            "#customer_id = :cus",
            "#period = :period",
        ];
        if let Some(limit) = batch.limit {
            budget_values.insert(":limit".into(), n(limit));
            budget_set.push("#limit = :limit");
        }
        if capped > 0 {
            budget_values.insert(":true".into(), AttributeValue::Bool(true));
            budget_set.push("#exceeded = :true");
        }
        let budget_update = format!(
            "SET {} ADD #used :billable, #capped :capped",
            budget_set.join(", ")
        );
        // A condition on ADD sees the value before the add: to stay within L while adding
        // b, the counter must be at most L - b.
        let budget_condition = match batch.hard_limit {
            Some(limit) if billable > 0 => {
                let room = limit.checked_sub(billable).ok_or_else(|| {
                    Error::transient(
                        SERVICE,
                        format!("claim of {billable} credits over the limit {limit}"),
                    )
                })?;
                budget_values.insert(":room".into(), n(room));
                Some("attribute_not_exists(#used) OR #used <= :room")
            }
            _ => None,
        };
        self.tx_update(
            budget_key(customer, period),
            &budget_update,
            budget_condition,
            budget_values,
        )
    }
}

/// What every claim writes: the customer, the usage seen and the times.
fn common_parts(claim: &Claim, now: DateTime<Utc>) -> Parts {
    let p = &claim.pending;
    let base = &claim.settled;
    let mut values: Item = HashMap::from([
        (":cus".into(), s(&p.customer_id)),
        (":uat".into(), ms(claim.usage_at)),
        (":now".into(), ms(now)),
        (":one".into(), n(1)),
        (":rev".into(), n(p.revision)),
        (":total".into(), n(p.total_after)),
        (":capped".into(), n(p.capped)),
        (":period".into(), s(&p.period)),
        (":base_billed".into(), n(base.billed_credits)),
    ]);
    let mut set = vec![
        "#customer_id = :cus",
        "#usage_at = :uat",
        "#updated_at = :now",
        "#created_at = if_not_exists(#created_at, :now)",
        "#billed_credits = :base_billed",
    ];
    values.insert(":cost".into(), n(claim.seen.cost_usd.normalize()));
    values.insert(":lat".into(), n(claim.seen.latency_seconds.normalize()));
    values.insert(":obs".into(), n(claim.seen.observations));
    set.extend([
        "#cost_usd = :cost",
        "#latency_s = :lat",
        "#observations = :obs",
    ]);
    if let Some(lo) = claim.last_observation_at {
        values.insert(":lo".into(), ms(lo));
        set.push("#last_observation_at = :lo");
    }
    if let Some(pv) = &claim.price_version {
        values.insert(":pv".into(), s(pv));
        set.push("#price_version = :pv");
    }
    Parts { values, set }
}

/// A billable revision: the entry becomes `claimed`, its pending claim written out. Returns
/// the `REMOVE` clause.
fn claimed_parts(claim: &Claim, parts: &mut Parts) -> String {
    let (p, base) = (&claim.pending, &claim.settled);
    let Parts { values, set } = parts;
    values.insert(":state".into(), s(LedgerState::Claimed.as_str()));
    values.insert(":ident".into(), s(&p.identifier));
    values.insert(":billable".into(), n(p.billable));
    values.insert(":ets".into(), n(p.event_timestamp));
    values.insert(":lease".into(), ms(p.lease_until));
    values.insert(":claimed_at".into(), ms(p.claimed_at));
    values.insert(":base_rev".into(), n(base.revision));
    values.insert(":base_total".into(), n(base.total_credits));
    values.insert(":base_capped".into(), n(base.capped_credits));
    set.extend([
        "#state = :state",
        "#p_rev = :rev",
        "#p_identifier = :ident",
        "#p_customer = :cus",
        "#p_billable = :billable",
        "#p_capped = :capped",
        "#p_total = :total",
        "#p_event_ts = :ets",
        "#p_period = :period",
        "#p_claimed_at = :claimed_at",
        "#p_lease_until = :lease",
        "#revision = :base_rev",
        "#total_credits = :base_total",
        "#capped_credits = :base_capped",
    ]);
    match &p.receipt {
        Some(r) => {
            values.insert(":receipt".into(), s(r));
            set.push("#p_receipt = :receipt");
            "REMOVE #reason, #detail".to_string()
        }
        None => "REMOVE #reason, #detail, #p_receipt".to_string(),
    }
}

/// Nothing to send: the revision is committed right away (capped, or a trace that costs
/// nothing). Returns the `REMOVE` clause.
fn committed_parts(claim: &Claim, parts: &mut Parts) -> String {
    let (p, base) = (&claim.pending, &claim.settled);
    let Parts { values, set } = parts;
    let state = if p.capped > 0 {
        LedgerState::Capped
    } else {
        LedgerState::Metered
    };
    values.insert(":state".into(), s(state.as_str()));
    values.insert(":capped_after".into(), n(base.capped_credits + p.capped));
    set.extend([
        "#state = :state",
        "#revision = :rev",
        "#total_credits = :total",
        "#capped_credits = :capped_after",
        "#period = :period",
    ]);
    format!("REMOVE #reason, #detail, {PENDING_FIELDS}")
}

#[async_trait]
impl ClaimStore for DynamoLedger {
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>> {
        let Some(item) = self.get(trace_key(trace_id), true).await? else {
            return Ok(None);
        };
        // An item with keys but no state holds nothing (claims are conditioned on
        // `attribute_not_exists(state)`, so it is claimable).
        if !item.contains_key("state") {
            return Ok(None);
        }
        let entry = parse_entry(&item).ok_or_else(|| {
            Error::transient(
                SERVICE,
                format!("ledger entry of trace {trace_id} is malformed: {item:?}"),
            )
        })?;
        // A claim of a batch whose receipt lists it was delivered: metered.
        if entry.state == LedgerState::Claimed
            && let Some(p) = &entry.pending
            && let Some(receipt) = &p.receipt
            && let Some(r) = self.get(receipt_key(receipt), true).await?
            && receipt_delivered(&r).contains(&p.identifier)
        {
            return Ok(Some(entry.delivered()));
        }
        Ok(Some(entry))
    }

    async fn entries(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerEntry>> {
        self.read_entries(trace_ids).await
    }

    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult> {
        if batch.claims.is_empty() {
            return Ok(ClaimResult::Claimed);
        }
        if batch.claims.len() > MAX_CLAIMS_PER_BATCH {
            return Err(Error::transient(
                SERVICE,
                format!(
                    "a claim batch holds at most {MAX_CLAIMS_PER_BATCH} traces, got {}",
                    batch.claims.len()
                ),
            ));
        }
        let mut items = Vec::with_capacity(batch.claims.len() + 1);
        let (mut billable, mut capped) = (0u64, 0u64);
        for claim in &batch.claims {
            billable += claim.pending.billable;
            capped += claim.pending.capped;
            items.push(self.ledger_claim_item(claim, batch.now)?);
        }
        let counter = items.len();
        if billable > 0 || capped > 0 {
            items.push(self.budget_claim_item(batch, billable, capped)?);
        }
        let Some(reasons) = self.transact(items).await? else {
            return Ok(ClaimResult::Claimed);
        };
        let failed = |r: &(String, Option<Item>)| r.0 == "ConditionalCheckFailed";
        let changed: Vec<usize> = reasons
            .iter()
            .take(counter)
            .enumerate()
            .filter(|(_, r)| failed(r))
            .map(|(i, _)| i)
            .collect();
        if !changed.is_empty() {
            return Ok(ClaimResult::LedgerChanged(changed));
        }
        if let Some(r) = reasons.get(counter).filter(|r| failed(r)) {
            let used =
                r.1.as_ref()
                    .and_then(|item| get_u64(item, "used"))
                    .unwrap_or(0);
            return Ok(ClaimResult::OverBudget { used });
        }
        if reasons.iter().any(|r| {
            r.0 == "TransactionConflict"
                || r.0 == "ThrottlingError"
                || r.0 == "ProvisionedThroughputExceeded"
        }) {
            return Ok(ClaimResult::Conflict);
        }
        Err(Error::transient(
            SERVICE,
            format!(
                "claim of {} traces of {} cancelled: {:?}",
                batch.claims.len(),
                batch.customer_id,
                reasons.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()
            ),
        ))
    }

    async fn take_over(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.update_unsettled(
            trace_key(trace_id),
            "SET #p_lease_until = :lease, #updated_at = :now ADD #ver :one",
            "#state = :claimed AND #p_lease_until <= :now",
            HashMap::from([
                (":lease".into(), ms(lease_until)),
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
            ]),
            pending,
        )
        .await
    }

    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.update_unsettled(
            trace_key(trace_id),
            "SET #state = :ambiguous, #reason = :reason, #detail = :detail, #updated_at = :now ADD #ver :one",
            "#state = :claimed",
            HashMap::from([
                (":ambiguous".into(), s(LedgerState::Ambiguous.as_str())),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
                (":reason".into(), s(AMBIGUOUS_REASON)),
                (
                    ":detail".into(),
                    s("claimed but never marked metered, and older than Stripe's identifier dedup window: \
                       check Stripe for the identifier before resending or releasing the budget"),
                ),
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
            ]),
            pending,
        )
        .await
    }

    async fn note_seen(
        &self,
        trace_id: &str,
        version: u64,
        last_observation_at: DateTime<Utc>,
    ) -> Result<bool> {
        self.update(
            trace_key(trace_id),
            "SET #last_observation_at = :lo ADD #ver :one",
            Some("#ver = :ver AND (attribute_not_exists(#last_observation_at) OR #last_observation_at < :lo)"),
            HashMap::from([
                (":lo".into(), ms(last_observation_at)),
                (":ver".into(), n(version)),
                (":one".into(), n(1)),
            ]),
        )
        .await
    }
}
