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

/// How many traces the next slice of a batch takes, out of `left` (at most `max`): all of
/// them while the pace is unknown; else as many as `per_trace` lets finish in `time_left`
/// (the margin already taken off). An invocation's `first` slice takes at least one trace,
/// so a pessimistic estimate cannot stop an instance from making progress (and learning a
/// better one).
pub fn slice_size(
    time_left: Duration,
    per_trace: Option<std::time::Duration>,
    left: usize,
    max: usize,
    first: bool,
) -> usize {
    let cap = left.min(max);
    let fits = match per_trace {
        None => cap,
        Some(p) if p.is_zero() => cap,
        Some(p) => {
            let time_left = time_left.to_std().unwrap_or_default();
            let n = time_left.as_nanos() / p.as_nanos();
            usize::try_from(n).unwrap_or(usize::MAX).min(cap)
        }
    };
    match first && cap > 0 {
        true => fits.max(1),
        false => fits,
    }
}

/// The instance's time per trace after a slice of `traces` took `elapsed`: the mean of the
/// last estimate and this slice's, so it follows a slowdown within a slice or two and
/// forgets it as fast.
pub fn next_pace(
    last: Option<std::time::Duration>,
    elapsed: std::time::Duration,
    traces: usize,
) -> Option<std::time::Duration> {
    let Some(traces) = u32::try_from(traces).ok().filter(|n| *n > 0) else {
        return last;
    };
    let sample = elapsed / traces;
    Some(match last {
        None => sample,
        Some(last) => (last + sample) / 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn a_slice_takes_what_fits_in_the_time_left() {
        let ms = Std::from_millis;
        let left = |s: i64| Duration::seconds(s);
        assert_eq!(
            slice_size(left(5), None, 300, 100, true),
            100,
            "pace unknown"
        );
        assert_eq!(
            slice_size(left(5), None, 30, 100, false),
            30,
            "what is left"
        );
        assert_eq!(slice_size(left(5), Some(ms(100)), 300, 100, false), 50);
        assert_eq!(slice_size(left(50), Some(ms(100)), 300, 100, false), 100);
        assert_eq!(slice_size(left(0), Some(ms(100)), 300, 100, false), 0);
        assert_eq!(
            slice_size(left(0), Some(ms(100)), 300, 100, true),
            1,
            "a first slice always makes progress"
        );
        assert_eq!(slice_size(left(5), Some(ms(100)), 0, 100, true), 0);
        assert_eq!(slice_size(-left(5), Some(ms(100)), 300, 100, false), 0);
        assert_eq!(slice_size(left(5), Some(Std::ZERO), 300, 100, false), 100);
    }

    #[test]
    fn the_pace_follows_slices_by_halves() {
        let ms = Std::from_millis;
        assert_eq!(next_pace(None, ms(1000), 100), Some(ms(10)));
        assert_eq!(next_pace(Some(ms(10)), ms(300), 10), Some(ms(20)));
        assert_eq!(next_pace(Some(ms(20)), ms(0), 10), Some(ms(10)));
        assert_eq!(
            next_pace(Some(ms(20)), ms(500), 0),
            Some(ms(20)),
            "no trace"
        );
        assert_eq!(next_pace(None, ms(500), 0), None);
    }

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
