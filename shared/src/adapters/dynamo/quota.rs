//! The shared Langfuse request budget in the table: one counter item per slot
//! (`QUOTA#<service>` / `SLOT#<slot, 12 digits>`), taken with a conditional add
//! (`domain::quota`). The earlier slots of a window are read with ONE strongly consistent
//! `Query` over the key range: a query is billed by the bytes it reads (a dozen tiny items:
//! 1 read unit), where a `BatchGetItem` is billed per item (12 read units).

use super::items::{get_u64, key_item, n, names, s, sdk_error};
use crate::domain::quota::{
    Grant, RequestLimit, earlier_slots, room, slot_expiry, slot_of, wait_for_next_slot,
};
use crate::error::Result;
use crate::ports::RequestQuota;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
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
    /// The slot in which a take was refused: every later take in it is refused here, without
    /// a call (within a slot the room only shrinks: the earlier slots are fixed and the
    /// slot's own count only grows). A batch of traces read one by one (the legacy API)
    /// asks once per slot, not once per trace, while the budget is spent.
    refused: std::sync::Mutex<Option<i64>>,
}

/// The key of one slot's counter (the slot zero-padded, so that keys sort as slots do).
pub fn quota_key(service: &str, slot: i64) -> (String, String) {
    (format!("QUOTA#{service}"), format!("SLOT#{slot:012}"))
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
                refused: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The sum of the earlier slots of `slot`'s window, read (strongly consistent) at each
    /// take: a request taken just before a slot ended may land in its counter just after,
    /// so a sum remembered from the slot's start could miss it.
    async fn earlier_sum(&self, slot: i64) -> Result<u64> {
        let mut earlier = earlier_slots(slot);
        let first = earlier.next();
        let (Some(first), Some(last)) = (first, earlier.last().or(first)) else {
            return Ok(0);
        };
        let (pk, from) = quota_key(&self.service, first);
        let (_, to) = quota_key(&self.service, last);
        let key = "#pk = :pk AND #sk BETWEEN :from AND :to";
        let mut sum = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key)
                .projection_expression("#used")
                .set_expression_attribute_names(Some(names(&[key, "#used"])))
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":from", s(&from))
                .expression_attribute_values(":to", s(&to))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", &e))?;
            sum += page
                .items()
                .iter()
                .filter_map(|i| get_u64(i, "used"))
                .sum::<u64>();
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(sum),
            }
        }
    }
}

#[async_trait]
impl RequestQuota for DynamoQuota {
    async fn take(&self, now: DateTime<Utc>) -> Result<Grant> {
        Ok(match self.take_up_to(now, 1).await? {
            0 => Grant::Wait(wait_for_next_slot(now)),
            _ => Grant::Granted,
        })
    }

    /// One strongly consistent `Query` of the window's earlier slots and ONE conditional add
    /// of all that fits; when another instance took part of the room meanwhile, the refused
    /// add returns the slot's count (`ReturnValuesOnConditionCheckFailure`) and what still
    /// fits is added once more.
    async fn take_up_to(&self, now: DateTime<Utc>, want: u32) -> Result<u32> {
        let slot = slot_of(now);
        if want == 0 || self.refused_in(slot) {
            return Ok(0);
        }
        let cap = room(self.per_minute, self.earlier_sum(slot).await?);
        let mut used = 0;
        for _ in 0..ADD_TRIES {
            let take = cap.saturating_sub(used).min(u64::from(want));
            if take == 0 {
                break;
            }
            match self.add(slot, take, cap).await? {
                None => {
                    if take < u64::from(want) {
                        // The slot's room is spent: later takes in it are refused here.
                        self.refuse(slot);
                    }
                    return Ok(take as u32);
                }
                Some(now_used) => used = now_used,
            }
        }
        self.refuse(slot);
        Ok(0)
    }
}

/// Conditional adds tried per take: each refusal follows another instance's take in the
/// same slot, and tells how much room that left.
const ADD_TRIES: usize = 8;

impl DynamoQuota {
    /// Adds `take` requests to `slot`'s count if it stays within `cap`; `None` when added,
    /// else the count that refused it.
    async fn add(&self, slot: i64, take: u64, cap: u64) -> Result<Option<u64>> {
        let update = "SET #expires_at = :expires ADD #used :take";
        let condition = "attribute_not_exists(#used) OR #used <= :most";
        let values = HashMap::from([
            (":expires".to_string(), n(slot_expiry(slot))),
            (":take".to_string(), n(take)),
            (":most".to_string(), n(cap - take)),
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
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refused)) => Ok(Some(
                    refused
                        .item()
                        .and_then(|item| get_u64(item, "used"))
                        .unwrap_or(cap),
                )),
                _ => Err(sdk_error("UpdateItem", &e)),
            },
        }
    }
}

impl DynamoQuota {
    fn refused_in(&self, slot: i64) -> bool {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) == Some(slot)
    }

    fn refuse(&self, slot: i64) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
    }
}
