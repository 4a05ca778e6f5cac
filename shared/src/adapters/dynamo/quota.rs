//! The shared Langfuse request budget in the table: one counter item per slot
//! (`QUOTA#<service>` / `SLOT#<slot, 12 digits>`), taken with a conditional add
//! (`domain::quota`). The earlier slots of a window are read with ONE strongly consistent
//! `Query` over the key range: a query is billed by the bytes it reads (a dozen tiny items:
//! 1 read unit), where a `BatchGetItem` is billed per item (12 read units).
//!
//! The schedule of deferred messages' returns (`domain::returns`) is one item beside the
//! slots (`QUOTA#<service>` / `RETURNS`: the open bunch's `at`, in ms, and `booked`), written
//! with a condition on the bunch the writer booked after; a refused write returns the item
//! (`ReturnValuesOnConditionCheckFailure`) and the booking is made again after it.

use super::items::{get_s, get_u64, key_item, n, names, s, sdk_error};
use crate::domain::quota::{
    Grant, RequestLimit, Taken, earlier_slots, room, slot_expiry, slot_of, wait_for_room,
};
use crate::domain::returns::{self, Bunch, Returns};
use crate::error::Result;
use crate::ports::RequestQuota;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The budget of one outside service, shared by every instance that uses the table.
#[derive(Debug)]
pub struct DynamoQuota {
    client: aws_sdk_dynamodb::Client,
    table: String,
    service: String,
    per_minute: u32,
    /// Until when the budget has no room, as the last refusal computed it
    /// ([`wait_for_room`]: a lower bound, counts only grow): every take before then is
    /// refused here, without a call.
    refused: std::sync::Mutex<Option<Refused>>,
    /// The returns schedule's open bunch as last written or read here: the first booking
    /// is tried after it (a stale one is refused, and the refusal says the current one).
    schedule: std::sync::Mutex<Option<Bunch>>,
}

/// The last refusal: until when no take has room, and the counts it was computed from.
#[derive(Debug)]
struct Refused {
    until: DateTime<Utc>,
    counts: BTreeMap<i64, u64>,
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
                schedule: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The sum of the earlier slots of `slot`'s window, read (strongly consistent) at each
    /// take: a request taken just before a slot ended may land in its counter just after,
    /// so a sum remembered from the slot's start could miss it. By slot.
    async fn earlier(&self, slot: i64) -> Result<BTreeMap<i64, u64>> {
        let mut earlier = earlier_slots(slot);
        let first = earlier.next();
        let mut counts = BTreeMap::new();
        let (Some(first), Some(last)) = (first, earlier.last().or(first)) else {
            return Ok(counts);
        };
        let (pk, from) = quota_key(&self.service, first);
        let (_, to) = quota_key(&self.service, last);
        let key = "#pk = :pk AND #sk BETWEEN :from AND :to";
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key)
                .projection_expression("#sk, #used")
                .set_expression_attribute_names(Some(names(&[key, "#used"])))
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":from", s(&from))
                .expression_attribute_values(":to", s(&to))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", &e))?;
            for item in page.items() {
                let slot = get_s(item, "sk")
                    .and_then(|sk| sk.strip_prefix("SLOT#"))
                    .and_then(|n| n.parse().ok());
                if let (Some(slot), Some(used)) = (slot, get_u64(item, "used")) {
                    counts.insert(slot, used);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(counts),
            }
        }
    }
}

#[async_trait]
impl RequestQuota for DynamoQuota {
    async fn take(&self, now: DateTime<Utc>) -> Result<Grant> {
        let taken = self.take_up_to(now, 1).await?;
        Ok(match taken.granted {
            0 => Grant::Wait(taken.wait),
            _ => Grant::Granted,
        })
    }

    /// One strongly consistent `Query` of the window's earlier slots and ONE conditional add
    /// of all that fits; when another instance took part of the room meanwhile, the refused
    /// add returns the slot's count (`ReturnValuesOnConditionCheckFailure`) and what still
    /// fits is added once more. When the room is spent, the wait is until the oldest counted
    /// slots leave the window, and takes before then are refused without a call.
    async fn take_up_to(&self, now: DateTime<Utc>, want: u32) -> Result<Taken> {
        if want == 0 {
            return Ok(Taken {
                granted: 0,
                wait: Duration::ZERO,
            });
        }
        if let Some(wait) = self.refused_for(now, want) {
            return Ok(Taken { granted: 0, wait });
        }
        let slot = slot_of(now);
        let mut counts = self.earlier(slot).await?;
        let cap = room(self.per_minute, counts.values().sum());
        let mut used = 0;
        let mut granted = 0;
        for _ in 0..ADD_TRIES {
            let take = cap.saturating_sub(used).min(u64::from(want));
            if take == 0 {
                break;
            }
            match self.add(slot, take, cap).await? {
                None => {
                    granted = take;
                    used += take;
                    break;
                }
                Some(now_used) => used = now_used,
            }
        }
        if granted == u64::from(want) {
            return Ok(Taken {
                granted: want,
                wait: Duration::ZERO,
            });
        }
        // The room is spent (as far as read): no take is worth asking before there is room
        // for one, and the rest asked for is worth asking again when there is room for it.
        counts.insert(slot, used.max(cap));
        let for_one = wait_for_room(self.per_minute, 1, &counts, now);
        let rest = want - granted as u32;
        let wait = wait_for_room(self.per_minute, rest, &counts, now);
        let until = now + chrono::Duration::from_std(for_one).unwrap_or_default();
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(Refused { until, counts });
        Ok(Taken {
            granted: granted as u32,
            wait,
        })
    }

    /// The open bunch as known here, then as each refused write says, until a write holds
    /// (at most [`ADD_TRIES`]: each refusal is another instance's booking).
    async fn book_returns(
        &self,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        n: usize,
        requests_per_message: f64,
    ) -> Result<Option<Returns>> {
        let per_bunch = returns::per_bunch(self.per_minute, requests_per_message);
        let mut known = *self.schedule.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..ADD_TRIES {
            let booking = returns::book(known, earliest, n, per_bunch, latest);
            let written = match booking.open.filter(|open| Some(*open) != known) {
                None => Ok(()),
                Some(open) => self.write_schedule(known, open).await?,
            };
            match written {
                Ok(()) => {
                    *self.schedule.lock().unwrap_or_else(|e| e.into_inner()) = booking.open;
                    return Ok(Some(booking.returns));
                }
                Err(current) => known = current,
            }
        }
        Err(crate::error::Error::transient(
            "dynamodb",
            format!(
                "the {} returns schedule changed under {ADD_TRIES} bookings",
                self.service
            ),
        ))
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
        let refused = self
            .update_or_refused(quota_key(&self.service, slot), update, condition, values)
            .await?;
        Ok(refused.map(|item| item.and_then(|i| get_u64(&i, "used")).unwrap_or(cap)))
    }
}

impl DynamoQuota {
    /// A conditional update of `key`: `None` when it held, else the item that refused it
    /// (`ReturnValuesOnConditionCheckFailure`; `None` inside when there is no item).
    async fn update_or_refused(
        &self,
        key: (String, String),
        update: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Option<Option<HashMap<String, AttributeValue>>>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_item(key)))
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
                Some(UpdateItemError::ConditionalCheckFailedException(refused)) => {
                    Ok(Some(refused.item().cloned()))
                }
                _ => Err(sdk_error("UpdateItem", &e)),
            },
        }
    }
}

/// The returns schedule's key.
fn schedule_key(service: &str) -> (String, String) {
    (format!("QUOTA#{service}"), "RETURNS".to_string())
}

/// The open bunch an item holds (`None`: no item, or an unreadable one).
fn bunch_of(item: &HashMap<String, AttributeValue>) -> Option<Bunch> {
    Some(Bunch {
        at: DateTime::from_timestamp_millis(get_u64(item, "at")? as i64)?,
        booked: get_u64(item, "booked")?,
    })
}

impl DynamoQuota {
    /// Writes `open` as the schedule's bunch if it still is `known`; else the bunch it is.
    async fn write_schedule(
        &self,
        known: Option<Bunch>,
        open: Bunch,
    ) -> Result<std::result::Result<(), Option<Bunch>>> {
        let update = "SET #at = :at, #booked = :booked, #expires_at = :expires";
        let mut values = HashMap::from([
            (":at".to_string(), n(open.at.timestamp_millis())),
            (":booked".to_string(), n(open.booked)),
            // Kept a day after its returns: the next booking after an idle day starts again.
            (":expires".to_string(), n(open.at.timestamp() + 86_400)),
        ]);
        let condition = match known {
            None => "attribute_not_exists(#at)",
            Some(k) => {
                values.insert(":was_at".to_string(), n(k.at.timestamp_millis()));
                values.insert(":was_booked".to_string(), n(k.booked));
                "#at = :was_at AND #booked = :was_booked"
            }
        };
        let refused = self
            .update_or_refused(schedule_key(&self.service), update, condition, values)
            .await?;
        Ok(match refused {
            None => Ok(()),
            Some(item) => Err(item.as_ref().and_then(bunch_of)),
        })
    }

    /// Before the last refusal's time has passed: the wait for room for `want`, from the
    /// counts it read.
    fn refused_for(&self, now: DateTime<Utc>, want: u32) -> Option<Duration> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let r = refused.as_ref().filter(|r| now < r.until)?;
        Some(wait_for_room(self.per_minute, want, &r.counts, now))
    }
}
