//! Entries that need attention, through the sparse `attention` index: only items with a
//! `reason` are in it (failed entries, ambiguous ones, and billed entries whose later
//! revision failed), keyed by `reason` and sorted by `updated_at`. And what an entry view
//! leaves out (the period its credits were counted in).

use super::DynamoLedger;
use super::claims::parse_entry;
use super::items::{Item, get_s, get_time, ms, s, trace_key};
use crate::domain::attention::{AMBIGUOUS_REASON, AttentionEntry, AttentionQuery};
use crate::domain::ledger::LedgerState;
use crate::error::{FailureReason, Result};
use crate::ports::{AttentionIndex, LedgerInspection};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The index `template.yaml` defines on the ledger table.
pub const ATTENTION_INDEX: &str = "attention";

#[async_trait]
impl AttentionIndex for DynamoLedger {
    async fn needing_attention(&self, query: &AttentionQuery) -> Result<Vec<AttentionEntry>> {
        let mut out = Vec::new();
        for reason in reasons(query) {
            out.extend(self.by_reason(&reason, query).await?);
        }
        out.sort_by(|a, b| {
            (a.updated_at, &a.entry.trace_id).cmp(&(b.updated_at, &b.entry.trace_id))
        });
        Ok(out)
    }
}

#[async_trait]
impl LedgerInspection for DynamoLedger {
    async fn counted_period(&self, trace_id: &str) -> Result<Option<String>> {
        let item = self.get(trace_key(trace_id), true).await?;
        Ok(item.and_then(|item| {
            get_s(&item, "p_period")
                .or_else(|| get_s(&item, "period"))
                .map(str::to_string)
        }))
    }
}

/// The index partitions a query reads.
fn reasons(query: &AttentionQuery) -> Vec<String> {
    match (&query.reason, query.state) {
        (Some(r), _) => vec![r.clone()],
        (None, LedgerState::Ambiguous) => vec![AMBIGUOUS_REASON.to_string()],
        (None, _) => FailureReason::ALL
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
    }
}

impl DynamoLedger {
    /// One index partition, every page, filtered by the query (message records left out:
    /// they name no trace).
    async fn by_reason(&self, reason: &str, query: &AttentionQuery) -> Result<Vec<AttentionEntry>> {
        let mut out = Vec::new();
        for item in self.attention_items(reason, query.since).await? {
            let (Some(entry), Some(at)) = (parse_entry(&item), get_time(&item, "updated_at"))
            else {
                continue; // a malformed-message record: `failed_messages` lists them
            };
            if query.matches(&entry, at) {
                out.push(AttentionEntry {
                    entry,
                    updated_at: at,
                });
            }
        }
        Ok(out)
    }

    /// Every item of one index partition written at or after `since`, every page.
    pub(super) async fn attention_items(
        &self,
        reason: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Item>> {
        let mut condition = "#reason = :reason".to_string();
        let mut values = HashMap::from([(":reason".to_string(), s(reason))]);
        if let Some(since) = since {
            condition.push_str(" AND #updated_at >= :since");
            values.insert(":since".into(), ms(since));
        }
        self.query_all(Some(ATTENTION_INDEX), &condition, values, false)
            .await
    }
}
