//! The DynamoDB ledger: one table, `pk`/`sk` keys, conditional writes only.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | trace ledger entry | `TRACE#<trace id>` | `LEDGER` |
//! | malformed message | `MESSAGE#<message id>` | `FAILED` |
//! | budget counter (`used`, `capped`, `limit`, `exceeded`, `clears`) | `BUDGET#<customer>` | `PERIOD#<period key>` |
//! | budget alert (event `Budget Threshold Crossed`) | `BUDGET#<customer>` | `ALERT#<period key>#<percent>` |
//! | event `Budget Limit Reached` | `BUDGET#<customer>` | `LIMIT#<period key>#REACHED#<episode>` |
//! | event `Budget Limit Cleared` | `BUDGET#<customer>` | `LIMIT#<period key>#CLEARED#<episode>` |
//! | budget policy | `CUSTOMER#<customer>` | `BUDGET` |
//! | user mapping | `USER#<langfuse user id>` | `CUSTOMER` |
//! | delivery receipt | `RECEIPT#<receipt id>` | `RECEIPT` |
//! | request budget slot | `QUOTA#<service>` | `SLOT#<5-second slot, 12 digits>` |
//! | price version | `PRICE#default` or `PRICE#<customer>` | `FROM#<effective from, RFC 3339 ms>` |
//! | price book index (`scopes`: customers with versions, `complete`) | `PRICE#default` | `SCOPES` |
//!
//! A batch claim stores its receipt id on each claimed entry (`p_receipt`); once Stripe has
//! the events, ONE write adds their identifiers to the receipt's `delivered` set instead of
//! one mark per entry. [`ClaimStore::entry`](crate::ports::ClaimStore::entry) reads an entry
//! still `claimed` with a receipt that lists its identifier as metered; the next claim of the
//! trace folds it into the item.
//!
//! Every attribute in an expression is written `#name` and aliased automatically, so no
//! DynamoDB reserved word can bite.
//!
//! This file holds the table's few primitives (get, put, conditional update, transaction);
//! `items` the keys and attribute helpers (the ingest store uses them too); one file per
//! port implements it: `claims`, `deliveries`, `budgets`, `customers`, and for operators
//! `review` (the `attention` index), `messages` (malformed messages' records), `settle` (ambiguous claims), `rejections` (what Stripe dropped), `admin` (policies, mappings), `totals` (reconciling).

mod admin;
mod batch_get;
mod budgets;
mod claims;
mod customers;
mod deliveries;
mod entries;
mod items;
mod messages;
mod prices;
mod quota;
mod rejections;
mod review;
mod settle;
mod totals;
mod unsettled;

pub use batch_get::BATCH_GET_KEYS;
pub(crate) use batch_get::batch_get;
pub use claims::parse_entry;
pub(crate) use items::{Item, SERVICE, condition_held, get_time, key_item, ms, sdk_error};
pub use items::{
    alert_key, budget_event_key, budget_key, get_s, get_u64, message_key, n, policy_key,
    receipt_delivered, receipt_key, s, trace_key, user_key,
};
pub use prices::price_key;
pub use quota::{DynamoQuota, quota_key};
pub use review::ATTENTION_INDEX;

use crate::error::{Error, Result};
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use items::names;
use std::collections::HashMap;

/// The ledger, budgets and mappings in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLedger {
    /// For one table.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> DynamoLedger {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    /// Ingest's store on the same table: what reads the coverage a claim stored back (the
    /// ledger contract's read-back).
    #[cfg(feature = "testing")]
    pub(crate) fn ingest_store(&self) -> crate::adapters::ingest_store::DynamoIngestStore {
        crate::adapters::ingest_store::DynamoIngestStore::new(self.client.clone(), &self.table)
    }

    async fn get(&self, key: (String, String), consistent: bool) -> Result<Option<Item>> {
        get_item(&self.client, &self.table, key, consistent, "GetItem").await
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
        condition_held(&format!("UpdateItem on table {}", self.table), result)
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
                Err(sdk_error(
                    &format!("TransactWriteItems on table {}", self.table),
                    &e,
                ))
            }
        }
    }

    /// Every item of a `Query` (on `index`, or the table) page by page: `condition` is the key
    /// condition, `values` its values.
    async fn query_all(
        &self,
        index: Option<&str>,
        condition: &str,
        values: HashMap<String, AttributeValue>,
        consistent: bool,
    ) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression(condition)
                .set_expression_attribute_names(Some(names(&[condition])))
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(consistent)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("Query on table {}", self.table), &e))?;
            out.extend(page.items().iter().cloned());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every item that passes `filter` (with `values`), page by page: a full table scan, for
    /// the operator's occasional reads only (never on the billing path).
    async fn scan_all(
        &self,
        filter: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter)
                .set_expression_attribute_names(Some(names(&[filter])))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("Scan on table {}", self.table), &e))?;
            out.extend(page.items().iter().cloned());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// An unconditional put of a whole item (operator items: policies, mappings).
    async fn put(&self, item: Item) -> Result<()> {
        put_item(&self.client, &self.table, item, "PutItem").await
    }
}

/// Reads one item (`op` names the read in errors).
pub(crate) async fn get_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: (String, String),
    consistent: bool,
    op: &str,
) -> Result<Option<Item>> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key_item(key)))
        .consistent_read(consistent)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("{op} on table {table}"), &e))?;
    Ok(out.item)
}

/// An unconditional put of a whole item (`op` names the write in errors).
pub(crate) async fn put_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    item: Item,
    op: &str,
) -> Result<()> {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .map_err(|e| sdk_error(&format!("{op} on table {table}"), &e))?;
    Ok(())
}
