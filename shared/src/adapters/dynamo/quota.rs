//! The shared Langfuse request budget in the table: one counter item per 10-second slot
//! (`QUOTA#<service>` / `SLOT#<slot>`), taken with a conditional add (`domain::quota`).

use super::items::{Item, SERVICE, condition_held, get_u64, key_item, n, names, sdk_error};
use crate::domain::quota::{
    Grant, RequestLimit, earlier_slots, room, slot_expiry, slot_of, wait_for_next_slot,
};
use crate::error::Result;
use crate::ports::RequestQuota;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

/// The budget of one outside service, shared by every instance that uses the table.
#[derive(Debug)]
pub struct DynamoQuota {
    client: aws_sdk_dynamodb::Client,
    table: String,
    service: String,
    per_minute: u32,
}

/// The key of one slot's counter.
pub fn quota_key(service: &str, slot: i64) -> (String, String) {
    (format!("QUOTA#{service}"), format!("SLOT#{slot}"))
}

impl DynamoQuota {
    /// The budget `limit` of `service` (e.g. `langfuse`), or nothing to count when unlimited.
    pub fn for_limit(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        service: &str,
        limit: RequestLimit,
    ) -> Arc<dyn RequestQuota> {
        match limit {
            RequestLimit::Unlimited => Arc::new(crate::ports::Unmetered),
            RequestLimit::PerMinute(per_minute) => Arc::new(DynamoQuota {
                client,
                table: table.into(),
                service: service.to_string(),
                per_minute,
            }),
        }
    }

    /// The sum of the earlier slots of `slot`'s window, read (strongly consistent) at each
    /// take: a request taken just before a slot ended may land in its counter just after,
    /// so a sum remembered from the slot's start could miss it.
    async fn earlier_sum(&self, slot: i64) -> Result<u64> {
        let keys: Vec<Item> = earlier_slots(slot)
            .map(|s| key_item(quota_key(&self.service, s)))
            .collect();
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .projection_expression("#used")
            .set_expression_attribute_names(Some(names(&["#used"])))
            .build()
            .map_err(|e| sdk_error_text(e.to_string()))?;
        let mut sum = 0;
        loop {
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", &e))?;
            sum += out
                .responses()
                .and_then(|r| r.get(&self.table))
                .map(|items| items.iter().filter_map(|i| get_u64(i, "used")).sum::<u64>())
                .unwrap_or(0);
            match out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                Some(left) if !left.keys().is_empty() => request = left.clone(),
                _ => break,
            }
        }
        Ok(sum)
    }
}

fn sdk_error_text(detail: String) -> crate::Error {
    crate::Error::transient(SERVICE, format!("building a BatchGetItem: {detail}"))
}

#[async_trait]
impl RequestQuota for DynamoQuota {
    async fn take(&self, now: DateTime<Utc>) -> Result<Grant> {
        let slot = slot_of(now);
        let cap = room(self.per_minute, self.earlier_sum(slot).await?);
        if cap == 0 {
            return Ok(Grant::Wait(wait_for_next_slot(now)));
        }
        let update = "SET #expires_at = :expires ADD #used :one";
        let condition = "attribute_not_exists(#used) OR #used < :cap";
        let values = HashMap::from([
            (":expires".to_string(), n(slot_expiry(slot))),
            (":one".to_string(), n(1)),
            (":cap".to_string(), n(cap)),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_item(quota_key(&self.service, slot))))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[update, condition])))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        Ok(if condition_held("UpdateItem", result)? {
            Grant::Granted
        } else {
            Grant::Wait(wait_for_next_slot(now))
        })
    }
}
