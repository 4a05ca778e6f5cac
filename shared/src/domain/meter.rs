//! What goes to Stripe: one meter event per claimed revision, and what Stripe said.

use crate::domain::ledger::PendingClaim;
use crate::error::{Error, FailureReason, Result};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// Stripe accepts meter events up to 35 days old; keep an hour of margin.
pub const MAX_USAGE_AGE: Duration = Duration::hours(35 * 24 - 1);
/// Stripe accepts timestamps at most 5 minutes in the future.
pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(5);

/// One Stripe meter event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    /// Deterministic identifier, also used as the `Idempotency-Key`.
    pub identifier: String,
    /// The Stripe customer.
    pub customer_id: String,
    /// Whole credits.
    pub value: u64,
    /// Usage time, Unix seconds.
    pub timestamp: i64,
}

/// What Stripe said about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Recorded now.
    Recorded,
    /// Stripe already had an event with this identifier: delivered before.
    AlreadyRecorded,
}

impl MeterEvent {
    /// The event that delivers a claimed revision.
    pub fn for_claim(p: &PendingClaim) -> MeterEvent {
        MeterEvent {
            identifier: p.identifier.clone(),
            customer_id: p.customer_id.clone(),
            value: p.billable,
            timestamp: p.event_timestamp,
        }
    }
}

/// The Stripe identifier of a trace revision: deterministic, at most 100 characters.
///
/// Readable ids are used as they are; others (long or with unusual characters) are hashed.
pub fn identifier(trace_id: &str, revision: u32) -> String {
    let readable = trace_id.len() <= 64
        && trace_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if readable {
        format!("tm_{trace_id}_r{revision}")
    } else {
        let digest = Sha256::digest(trace_id.as_bytes());
        format!("tm_h{}_r{revision}", &hex::encode(digest)[..48])
    }
}

/// Stripe's time window for meter events: usage older than 35 days (less an hour of margin)
/// or more than 5 minutes ahead of `now` can never be billed (a permanent failure).
pub fn check_event_time(trace_id: &str, usage_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
    if usage_at < now - MAX_USAGE_AGE {
        return Err(Error::permanent(
            FailureReason::UsageTooOld,
            format!(
                "trace {trace_id}: usage at {usage_at} is older than Stripe's 35-day window for meter events (now {now})"
            ),
        ));
    }
    if usage_at > now + MAX_FUTURE_SKEW {
        return Err(Error::permanent(
            FailureReason::UsageInFuture,
            format!(
                "trace {trace_id}: usage at {usage_at} is more than 5 minutes in the future (now {now}); check the clock of the traced app"
            ),
        ));
    }
    Ok(())
}

/// The event's timestamp: the usage time, never later than `now` (Stripe refuses the future).
pub fn event_timestamp(usage_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    usage_at.min(now).timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn identifiers_are_deterministic_and_short() {
        assert_eq!(identifier("abc-123", 1), "tm_abc-123_r1");
        assert_eq!(identifier("abc-123", 1), identifier("abc-123", 1));
        assert_ne!(identifier("abc-123", 1), identifier("abc-123", 2));
        let long = "x".repeat(500);
        let id = identifier(&long, 4_000_000_000);
        assert!(id.len() <= 100, "{id}");
        assert_ne!(identifier("a b", 1), identifier("a_b", 1));
        assert!(identifier("a b", 1).starts_with("tm_h"));
    }

    fn reason(r: Result<()>) -> Option<FailureReason> {
        match r {
            Err(Error::Permanent { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn the_event_time_must_fall_in_stripes_window() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
            .single()
            .expect("time");
        assert_eq!(reason(check_event_time("t", now, now)), None);
        assert_eq!(
            reason(check_event_time("t", now - Duration::days(34), now)),
            None
        );
        assert_eq!(
            reason(check_event_time("t", now - MAX_USAGE_AGE, now)),
            None
        );
        assert_eq!(
            reason(check_event_time(
                "t",
                now - MAX_USAGE_AGE - Duration::seconds(1),
                now
            )),
            Some(FailureReason::UsageTooOld)
        );
        assert_eq!(
            reason(check_event_time("t", now + MAX_FUTURE_SKEW, now)),
            None
        );
        assert_eq!(
            reason(check_event_time("t", now + Duration::minutes(6), now)),
            Some(FailureReason::UsageInFuture)
        );
    }

    #[test]
    fn a_skewed_event_is_sent_with_the_time_of_sending() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            event_timestamp(now + Duration::minutes(2), now),
            now.timestamp()
        );
        assert_eq!(
            event_timestamp(now - Duration::hours(1), now),
            now.timestamp() - 3600
        );
    }
}
