//! Totals for reconciling: every trace entry read once (a paginated scan, with the receipts
//! of claimed entries), and a customer's budget counters.

use super::DynamoLedger;
use super::claims::parse_entry;
use super::items::{
    Item, budget_key, get_s, get_time, names, receipt_delivered, receipt_key, s, sdk_error,
};
use crate::domain::budget::BudgetUsage;
use crate::domain::ledger::LedgerEntry;
use crate::domain::reconcile::{BilledTotals, add};
use crate::error::Result;
use crate::ports::LedgerTotals;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

#[async_trait]
impl LedgerTotals for DynamoLedger {
    async fn billed_by_customer(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<BTreeMap<String, BilledTotals>> {
        let mut receipts: HashMap<String, Vec<String>> = HashMap::new();
        let mut out: BTreeMap<String, BilledTotals> = BTreeMap::new();
        for item in self.trace_items().await? {
            let (Some(entry), Some(at)) = (parse_entry(&item), get_time(&item, "usage_at")) else {
                continue;
            };
            if at < start || at >= end {
                continue;
            }
            let delivered = match entry.pending.as_ref().and_then(|p| p.receipt.clone()) {
                Some(r) => self
                    .receipt(&mut receipts, &r)
                    .await?
                    .contains(&pending_id(&entry)),
                None => false,
            };
            add(&mut out, &entry, delivered);
        }
        Ok(out)
    }

    async fn counters(&self, customer_id: &str) -> Result<BTreeMap<String, BudgetUsage>> {
        let condition = "#pk = :pk AND begins_with(#sk, :period)";
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[condition])))
            .expression_attribute_values(":pk", s(budget_key(customer_id, "").0))
            .expression_attribute_values(":period", s("PERIOD#"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("Query on table {}", self.table), &e))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|item| {
                let key = get_s(item, "sk")?.strip_prefix("PERIOD#")?.to_string();
                Some((key, super::budgets::usage_of(item)))
            })
            .collect())
    }
}

/// The pending revision's identifier (empty without one).
fn pending_id(entry: &LedgerEntry) -> String {
    entry
        .pending
        .as_ref()
        .map(|p| p.identifier.clone())
        .unwrap_or_default()
}

impl DynamoLedger {
    /// Every trace entry item, page by page.
    async fn trace_items(&self) -> Result<Vec<Item>> {
        let filter = "begins_with(#pk, :trace)";
        let values = HashMap::from([(":trace".to_string(), s("TRACE#"))]);
        self.scan_all(filter, values).await
    }

    /// A receipt's delivered identifiers, read once per run.
    async fn receipt<'a>(
        &self,
        cache: &'a mut HashMap<String, Vec<String>>,
        receipt: &str,
    ) -> Result<&'a Vec<String>> {
        if !cache.contains_key(receipt) {
            let item = self.get(receipt_key(receipt), true).await?;
            let ids = item
                .map(|i| receipt_delivered(&i).to_vec())
                .unwrap_or_default();
            cache.insert(receipt.to_string(), ids);
        }
        Ok(cache.entry(receipt.to_string()).or_default())
    }
}
