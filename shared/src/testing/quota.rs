//! [`MemoryQuota`]: the shared request budget, slot counters in memory, with the same
//! conditional add as [`crate::adapters::dynamo::DynamoQuota`].

use super::lock;
use crate::domain::quota::{Grant, Taken, earlier_slots, room, slot_of, wait_for_room};
use crate::domain::returns::{self, Bunch, Returns};
use crate::error::Result;
use crate::ports::RequestQuota;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A request budget of `per_minute`, shared by whoever holds it.
#[derive(Debug)]
pub struct MemoryQuota {
    per_minute: u32,
    slots: Mutex<BTreeMap<i64, u64>>,
    /// The returns schedule's open bunch.
    schedule: Mutex<Option<Bunch>>,
}

impl MemoryQuota {
    /// At most `per_minute` requests in any 60 seconds.
    pub fn new(per_minute: u32) -> MemoryQuota {
        MemoryQuota {
            per_minute,
            slots: Mutex::new(BTreeMap::new()),
            schedule: Mutex::new(None),
        }
    }

    /// Requests granted so far.
    pub fn granted(&self) -> u64 {
        lock(&self.slots).values().sum()
    }
}

#[async_trait]
impl RequestQuota for MemoryQuota {
    async fn take(&self, now: DateTime<Utc>) -> Result<Grant> {
        let taken = self.take_up_to(now, 1).await?;
        Ok(match taken.granted {
            0 => Grant::Wait(taken.wait),
            _ => Grant::Granted,
        })
    }

    async fn take_up_to(&self, now: DateTime<Utc>, want: u32) -> Result<Taken> {
        let slot = slot_of(now);
        let mut slots = lock(&self.slots);
        let earlier: u64 = earlier_slots(slot)
            .map(|s| slots.get(&s).copied().unwrap_or(0))
            .sum();
        let used = slots.entry(slot).or_default();
        let granted = room(self.per_minute, earlier)
            .saturating_sub(*used)
            .min(u64::from(want));
        *used += granted;
        let wait = if granted < u64::from(want) {
            let rest = want - granted as u32;
            wait_for_room(self.per_minute, rest, &slots, now)
        } else {
            Duration::ZERO
        };
        Ok(Taken {
            granted: granted as u32,
            wait,
        })
    }

    async fn book_returns(
        &self,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        n: usize,
        requests_per_message: f64,
    ) -> Result<Option<Returns>> {
        let per_bunch = returns::per_bunch(self.per_minute, requests_per_message);
        let mut open = lock(&self.schedule);
        let booking = returns::book(*open, earliest, n, per_bunch, latest);
        *open = booking.open;
        Ok(Some(booking.returns))
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryQuota;
    use crate::testing::contract::quota::{self, CONTRACT_LIMIT};
    use proptest::prelude::*;

    #[tokio::test]
    async fn the_memory_quota_keeps_the_contract() {
        quota::the_budget_is_never_exceeded(&MemoryQuota::new(CONTRACT_LIMIT)).await;
        quota::earlier_slots_count(&MemoryQuota::new(CONTRACT_LIMIT)).await;
        quota::several_are_taken_at_once(&MemoryQuota::new(CONTRACT_LIMIT)).await;
        let shared = MemoryQuota::new(CONTRACT_LIMIT);
        quota::concurrent_takers_share_one_budget(&[&shared, &shared]).await;
        let shared = MemoryQuota::new(CONTRACT_LIMIT);
        quota::concurrent_bookings_share_one_schedule(&[&shared, &shared]).await;
    }

    /// `MemoryQuota`'s answers at these times (ms), from a fresh budget of `limit`.
    fn granted(limit: u32, times: &[i64]) -> Vec<i64> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(quota::granted_at(&MemoryQuota::new(limit), times))
    }

    proptest! {
        /// Whatever the arrival times, no 60-second span holds more granted requests than
        /// the limit, wherever Langfuse's own window starts.
        #[test]
        fn no_sixty_seconds_hold_more_than_the_limit(
            limit in 1u32..50,
            mut times in proptest::collection::vec(0i64..600_000, 0..400),
        ) {
            times.sort_unstable();
            let granted = granted(limit, &times);
            prop_assert_eq!(quota::no_minute_holds_more_than(limit, &granted), Ok(()));
        }

        /// Under steady demand the budget is used: at least 12/13 of the nominal rate.
        #[test]
        fn steady_demand_gets_most_of_the_budget(limit in 6u32..60) {
            let times: Vec<i64> = (0..600_000).step_by(100).collect();
            let granted = granted(limit, &times).len();
            prop_assert_eq!(
                quota::steady_demand_gets_most_of_the_budget(limit, 600_000, granted),
                Ok(())
            );
        }
    }
}
