//! When a failed message comes back: SQS redelivers it after the visibility timeout that the
//! processor sets from its receive count (exponential backoff with jitter, capped), never
//! sooner than the service asked for (a 429's `Retry-After`).

use std::time::Duration;

/// The retry schedule (from `RETRY_BASE_SECONDS` and `RETRY_MAX_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's wait, seconds.
    pub base_seconds: u32,
    /// The longest wait, seconds.
    pub max_seconds: u32,
}

impl Backoff {
    /// The visibility timeout for a failed message: exponential in its receive count, with a
    /// deterministic jitter in [50 %, 100 %] from the message id and attempt, at least what the
    /// service asked for, at most `max_seconds`, at least one second.
    pub fn visibility_seconds(
        &self,
        message_id: &str,
        receives: u32,
        asked: Option<Duration>,
    ) -> i32 {
        let exp = receives.saturating_sub(1).min(16);
        let base = u64::from(self.base_seconds).saturating_mul(1u64 << exp);
        let capped = base.min(u64::from(self.max_seconds));
        let jittered = capped / 2 + (jitter(message_id, receives) % (capped / 2 + 1));
        let asked = asked.map(|d| d.as_secs() + 1).unwrap_or(0);
        let secs = jittered.max(asked).min(u64::from(self.max_seconds)).max(1);
        i32::try_from(secs).unwrap_or(43_200)
    }
}

/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY_SECONDS: i32 = 900;

impl Backoff {
    /// The delay of a message deferred for lack of request budget (its `deferrals`-th time):
    /// the same schedule as a retry, at least what was asked, at most SQS's 900 seconds.
    /// A deferral is a new message, so its receive count never grows: it never reaches the
    /// dead-letter queue, however long the backlog lasts.
    pub fn deferral_seconds(&self, message_id: &str, deferrals: u32, asked: Duration) -> i32 {
        self.visibility_seconds(message_id, deferrals.saturating_add(1), Some(asked))
            .min(MAX_DELAY_SECONDS)
    }
}

/// The delays of messages deferred together for lack of Langfuse request budget, when the
/// budget's shared return schedule ([`super::returns`]) could not be booked, so that
/// each comes back when the budget can serve it rather than all at once (only to be deferred
/// again). They come back in bunches of a whole window's budget: the `per_minute` requests
/// the shared count lets through in any 13 slots ([`super::quota`]: 65 seconds), each
/// message taking `requests_per_message` of them (30 legacy messages at Hobby's 30 a
/// minute), the bunches one window apart, all of a bunch at the same second. A bunch so
/// spaced never shares a window with the next, so each finds the whole budget (smaller
/// bunches closer together would: three bunches of 13 every 30 s meet in one 65 s window
/// and the third is refused), and one invocation takes a bunch, paying its fixed DynamoDB
/// calls (the batch's reads, a claim and a check per customer, a receipt) once per window.
/// Message `k` of the `n` waits what was `asked` (until the budget has room:
/// [`super::quota::wait_for_room`]), a second, and one window per bunch before its own;
/// `ahead`: messages already deferred and waiting in the queue (other batches', served
/// first). At most SQS's 900 seconds, at least one.
pub fn budget_delays(
    n: usize,
    ahead: u64,
    asked: Duration,
    per_minute: u32,
    requests_per_message: f64,
) -> Vec<i32> {
    use super::returns::{SPACING, per_bunch};
    let window = SPACING.num_seconds() as f64;
    let per_bunch = per_bunch(per_minute, requests_per_message) as f64;
    (0..n)
        .map(|k| {
            let bunch = ((ahead as f64 + k as f64) / per_bunch).floor();
            // A second past what was asked, as for a retry: a slot boundary read on another
            // instance's clock may lie a little later.
            let secs = (asked.as_secs_f64() + 1.0 + bunch * window).ceil();
            (secs as i32).min(MAX_DELAY_SECONDS)
        })
        .collect()
}

/// The pause before batch claim try `attempt` (1-based) after a transaction conflict:
/// another writer's transaction holds the same items (a customer's budget counter, shared
/// by every instance) for the few milliseconds it takes. 10 ms × `attempt`, at most 200 ms,
/// with jitter in [50 %, 100 %] from `key` (the invocation and the customer), so that two
/// instances that met do not meet again: 25 tries pause at most 3.1 s in all.
pub fn conflict_pause(key: &str, attempt: u32) -> Duration {
    let full = (10 * u64::from(attempt.max(1))).min(200);
    Duration::from_millis(full / 2 + jitter(key, attempt) % (full / 2 + 1))
}

/// The pause before trying a Stripe v1 event again in-process after Stripe asked to wait
/// `asked` (a 429: another instance holds the customer's one concurrent slot for the ~100 ms
/// of its request), jittered in [50 %, 100 %] by `key` (the identifier) and `attempt` so
/// that two instances that met do not meet again at once.
pub fn short_wait(asked: Duration, key: &str, attempt: u32) -> Duration {
    let full = asked.as_millis() as u64;
    Duration::from_millis(full / 2 + jitter(key, attempt) % (full / 2 + 1))
}

/// FNV-1a of the message id and the attempt: different messages retry at different times.
fn jitter(message_id: &str, receives: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.bytes().chain(receives.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_pauses_grow_to_200_ms_and_differ_between_keys() {
        for attempt in 1..=30 {
            let full = (10 * u64::from(attempt)).min(200);
            let pause = conflict_pause("inv-1#cus_a", attempt).as_millis() as u64;
            assert!((full / 2..=full).contains(&pause), "{attempt}: {pause}");
        }
        let pauses = |key: &str| (1..=25).map(|a| conflict_pause(key, a)).collect::<Vec<_>>();
        assert_ne!(pauses("inv-1#cus_a"), pauses("inv-2#cus_a"));
        let total: Duration = pauses("inv-1#cus_a").iter().sum();
        assert!(total <= Duration::from_millis(3_100), "{total:?}");
    }

    fn backoff(base_seconds: u32, max_seconds: u32) -> Backoff {
        Backoff {
            base_seconds,
            max_seconds,
        }
    }

    #[test]
    fn a_short_wait_is_half_to_all_of_what_was_asked_and_differs_by_key() {
        let asked = Duration::from_secs(1);
        for attempt in 1..=5 {
            let w = short_wait(asked, "tm-t1-r1", attempt);
            assert!((500..=1000).contains(&w.as_millis()), "{w:?}");
        }
        let waits = |key: &str| {
            (1..=5)
                .map(|a| short_wait(asked, key, a))
                .collect::<Vec<_>>()
        };
        assert_ne!(waits("tm-t1-r1"), waits("tm-t2-r1"));
    }

    #[test]
    fn budget_deferrals_come_back_as_the_budget_can_serve_them() {
        // Legacy reads, one request a message, 30 a minute: bunches of 30 (a window's
        // budget), 65 s apart, each a second past the 3 s asked.
        let d = budget_delays(32, 0, Duration::from_secs(3), 30, 1.0);
        assert_eq!(d[..30], [4; 30]);
        assert_eq!(d[30..], [69, 69]);
        // Behind 100 waiting messages (3 whole bunches), they come back after those 195 s.
        let d = budget_delays(2, 100, Duration::from_secs(3), 30, 1.0);
        assert_eq!(d, vec![199, 199]);
        // v2 batch reads (a request per 100 messages): a whole batch back within 3 s.
        let d = budget_delays(100, 0, Duration::from_secs(3), 30, 0.01);
        assert!(d.iter().all(|&s| (4..=7).contains(&s)), "{d:?}");
        // Never past SQS's longest delay, never zero.
        assert_eq!(
            budget_delays(1, 100_000, Duration::ZERO, 30, 1.0),
            vec![900]
        );
        assert_eq!(budget_delays(1, 0, Duration::ZERO, 1000, 0.01), vec![1]);
    }

    #[test]
    fn a_deferral_waits_what_was_asked_and_at_most_fifteen_minutes() {
        let b = backoff(1, 3_600);
        assert!(b.deferral_seconds("m", 0, Duration::from_secs(7)) >= 8);
        assert_eq!(b.deferral_seconds("m", 40, Duration::from_secs(7)), 900);
        let later = b.deferral_seconds("m", 6, Duration::from_secs(1));
        assert!((32..=64).contains(&later), "{later}");
    }

    #[test]
    fn the_delay_grows_with_receives_and_is_capped() {
        let b = backoff(30, 900);
        for receives in 1..=10u32 {
            let d = b.visibility_seconds("msg-1", receives, None);
            let full = (30u64 << (receives - 1)).min(900) as i32;
            assert!(
                d >= full / 2 && d <= full,
                "receive {receives}: {d} not in [{}, {full}]",
                full / 2
            );
        }
        assert!(b.visibility_seconds("m", 30, None) <= 900);
    }

    #[test]
    fn the_delay_honours_the_service_wait_up_to_the_cap() {
        let b = backoff(1, 600);
        assert!(b.visibility_seconds("m", 1, Some(Duration::from_secs(120))) >= 120);
        assert_eq!(
            b.visibility_seconds("m", 1, Some(Duration::from_secs(5000))),
            600
        );
    }

    #[test]
    fn jitter_differs_between_messages() {
        let b = backoff(100, 10_000);
        let delays: std::collections::BTreeSet<i32> = (0..20)
            .map(|i| b.visibility_seconds(&format!("m{i}"), 3, None))
            .collect();
        assert!(delays.len() > 5, "{delays:?}");
    }
}
