//! A batch's ledger entries in as few calls as DynamoDB allows: one `BatchGetItem` per 100
//! traces, then one for the receipts their claims name, both eventually consistent.
//!
//! Why eventually consistent is enough here (half the read units of a strong read): every
//! decision the processor takes on these entries is either guarded by a conditional write
//! that fails on a stale read (a claim expects the version or the absence it read; taking
//! a claim over, calling it ambiguous or failing it pin the claim and check its receipt),
//! or, where it would acknowledge a message without writing (an ambiguous entry, an entry
//! that already covers the usage), confirmed by a strong `entry` read first.

use super::DynamoLedger;
use super::batch_get::batch_get;
use super::claims::parse_entry;
use super::items::{SERVICE, get_s, key_item, receipt_delivered, receipt_key, trace_key};
use crate::domain::ledger::{LedgerEntry, LedgerState};
use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap};

impl DynamoLedger {
    /// The entries of `trace_ids` that exist, a claim delivered through its receipt read as
    /// delivered (as `entry` reads it).
    pub(super) async fn read_entries(
        &self,
        trace_ids: &[String],
    ) -> Result<HashMap<String, LedgerEntry>> {
        let unique: BTreeSet<&String> = trace_ids.iter().collect();
        let keys = unique.iter().map(|id| key_item(trace_key(id))).collect();
        let mut entries = HashMap::new();
        for item in batch_get(&self.client, &self.table, keys, None, false).await? {
            // An item with keys but no state holds nothing (see `entry`).
            if !item.contains_key("state") {
                continue;
            }
            let entry = parse_entry(&item).ok_or_else(|| {
                let pk = get_s(&item, "pk").unwrap_or("?");
                Error::transient(SERVICE, format!("ledger entry {pk} is malformed: {item:?}"))
            })?;
            entries.insert(entry.trace_id.clone(), entry);
        }
        let receipts: BTreeSet<&str> = entries
            .values()
            .filter(|e| e.state == LedgerState::Claimed)
            .filter_map(|e| e.pending.as_ref()?.receipt.as_deref())
            .collect();
        if receipts.is_empty() {
            return Ok(entries);
        }
        let keys = receipts.iter().map(|r| key_item(receipt_key(r))).collect();
        // Receipt id -> the identifiers it lists as delivered.
        let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
        for item in batch_get(&self.client, &self.table, keys, None, false).await? {
            if let Some(id) = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("RECEIPT#")) {
                delivered.insert(id.to_string(), receipt_delivered(&item).to_vec());
            }
        }
        for entry in entries.values_mut() {
            let sent = entry.state == LedgerState::Claimed
                && entry.pending.as_ref().is_some_and(|p| {
                    p.receipt
                        .as_ref()
                        .and_then(|r| delivered.get(r))
                        .is_some_and(|ids| ids.contains(&p.identifier))
                });
            if sent {
                *entry = entry.clone().delivered();
            }
        }
        Ok(entries)
    }
}
