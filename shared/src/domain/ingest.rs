//! Ingest rules: a scan range and its walk direction, and whether a trace seen in Langfuse
//! is already covered by its ledger entry. Plain data, no SDK types. Which ranges a run
//! scans (the fresh range and the re-scan tiers) is planned in [`super::rescan`].

use crate::domain::ledger::LedgerState;
use chrono::{DateTime, Utc};

pub use super::rescan::{
    IngestCursor, Lane, Reach, RescanTier, ScanPlan, TierCursor, default_tiers, effective_tiers,
    parse_tiers, plan_scans,
};
use rust_decimal::Decimal;

/// A scan range still being worked on, with the position reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingScan {
    /// Inclusive lower bound.
    pub from: DateTime<Utc>,
    /// Exclusive upper bound.
    pub to: DateTime<Utc>,
    /// How far the scan got. v2 (newest first): what is left is `[from, position)`.
    /// Legacy (oldest first): what is left is `[position, to)`.
    pub position: DateTime<Utc>,
}

/// Direction in which an API generation walks a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// v2 observations: newest first.
    NewestFirst,
    /// Legacy traces, `orderBy=timestamp.asc`: oldest first.
    OldestFirst,
}

/// Drops sub-millisecond precision (Langfuse and the cursor item keep milliseconds).
pub fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// What the ledger remembers of a trace, as far as ingest needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCoverage {
    /// The entry's state; `None` when the stored state is unknown.
    pub state: Option<LedgerState>,
    /// Newest observation start included in what was billed.
    pub last_observation_at: Option<DateTime<Utc>>,
    /// Langfuse model cost (USD) as seen when billed.
    pub cost_usd: Option<Decimal>,
    /// Latency (s) as seen when billed.
    pub latency_seconds: Option<Decimal>,
}

/// The usage a scan saw for one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListedUsage {
    /// v2: the newest observation start seen for the trace in this scan.
    V2 {
        /// Newest observation start.
        newest_observation: DateTime<Utc>,
    },
    /// Legacy: the listed `totalCost` and `latency`; `None` when Langfuse sent -1 (unknown).
    Legacy {
        /// Total cost in USD.
        cost_usd: Option<Decimal>,
        /// Latency in seconds.
        latency_seconds: Option<Decimal>,
    },
}

/// Why a trace is not enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The ledger already covers the usage seen.
    Covered,
    /// The entry is failed or ambiguous: an operator replays it.
    LeftForOperator,
}

/// The skip rule: skip failed and ambiguous entries (an operator replays those) and entries
/// claimed, metered or capped whose recorded usage covers what was just seen. Everything
/// else (no entry, unknown state, new usage, unknown figures) is enqueued.
pub fn skip(ledger: Option<&LedgerCoverage>, seen: &ListedUsage) -> Option<Skip> {
    let entry = ledger?;
    match entry.state? {
        LedgerState::Failed | LedgerState::Ambiguous => Some(Skip::LeftForOperator),
        LedgerState::Claimed | LedgerState::Metered | LedgerState::Capped => {
            let covered = match seen {
                ListedUsage::V2 { newest_observation } => entry
                    .last_observation_at
                    .is_some_and(|billed| covers(billed, *newest_observation)),
                ListedUsage::Legacy {
                    cost_usd,
                    latency_seconds,
                } => match (
                    cost_usd,
                    latency_seconds,
                    entry.cost_usd,
                    entry.latency_seconds,
                ) {
                    (Some(cost), Some(latency), Some(billed_cost), Some(billed_latency)) => {
                        billed_cost >= *cost && billed_latency >= *latency
                    }
                    _ => false,
                },
            };
            covered.then_some(Skip::Covered)
        }
    }
}

/// True when a ledger's newest billed observation time covers `seen`. The ledger stores
/// whole milliseconds while Langfuse may send finer times (OpenTelemetry spans carry
/// nanoseconds), so both are compared at millisecond precision: a billed trace whose newest
/// observation started at `.123456` reads as covered by `.123`.
pub fn covers(billed: DateTime<Utc>, seen: DateTime<Utc>) -> bool {
    billed.timestamp_millis() >= seen.timestamp_millis()
}

/// The newest usage time a listing saw, for the meter message (v2 only).
pub fn newest_observation(seen: &ListedUsage) -> Option<DateTime<Utc>> {
    match seen {
        ListedUsage::V2 { newest_observation } => Some(*newest_observation),
        ListedUsage::Legacy { .. } => None,
    }
}

/// Requests per second, for progress lines.
pub fn rate_per_second(count: u64, elapsed: std::time::Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    ((count as f64 / secs) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::str::FromStr;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }
    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn sub_millisecond_times_are_covered_by_the_millisecond_the_ledger_stored() {
        let seen = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let stored = DateTime::from_timestamp_millis(seen.timestamp_millis()).expect("ms");
        assert!(stored < seen, "the stored time is truncated");
        assert!(covers(stored, seen));
        assert!(!covers(stored - Duration::milliseconds(1), seen));
        let coverage = LedgerCoverage {
            state: Some(LedgerState::Metered),
            last_observation_at: Some(stored),
            cost_usd: None,
            latency_seconds: None,
        };
        let listed = ListedUsage::V2 {
            newest_observation: seen,
        };
        assert_eq!(skip(Some(&coverage), &listed), Some(Skip::Covered));
        let later = ListedUsage::V2 {
            newest_observation: seen + Duration::milliseconds(1),
        };
        assert_eq!(
            skip(Some(&coverage), &later),
            None,
            "a later observation is new"
        );
        assert_eq!(newest_observation(&listed), Some(seen));
    }

    fn entry(state: LedgerState) -> LedgerCoverage {
        LedgerCoverage {
            state: Some(state),
            last_observation_at: Some(t(10)),
            cost_usd: Some(d("0.01")),
            latency_seconds: Some(d("2")),
        }
    }

    #[test]
    fn v2_skip_rule() {
        let seen = |s| ListedUsage::V2 {
            newest_observation: t(s),
        };
        assert_eq!(skip(None, &seen(10)), None, "no entry: enqueue");
        for state in [
            LedgerState::Claimed,
            LedgerState::Metered,
            LedgerState::Capped,
        ] {
            assert_eq!(skip(Some(&entry(state)), &seen(10)), Some(Skip::Covered));
            assert_eq!(skip(Some(&entry(state)), &seen(9)), Some(Skip::Covered));
            assert_eq!(
                skip(Some(&entry(state)), &seen(11)),
                None,
                "late observation"
            );
        }
        for state in [LedgerState::Failed, LedgerState::Ambiguous] {
            assert_eq!(
                skip(Some(&entry(state)), &seen(99)),
                Some(Skip::LeftForOperator)
            );
        }
        let mut no_time = entry(LedgerState::Metered);
        no_time.last_observation_at = None;
        assert_eq!(skip(Some(&no_time), &seen(1)), None);
        let mut unknown = entry(LedgerState::Metered);
        unknown.state = None;
        assert_eq!(skip(Some(&unknown), &seen(1)), None);
    }

    #[test]
    fn legacy_skip_rule() {
        let seen = |c: &str, l: &str| ListedUsage::Legacy {
            cost_usd: Some(d(c)),
            latency_seconds: Some(d(l)),
        };
        let e = entry(LedgerState::Metered);
        assert_eq!(skip(Some(&e), &seen("0.01", "2")), Some(Skip::Covered));
        assert_eq!(skip(Some(&e), &seen("0.010", "1.5")), Some(Skip::Covered));
        assert_eq!(skip(Some(&e), &seen("0.0100001", "2")), None, "more cost");
        assert_eq!(skip(Some(&e), &seen("0.01", "2.001")), None, "more latency");
        let unknown = ListedUsage::Legacy {
            cost_usd: None,
            latency_seconds: Some(d("1")),
        };
        assert_eq!(skip(Some(&e), &unknown), None, "-1 metrics: enqueue");
    }

    #[test]
    fn rates_are_rounded() {
        assert_eq!(rate_per_second(10, std::time::Duration::from_secs(4)), 2.5);
        assert_eq!(rate_per_second(10, std::time::Duration::ZERO), 0.0);
    }
}
