//! An injectable clock, so tests can jump past leases and Stripe's dedup window.

use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that runs with the system clock plus an offset that tests can move forward.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset: Mutex<chrono::Duration>,
}

impl OffsetClock {
    /// A clock equal to the system clock.
    pub fn new() -> OffsetClock {
        OffsetClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        Utc::now() + offset
    }
}

/// The invocation deadline from the Runtime API's `Lambda-Runtime-Deadline-Ms` (Unix epoch
/// milliseconds). Local emulators do not all follow that: `cargo lambda watch` sends the
/// timeout itself (e.g. 600000). A value before 2001-09-09 (10^12 ms) is read as a duration
/// from `now`; a value that cannot be a time at all gives `now + 60 s`.
pub fn invocation_deadline(deadline_ms: u64, now: DateTime<Utc>) -> DateTime<Utc> {
    const EPOCH_FLOOR_MS: u64 = 1_000_000_000_000;
    if deadline_ms < EPOCH_FLOOR_MS {
        return now + chrono::Duration::milliseconds(deadline_ms as i64);
    }
    i64::try_from(deadline_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(|| now + chrono::Duration::seconds(60))
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn epoch_deadlines_are_taken_as_they_are() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let d = invocation_deadline(1_800_000_030_000, now);
        assert_eq!(d - now, chrono::Duration::seconds(30));
    }

    #[test]
    fn a_duration_from_a_local_emulator_counts_from_now() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        assert_eq!(
            invocation_deadline(600_000, now) - now,
            chrono::Duration::minutes(10)
        );
        assert_eq!(
            invocation_deadline(u64::MAX, now) - now,
            chrono::Duration::seconds(60)
        );
    }
}
