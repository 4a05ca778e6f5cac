//! One Langfuse request budget for the whole deployment (`LANGFUSE_REQUESTS_PER_MINUTE`).
//!
//! Langfuse limits requests per organisation and per minute, whoever sends them. Ingest and
//! every process instance therefore draw from one shared count, kept in the table: time is
//! cut into [`SLOT_SECONDS`] slots, each slot one counter item, and a request is taken in the
//! slot of its start with a conditional add that holds only while the slot and the
//! [`SLOTS_PER_WINDOW`] - 1 slots before it stay within the limit. Any 60 seconds lie within
//! [`SLOTS_PER_WINDOW`] consecutive slots, so no 60-second span (wherever Langfuse's own window
//! starts) ever holds more requests than the budget. The price: at full load the budget is
//! spent in 65 seconds, not 60 (92 % of the nominal rate; 10-second slots gave 86 %).

use chrono::{DateTime, Utc};
use std::time::Duration;

/// The length of one counter slot, in seconds.
pub const SLOT_SECONDS: i64 = 5;
/// Slots that together cover any 60-second span: 11 whole slots and the two partial ends.
pub const SLOTS_PER_WINDOW: i64 = 13;

/// The deployment-wide request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestLimit {
    /// At most this many requests in any 60 seconds.
    PerMinute(u32),
    /// No limit (self-hosted Langfuse): nothing is counted.
    Unlimited,
}

/// The answer to a request for budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Taken: send the request now.
    Granted,
    /// The budget is spent; the earliest time worth asking again is this far away.
    Wait(Duration),
}

/// The answer to a request for several requests' budget at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// How many were granted (send that many now).
    pub granted: u32,
    /// When fewer were granted than asked: how long until asking again is worth it.
    pub wait: Duration,
}

/// The slot that holds `at`.
pub fn slot_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(SLOT_SECONDS)
}

/// The slots before `slot` that share a window with it, oldest first.
pub fn earlier_slots(slot: i64) -> impl Iterator<Item = i64> {
    (slot - (SLOTS_PER_WINDOW - 1))..slot
}

/// How many requests the slot may still hold after the earlier slots of its window took
/// `earlier` of `limit`: the cap the conditional add checks the slot's count against.
pub fn room(limit: u32, earlier: u64) -> u64 {
    u64::from(limit).saturating_sub(earlier)
}

/// How long, at `now`, until the budget has room for `need` requests again (at most the
/// whole `limit`), from the requests counted in the window's slots (`counts`, by slot; the
/// current slot's as far as known): a take in slot `t` holds while the slots `t - 12 ..= t`
/// stay within `limit`, and the slots after now hold nothing yet, so room comes back as
/// the oldest counted slots leave the window. At least until the next slot; at most until
/// the window holds none of the counted slots. A lower bound: counts only grow, so no room
/// comes back earlier.
pub fn wait_for_room(
    limit: u32,
    need: u32,
    counts: &std::collections::BTreeMap<i64, u64>,
    now: DateTime<Utc>,
) -> Duration {
    let slot = slot_of(now);
    let need = u64::from(need.clamp(1, limit.max(1)));
    let mut t = slot + 1;
    while t < slot + SLOTS_PER_WINDOW {
        let in_window: u64 = counts
            .range(t - (SLOTS_PER_WINDOW - 1)..=t)
            .map(|(_, c)| c)
            .sum();
        if in_window + need <= u64::from(limit) {
            break;
        }
        t += 1;
    }
    let left = t * SLOT_SECONDS * 1000 - now.timestamp_millis();
    Duration::from_millis(left.max(1) as u64)
}

/// When a slot's counter may be forgotten (its item's TTL): well after it left every window.
pub fn slot_expiry(slot: i64) -> i64 {
    (slot + SLOTS_PER_WINDOW) * SLOT_SECONDS + 3_600
}

/// The budget's property (no 60 seconds hold more than the limit, steady demand gets most of
/// it) is checked on the adapters themselves: `MemoryQuota` (`testing::quota`) and
/// `DynamoQuota` on moto (`tests/tests/it/contract.rs`).
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    #[test]
    fn a_slot_is_five_seconds_and_its_window_the_twelve_before() {
        assert_eq!(slot_of(at(0)), 0);
        assert_eq!(slot_of(at(4_999)), 0);
        assert_eq!(slot_of(at(5_000)), 1);
        assert_eq!(slot_of(at(-1)), -1);
        assert_eq!(
            earlier_slots(20).collect::<Vec<_>>(),
            (8..20).collect::<Vec<_>>()
        );
        assert_eq!(room(30, 25), 5);
        assert_eq!(room(30, 40), 0);
    }

    #[test]
    fn room_comes_back_when_the_oldest_counted_slots_leave_the_window() {
        use std::collections::BTreeMap;
        let wait = |limit, need, counts: &BTreeMap<i64, u64>| {
            wait_for_room(limit, need, counts, at(75_500)).as_millis()
        };
        // 30 a minute: 20 in slot 8, 10 in slot 14, asked at 75.5 s (slot 15).
        let counts = BTreeMap::from([(8, 20), (14, 10)]);
        // Slot 8 leaves the window of slot 21 (9..=21): at 105 s.
        assert_eq!(wait(30, 1, &counts), 29_500);
        // Room for 20 then too; room for 21 or more (the whole budget at most) only when
        // slot 14 has left as well (the window of slot 27): at 135 s.
        assert_eq!(wait(30, 20, &counts), 29_500);
        assert_eq!(wait(30, 21, &counts), 59_500);
        assert_eq!(wait(30, 100, &counts), 59_500);
        // Room for one more as soon as the next slot starts, when the window is not full.
        assert_eq!(wait(31, 1, &counts), 4_500);
        // Everything in the current slot: room when it leaves the window, 65 s after it began.
        assert_eq!(wait(30, 1, &BTreeMap::from([(15, 30)])), 64_500);
        // Nothing counted (a refusal from a count not read): the next slot.
        assert_eq!(wait(30, 1, &BTreeMap::new()), 4_500);
    }

    #[test]
    fn a_slot_counter_expires_an_hour_after_its_last_window() {
        // Slot 100 (500-505 s) is in windows until slot 112 ends, at 565 s.
        assert_eq!(slot_expiry(100), 565 + 3_600);
        assert_eq!(slot_expiry(-1), 60 + 3_600);
    }
}
