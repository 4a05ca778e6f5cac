//! When messages deferred for lack of request budget come back: one schedule of "bunches"
//! shared by every instance, so that two instances deferring at the same moment do not send
//! their messages back into the same window (where half of them would be deferred again).
//!
//! A bunch is a whole window's budget of returns (`per_bunch` messages: the requests a
//! window lets through over the requests a message needs), at one time; bunches are one
//! window ([`SPACING`], 65 s) apart, so that each finds the whole budget
//! (see `retry::budget_delays`, the same spacing without the shared schedule). The schedule
//! keeps only its open bunch, the latest booked: a booking joins it while it has room, and
//! goes on one window after it; a schedule idle for more than a window starts again at the
//! booking's earliest time. The table keeps the open bunch in one item, written with a
//! condition on what was read (`adapters::dynamo::DynamoQuota`).

use super::quota::{SLOT_SECONDS, SLOTS_PER_WINDOW, slot_of};
use chrono::{DateTime, Duration, Utc};

/// Two bunches' distance: one whole window of the budget.
pub const SPACING: Duration = Duration::seconds(SLOT_SECONDS * SLOTS_PER_WINDOW);

/// The schedule's open bunch: when its messages come back, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bunch {
    /// When its messages come back.
    pub at: DateTime<Utc>,
    /// How many it holds.
    pub booked: u64,
}

/// Each message's return time; `None`: not booked (past the latest time).
pub type Returns = Vec<Option<DateTime<Utc>>>;

/// What booking `n` returns gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// Each message's return time; `None` past `latest` (not booked: it comes back at the
    /// latest time and books again then).
    pub returns: Returns,
    /// The schedule's open bunch after the booking (unchanged when nothing was booked).
    pub open: Option<Bunch>,
}

/// How many messages a bunch holds: a window's `per_minute` requests over the
/// `requests_per_message` each needs (at least one).
pub fn per_bunch(per_minute: u32, requests_per_message: f64) -> u64 {
    (f64::from(per_minute.max(1)) / requests_per_message.max(f64::MIN_POSITIVE))
        .floor()
        .max(1.0) as u64
}

/// Books the return of `n` messages on the schedule whose open bunch is `open`, none before
/// `earliest` (when the budget has room) nor after `latest` (SQS's longest delay).
pub fn book(
    open: Option<Bunch>,
    earliest: DateTime<Utc>,
    n: usize,
    per_bunch: u64,
    latest: DateTime<Utc>,
) -> Booking {
    let fresh = |at| Bunch { at, booked: 0 };
    let mut current = match open {
        // Join the open bunch (the ones before it are full), also from a little after it
        // within its slot (another instance's clock): the next bunch is still 13 slots on.
        Some(b) if earliest <= b.at || slot_of(earliest) == slot_of(b.at) => b,
        // Its window still holds the open bunch's requests: the next one after it.
        Some(b) if earliest <= b.at + SPACING => fresh(b.at + SPACING),
        // Idle for more than a window: start again.
        _ => fresh(earliest),
    };
    let mut last_booked = open;
    let mut returns = Vec::with_capacity(n);
    for _ in 0..n {
        if current.booked >= per_bunch.max(1) {
            current = fresh(current.at + SPACING);
        }
        if current.at > latest {
            returns.push(None);
            continue;
        }
        current.booked += 1;
        last_booked = Some(current);
        returns.push(Some(current.at.max(earliest)));
    }
    Booking {
        returns,
        open: last_booked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + Duration::seconds(1_800_000_000 + secs)
    }

    fn secs(b: &Booking) -> Vec<Option<i64>> {
        b.returns
            .iter()
            .map(|r| r.map(|at| (at - t(0)).num_seconds()))
            .collect()
    }

    #[test]
    fn an_idle_schedule_books_bunches_a_window_apart_from_the_earliest_time() {
        let b = book(None, t(60), 5, 2, t(900));
        assert_eq!(
            secs(&b),
            vec![Some(60), Some(60), Some(125), Some(125), Some(190)]
        );
        assert_eq!(
            b.open,
            Some(Bunch {
                at: t(190),
                booked: 1
            })
        );
    }

    #[test]
    fn a_second_booking_goes_behind_the_first_not_into_its_window() {
        let first = book(None, t(60), 3, 2, t(900));
        // Another instance, a second later, with the budget's room at about the same time.
        let second = book(first.open, t(58), 3, 2, t(900));
        assert_eq!(secs(&second), vec![Some(125), Some(190), Some(190)]);
        // A booking whose earliest time is inside the open bunch's window: the next bunch.
        let third = book(second.open, t(200), 1, 2, t(900));
        assert_eq!(secs(&third), vec![Some(255)]);
        // Idle for more than a window: from its own earliest time.
        let later = book(third.open, t(400), 1, 2, t(900));
        assert_eq!(secs(&later), vec![Some(400)]);
        // A little after the open bunch, in its slot (t(400) starts a slot): joins it,
        // returning no earlier than asked.
        let joined = book(later.open, t(402), 2, 2, t(900));
        assert_eq!(secs(&joined), vec![Some(402), Some(465)]);
    }

    #[test]
    fn returns_past_the_latest_time_are_not_booked() {
        let open = Some(Bunch {
            at: t(100),
            booked: 1,
        });
        let b = book(open, t(10), 4, 2, t(170));
        assert_eq!(secs(&b), vec![Some(100), Some(165), Some(165), None]);
        assert_eq!(
            b.open,
            Some(Bunch {
                at: t(165),
                booked: 2
            })
        );
        let none = book(open, t(500), 1, 2, t(400));
        assert_eq!(secs(&none), vec![None]);
        assert_eq!(none.open, open, "nothing booked: the schedule is unchanged");
    }

    #[test]
    fn a_bunch_is_a_windows_budget_of_messages() {
        assert_eq!(per_bunch(30, 1.0), 30);
        assert_eq!(per_bunch(30, 0.01), 3000);
        assert_eq!(per_bunch(0, 1.0), 1);
        assert_eq!(per_bunch(30, 40.0), 1);
    }
}
