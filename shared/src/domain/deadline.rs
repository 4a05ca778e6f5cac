//! The invocation's deadline: a phase (or a slice of the batch) is started only when it can
//! finish before the deadline, with a margin left for the answer to SQS. What is not reached
//! goes back to the queue with a short visibility, never as a timed-out invocation.

use chrono::{DateTime, Duration, Utc};

/// The visibility of a message the invocation did not reach: it was not tried, so it comes
/// back soon rather than after a backoff.
pub const UNREACHED_VISIBILITY_SECONDS: i32 = 5;

/// True when work expected to take `estimate` can start at `now` and finish, with `margin`
/// to spare, before `deadline`.
pub fn can_start(
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    estimate: Duration,
    margin: Duration,
) -> bool {
    now.checked_add_signed(estimate)
        .and_then(|end| end.checked_add_signed(margin))
        .is_some_and(|end| end <= deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_starts_only_when_it_ends_a_margin_before_the_deadline() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let deadline = now + Duration::seconds(30);
        let margin = Duration::seconds(2);
        assert!(can_start(now, deadline, Duration::seconds(28), margin));
        assert!(!can_start(
            now,
            deadline,
            Duration::milliseconds(28_001),
            margin
        ));
        assert!(!can_start(
            deadline,
            deadline,
            Duration::zero(),
            Duration::zero() + Duration::milliseconds(1)
        ));
        assert!(!can_start(
            now + Duration::seconds(29),
            deadline,
            Duration::zero(),
            margin
        ));
        assert!(
            !can_start(now, deadline, Duration::MAX, margin),
            "no overflow"
        );
    }
}
