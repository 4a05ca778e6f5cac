//! The DynamoDB ledger: one table, `pk`/`sk` keys, conditional writes only.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | trace ledger entry | `TRACE#<trace id>` | `LEDGER` |
//! | malformed message | `MESSAGE#<message id>` | `FAILED` |
//! | budget counter | `BUDGET#<customer>` | `PERIOD#<period key>` |
//! | budget alert | `BUDGET#<customer>` | `ALERT#<period key>#<percent>` |
//! | budget policy | `CUSTOMER#<customer>` | `BUDGET` |
//! | user mapping | `USER#<langfuse user id>` | `CUSTOMER` |
//! | delivery receipt | `RECEIPT#<receipt id>` | `RECEIPT` |
//!
//! A batch claim stores its receipt id on each claimed entry (`p_receipt`); once Stripe has
//! the events, ONE write adds their identifiers to the receipt's `delivered` set instead of
//! one mark per entry. [`Ledger::entry`] reads an entry still `claimed` with a receipt that
//! lists its identifier as metered; the next claim of the trace folds it into the item.
//!
//! Every attribute in an expression is written `#name` and aliased automatically, so no
//! DynamoDB reserved word can bite.

use crate::domain::budget::BudgetUsage;
use crate::domain::budget::{BudgetMode, BudgetPolicy, Period};
use crate::domain::claim::{
    Claim, ClaimBatch, ClaimResult, Expect, FailureKey, MAX_CLAIMS_PER_BATCH,
};
use crate::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use crate::error::{Error, FailureReason, Result};
use crate::ports::{BudgetStore, ClaimStore, CustomerDirectory, DeliveryStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, TimeZone, Utc};
use std::collections::HashMap;

const SERVICE: &str = "dynamodb";
type Item = HashMap<String, AttributeValue>;

/// The ledger, budgets and mappings in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// Key of a trace's ledger entry.
pub fn trace_key(trace_id: &str) -> (String, String) {
    (format!("TRACE#{trace_id}"), "LEDGER".to_string())
}
/// Key of a budget counter.
pub fn budget_key(customer: &str, period: &str) -> (String, String) {
    (format!("BUDGET#{customer}"), format!("PERIOD#{period}"))
}
/// Key of a budget alert record.
pub fn alert_key(customer: &str, period: &str, pct: u32) -> (String, String) {
    (
        format!("BUDGET#{customer}"),
        format!("ALERT#{period}#{pct:03}"),
    )
}
/// Key of a customer's budget policy.
pub fn policy_key(customer: &str) -> (String, String) {
    (format!("CUSTOMER#{customer}"), "BUDGET".to_string())
}
/// Key of a user-to-customer mapping.
pub fn user_key(user_id: &str) -> (String, String) {
    (format!("USER#{user_id}"), "CUSTOMER".to_string())
}
/// Key of a delivery receipt.
pub fn receipt_key(receipt: &str) -> (String, String) {
    (format!("RECEIPT#{receipt}"), "RECEIPT".to_string())
}
/// The identifiers a receipt item records as delivered.
pub fn receipt_delivered(item: &Item) -> &[String] {
    match item.get("delivered") {
        Some(AttributeValue::Ss(ids)) => ids,
        _ => &[],
    }
}
/// Key of a malformed message record.
pub fn message_key(message_id: &str) -> (String, String) {
    (format!("MESSAGE#{message_id}"), "FAILED".to_string())
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
/// A number attribute.
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub(crate) fn key_item((pk, sk): (String, String)) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// Reads a string attribute.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}
/// Reads a whole-number attribute.
pub fn get_u64(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
pub(crate) fn get_time(item: &Item, name: &str) -> Option<DateTime<Utc>> {
    get_i64(item, name).and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}
pub(crate) fn ms(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

/// Aliases every `#name` of the expressions to `name`.
fn names(exprs: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for expr in exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'#' {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                let name = &expr[start..end];
                out.insert(format!("#{name}"), name.to_string());
                i = end;
            } else {
                i += 1;
            }
        }
    }
    out
}

pub(crate) fn sdk_error<E, R>(op: &str, e: &SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Error::transient(SERVICE, format!("{op}: {}", DisplayErrorContext(e)))
}

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
    })
}

const PENDING_FIELDS: &str = "#p_rev, #p_identifier, #p_customer, #p_billable, #p_capped, #p_total, #p_event_ts, #p_period, #p_claimed_at, #p_lease_until, #p_receipt";

impl DynamoLedger {
    /// For one table.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> DynamoLedger {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SDK client.
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    async fn get(&self, key: (String, String), consistent: bool) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_item(key)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &e))?;
        Ok(out.item)
    }

    /// A conditional update; `Ok(false)` when the condition failed.
    async fn update(
        &self,
        key: (String, String),
        update: &str,
        condition: Option<&str>,
        values: Item,
    ) -> Result<bool> {
        let exprs: Vec<&str> = [Some(update), condition].into_iter().flatten().collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_item(key)))
            .update_expression(update)
            .set_condition_expression(condition.map(str::to_string))
            .set_expression_attribute_names(Some(names(&exprs)))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error("UpdateItem", &e)),
        }
    }

    fn tx_update(
        &self,
        key: (String, String),
        update: &str,
        condition: Option<&str>,
        values: Item,
    ) -> Result<TransactWriteItem> {
        let exprs: Vec<&str> = [Some(update), condition].into_iter().flatten().collect();
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key_item(key)))
            .update_expression(update)
            .set_condition_expression(condition.map(str::to_string))
            .set_expression_attribute_names(Some(names(&exprs)))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Error::transient(SERVICE, format!("building an update: {e}")))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Runs a transaction; on cancellation returns each item's reason code and old item.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<(String, Option<Item>)>>> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    let reasons = c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| (r.code().unwrap_or("None").to_string(), r.item().cloned()))
                        .collect::<Vec<_>>();
                    if !reasons.is_empty() {
                        return Ok(Some(reasons));
                    }
                }
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_in_progress_exception())
                {
                    return Ok(Some(vec![("TransactionConflict".to_string(), None)]));
                }
                Err(sdk_error("TransactWriteItems", &e))
            }
        }
    }

    /// The ledger part of a claim: the entry advanced to the claimed revision (or committed
    /// at once when nothing is billable), conditional on the version read.
    fn ledger_claim_item(&self, claim: &Claim, now: DateTime<Utc>) -> Result<TransactWriteItem> {
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
        let remove = if p.billable > 0 {
            values.insert(":state".into(), s(LedgerState::Claimed.as_str()));
            values.insert(":ident".into(), s(&p.identifier));
            values.insert(":billable".into(), n(p.billable));
            values.insert(":ets".into(), n(p.event_timestamp));
            values.insert(":lease".into(), ms(p.lease_until));
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
                "#p_claimed_at = :now",
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
        } else {
            // Nothing to send: the revision is committed right away (capped, or a trace
            // that costs nothing).
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
        };
        let add = match &base.receipted {
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

    /// Writes a customer's budget policy (operator tooling and tests).
    pub async fn put_budget_policy(&self, customer: &str, policy: &BudgetPolicy) -> Result<()> {
        let mut item = key_item(policy_key(customer));
        if let Some(limit) = policy.limit {
            item.insert("limit".into(), n(limit));
        }
        item.insert("period".into(), s(policy.period.as_str()));
        item.insert("mode".into(), s(policy.mode.as_str()));
        item.insert(
            "thresholds".into(),
            AttributeValue::L(policy.thresholds.iter().map(|t| n(*t)).collect()),
        );
        self.put(item).await
    }

    /// An unconditional put of a whole item (operator items: policies, mappings).
    async fn put(&self, item: Item) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", &e))?;
        Ok(())
    }

    /// Maps a Langfuse user id to a Stripe customer (operator tooling and tests).
    pub async fn put_user_mapping(&self, user_id: &str, customer: &str) -> Result<()> {
        let mut item = key_item(user_key(user_id));
        item.insert("customer_id".into(), s(customer));
        self.put(item).await
    }

    /// The raw item of a key (inspection).
    pub async fn raw(&self, key: (String, String)) -> Result<Option<Item>> {
        self.get(key, true).await
    }
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
        revision: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.update(
            trace_key(trace_id),
            "SET #p_lease_until = :lease, #updated_at = :now ADD #ver :one",
            Some("#state = :claimed AND #p_rev = :rev AND #p_lease_until <= :now"),
            HashMap::from([
                (":lease".into(), ms(lease_until)),
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
                (":rev".into(), n(revision)),
            ]),
        )
        .await
    }

    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        revision: u32,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.update(
            trace_key(trace_id),
            "SET #state = :ambiguous, #reason = :reason, #detail = :detail, #updated_at = :now ADD #ver :one",
            Some("#state = :claimed AND #p_rev = :rev"),
            HashMap::from([
                (":ambiguous".into(), s(LedgerState::Ambiguous.as_str())),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
                (":rev".into(), n(revision)),
                (":reason".into(), s("claim_outlived_stripe_dedup_window")),
                (
                    ":detail".into(),
                    s("claimed but never marked metered, and older than Stripe's identifier dedup window: \
                       check Stripe for the identifier before resending or releasing the budget"),
                ),
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
            ]),
        )
        .await
    }
}

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
        let update = format!(
            "SET #state = :metered, #revision = :rev, #total_credits = :total, \
             #billed_credits = #billed_credits + :billable, #capped_credits = #capped_credits + :capped, \
             #period = :period, #metered_at = :now, #updated_at = :now \
             REMOVE {PENDING_FIELDS} ADD #ver :one, #identifiers :ids"
        );
        self.update(
            trace_key(trace_id),
            &update,
            Some("#state = :claimed AND #p_rev = :rev"),
            HashMap::from([
                (":metered".into(), s(LedgerState::Metered.as_str())),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
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
        let ledger = self.tx_update(
            trace_key(trace_id),
            &format!(
                "SET #state = :failed, #reason = :reason, #detail = :detail, #failed_at = :now, #updated_at = :now \
                 REMOVE {PENDING_FIELDS} ADD #ver :one"
            ),
            Some("#state = :claimed AND #p_rev = :rev"),
            HashMap::from([
                (":failed".into(), s(LedgerState::Failed.as_str())),
                (":claimed".into(), s(LedgerState::Claimed.as_str())),
                (":rev".into(), n(p.revision)),
                (":reason".into(), s(reason.as_str())),
                (":detail".into(), s(truncate(detail, 1000))),
                (":now".into(), ms(now)),
                (":one".into(), n(1)),
            ]),
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
        match self.transact(vec![ledger, budget]).await? {
            None => Ok(true),
            Some(reasons)
                if reasons
                    .first()
                    .is_some_and(|r| r.0 == "ConditionalCheckFailed") =>
            {
                Ok(false)
            }
            Some(reasons) => Err(Error::transient(
                SERVICE,
                format!(
                    "recording the failure of trace {trace_id} cancelled: {:?}",
                    reasons.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()
                ),
            )),
        }
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

#[async_trait]
impl BudgetStore for DynamoLedger {
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>> {
        let Some(item) = self.get(policy_key(customer_id), false).await? else {
            return Ok(None);
        };
        let bad = |what: &str| {
            Error::transient(
                SERVICE,
                format!("budget policy of customer {customer_id} is malformed: {what}"),
            )
        };
        let period = Period::parse(get_s(&item, "period").unwrap_or("month"))
            .ok_or_else(|| bad("period"))?;
        let mode =
            BudgetMode::parse(get_s(&item, "mode").unwrap_or("hard")).ok_or_else(|| bad("mode"))?;
        let thresholds = match item.get("thresholds") {
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| v.as_n().ok().and_then(|n| n.parse::<u32>().ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| bad("thresholds"))?,
            _ => vec![50, 80, 100],
        };
        Ok(Some(BudgetPolicy {
            limit: get_u64(&item, "limit").filter(|l| *l > 0),
            period,
            mode,
            thresholds,
        }))
    }

    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        Ok(
            match self.get(budget_key(customer_id, period), true).await? {
                Some(item) => BudgetUsage {
                    used: get_u64(&item, "used").unwrap_or(0),
                    capped: get_u64(&item, "capped").unwrap_or(0),
                    exceeded: item
                        .get("exceeded")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false),
                },
                None => BudgetUsage::default(),
            },
        )
    }

    async fn record_alert(
        &self,
        customer_id: &str,
        period: &str,
        threshold: u32,
        usage: BudgetUsage,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut item = key_item(alert_key(customer_id, period, threshold));
        item.insert("customer_id".into(), s(customer_id));
        item.insert("period".into(), s(period));
        item.insert("threshold_pct".into(), n(threshold));
        item.insert("used".into(), n(usage.used));
        item.insert("limit".into(), n(limit));
        item.insert("created_at".into(), ms(now));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error("PutItem", &e)),
        }
    }

    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.update(
            budget_key(customer_id, period),
            "SET #exceeded = :true, #exceeded_at = if_not_exists(#exceeded_at, :now)",
            None,
            HashMap::from([
                (":true".into(), AttributeValue::Bool(true)),
                (":now".into(), ms(now)),
            ]),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl CustomerDirectory for DynamoLedger {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self
            .get(user_key(user_id), false)
            .await?
            .and_then(|item| get_s(&item, "customer_id").map(str::to_string)))
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hash_name_is_aliased() {
        let m = names(&[
            "SET #state = :s, #p_rev = :r ADD #ver :one",
            "#used <= :room",
        ]);
        assert_eq!(m.get("#state").map(String::as_str), Some("state"));
        assert_eq!(m.get("#p_rev").map(String::as_str), Some("p_rev"));
        assert_eq!(m.get("#used").map(String::as_str), Some("used"));
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
