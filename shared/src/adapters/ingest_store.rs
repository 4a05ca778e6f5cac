//! Ingest's items in the ledger table and the ledger coverage look-up.
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | lease | `INGEST#<api>` | `LEASE` | `owner`, `lease_until` (ms), `expires_at` (s, TTL) |
//! | cursor | `INGEST#<api>` | `CURSOR` | `watermark` (ms); mid-scan `scan_from`, `scan_to`, `position` (ms); `rescan`: a map by tier age (s) of `{mark, scan_from?, scan_to?, position?}` (ms) |
//!
//! The lease is a conditional put (`attribute_not_exists(pk) OR lease_until < :now`), so two
//! runs never both work; it is released with a delete conditional on the owner.

use super::dynamo::{
    Item, batch_get, condition_held, get_item, get_s, get_time, key_item, ms, n, put_item, s,
    trace_key,
};
use crate::domain::ingest::{IngestCursor, LedgerCoverage, PendingScan, TierCursor};
use crate::domain::ledger::LedgerState;
use crate::domain::usage::decimal_from_f64;
use crate::error::Result;
use crate::ports::IngestStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

pub use super::dynamo::BATCH_GET_KEYS;
/// The lease item stays in the table this long after its lease ends (TTL cleans it up).
const LEASE_TTL_GRACE_SECONDS: i64 = 86_400;

/// Key of ingest's lease.
pub fn lease_key(api: &str) -> (String, String) {
    (format!("INGEST#{api}"), "LEASE".to_string())
}
/// Key of ingest's cursor.
pub fn cursor_key(api: &str) -> (String, String) {
    (format!("INGEST#{api}"), "CURSOR".to_string())
}

fn get_decimal(item: &Item, name: &str) -> Option<Decimal> {
    let raw = item.get(name)?.as_n().ok()?;
    Decimal::from_str(raw)
        .ok()
        .or_else(|| Decimal::from_scientific(raw).ok())
        .or_else(|| raw.parse::<f64>().ok().and_then(decimal_from_f64))
}

/// Ingest's lease, cursor and ledger look-ups in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoIngestStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoIngestStore {
    /// For one table.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> DynamoIngestStore {
        DynamoIngestStore {
            client,
            table: table.into(),
        }
    }

    /// The coverage attributes of the entries of `keys` (eventually consistent: skipping a
    /// covered trace is an optimisation the processor's conditional writes back up).
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        let names = [
            ("#pk", "pk"),
            ("#state", "state"),
            ("#lo", "last_observation_at"),
            ("#cost", "cost_usd"),
            ("#lat", "latency_s"),
        ];
        let projection = ("#pk, #state, #lo, #cost, #lat", &names[..]);
        batch_get(&self.client, &self.table, keys, Some(projection), false).await
    }
}

#[async_trait]
impl IngestStore for DynamoIngestStore {
    async fn acquire_lease(
        &self,
        api: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut item = key_item(lease_key(api));
        item.insert("owner".into(), s(owner));
        item.insert("lease_until".into(), ms(lease_until));
        item.insert(
            "expires_at".into(),
            n(lease_until.timestamp() + LEASE_TTL_GRACE_SECONDS),
        );
        item.insert("acquired_at".into(), ms(now));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // Our own lease counts as free: when the answer to this put is lost and the SDK
            // retries it, the retry must not find the run locked out by itself.
            .condition_expression(
                "attribute_not_exists(#pk) OR #lease_until < :now OR #owner = :owner",
            )
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#lease_until", "lease_until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", ms(now))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        condition_held("PutItem (lease)", result)
    }

    async fn release_lease(&self, api: &str, owner: &str) -> Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item(lease_key(api))))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        if !condition_held("DeleteItem (lease)", result)? {
            tracing::warn!(api, owner, "lease was no longer ours at release");
        }
        Ok(())
    }

    async fn load_cursor(&self, api: &str) -> Result<IngestCursor> {
        let read = get_item(
            &self.client,
            &self.table,
            cursor_key(api),
            true,
            "GetItem (cursor)",
        );
        let Some(item) = read.await? else {
            return Ok(IngestCursor::default());
        };
        Ok(cursor_from_item(&item))
    }

    async fn save_cursor(
        &self,
        api: &str,
        cursor: &IngestCursor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let item = cursor_item(api, cursor, now);
        put_item(&self.client, &self.table, item, "PutItem (cursor)").await
    }

    async fn coverage(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerCoverage>> {
        let mut out = HashMap::new();
        let mut unique: Vec<&String> = trace_ids.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            let keys = chunk.iter().map(|id| key_item(trace_key(id))).collect();
            for item in self.batch_get(keys).await? {
                let Some(id) = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("TRACE#")) else {
                    continue;
                };
                out.insert(
                    id.to_string(),
                    LedgerCoverage {
                        state: get_s(&item, "state").and_then(LedgerState::parse),
                        last_observation_at: get_time(&item, "last_observation_at"),
                        cost_usd: get_decimal(&item, "cost_usd"),
                        latency_seconds: get_decimal(&item, "latency_s"),
                    },
                );
            }
        }
        Ok(out)
    }
}

/// The cursor item.
fn cursor_item(api: &str, cursor: &IngestCursor, now: DateTime<Utc>) -> Item {
    let mut item = key_item(cursor_key(api));
    if let Some(w) = cursor.watermark {
        item.insert("watermark".into(), ms(w));
    }
    put_pending(&mut item, cursor.pending);
    if !cursor.tiers.is_empty() {
        let tiers = cursor.tiers.iter().map(|(age, tier)| {
            let mut m = HashMap::from([("mark".to_string(), ms(tier.mark))]);
            put_pending(&mut m, tier.pending);
            (age.to_string(), AttributeValue::M(m))
        });
        item.insert("rescan".into(), AttributeValue::M(tiers.collect()));
    }
    item.insert("updated_at".into(), ms(now));
    item
}

/// A cut-off range as `scan_from`, `scan_to`, `position`.
fn put_pending(item: &mut Item, pending: Option<PendingScan>) {
    if let Some(p) = pending {
        item.insert("scan_from".into(), ms(p.from));
        item.insert("scan_to".into(), ms(p.to));
        item.insert("position".into(), ms(p.position));
    }
}

fn get_pending(item: &Item) -> Option<PendingScan> {
    match (
        get_time(item, "scan_from"),
        get_time(item, "scan_to"),
        get_time(item, "position"),
    ) {
        (Some(from), Some(to), Some(position)) => Some(PendingScan { from, to, position }),
        _ => None,
    }
}

/// The cursor an item holds (an item written before the tiers has no `rescan` map: the
/// tiers then start from the watermark).
fn cursor_from_item(item: &Item) -> IngestCursor {
    let tiers = match item.get("rescan") {
        Some(AttributeValue::M(m)) => m
            .iter()
            .filter_map(|(age, v)| {
                let tier = v.as_m().ok()?;
                let cursor = TierCursor {
                    mark: get_time(tier, "mark")?,
                    pending: get_pending(tier),
                };
                Some((age.parse().ok()?, cursor))
            })
            .collect(),
        _ => Default::default(),
    };
    IngestCursor {
        watermark: get_time(item, "watermark"),
        pending: get_pending(item),
        tiers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_item_round_trips_with_its_tiers() {
        let at = |ms: i64| DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("t");
        let scan = PendingScan {
            from: at(1),
            to: at(900),
            position: at(450),
        };
        let mut cursor = IngestCursor {
            watermark: Some(at(1_000)),
            pending: Some(scan),
            ..IngestCursor::default()
        };
        let item = cursor_item("v2", &cursor, at(2_000));
        assert_eq!(cursor_from_item(&item), cursor, "no tiers yet");
        cursor.complete(crate::domain::ingest::Lane::Tier(900), scan);
        cursor.checkpoint(crate::domain::ingest::Lane::Tier(86_400), scan);
        let item = cursor_item("v2", &cursor, at(2_000));
        assert!(matches!(item.get("rescan"), Some(AttributeValue::M(m)) if m.len() == 2));
        assert_eq!(cursor_from_item(&item), cursor);
    }

    #[test]
    fn keys_and_numbers() {
        assert_eq!(lease_key("v2"), ("INGEST#v2".into(), "LEASE".into()));
        assert_eq!(
            cursor_key("legacy"),
            ("INGEST#legacy".into(), "CURSOR".into())
        );
        let item: Item = HashMap::from([
            ("a".to_string(), n("0.0116")),
            ("b".to_string(), n("1E-7")),
            ("t".to_string(), n(1_800_000_000_123i64)),
        ]);
        assert_eq!(get_decimal(&item, "a"), Decimal::from_str("0.0116").ok());
        assert_eq!(get_decimal(&item, "b"), Decimal::from_str("0.0000001").ok());
        assert_eq!(
            get_time(&item, "t").map(|t| t.timestamp_millis()),
            Some(1_800_000_000_123)
        );
    }
}
