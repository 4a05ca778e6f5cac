//! Reconciling what the ledger says was billed with what Stripe aggregated and with the
//! budget counters: the period's time range as Stripe's event summaries want it, which
//! counters belong to it, and the drift.

use crate::domain::ledger::LedgerEntry;
use chrono::{DateTime, Duration, DurationRound, NaiveDate, TimeZone, Utc};
use std::collections::BTreeMap;

/// A reconciled period: a UTC month (`2026-11`) or day (`2026-11-23`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilePeriod {
    /// The key as given.
    pub key: String,
    /// Start (inclusive), aligned to a minute as Stripe requires.
    pub start: DateTime<Utc>,
    /// End (exclusive), aligned to a minute.
    pub end: DateTime<Utc>,
}

impl ReconcilePeriod {
    /// Parses `YYYY-MM` or `YYYY-MM-DD`.
    pub fn parse(key: &str) -> Option<ReconcilePeriod> {
        let (start, end) = if key.len() == 7 {
            let first = NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d").ok()?;
            let next = first.checked_add_months(chrono::Months::new(1))?;
            (first, next)
        } else {
            let day = NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()?;
            (day, day.succ_opt()?)
        };
        let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
        Some(ReconcilePeriod {
            key: key.to_string(),
            start: at(start),
            end: at(end),
        })
    }

    /// The end Stripe can be asked about at `now`: the period's end, or `now` floored to the
    /// minute while the period is still running.
    pub fn end_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let floored = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
        self.end.min(floored).max(self.start)
    }

    /// Whether a budget counter with this period key lies inside the period: the month's own
    /// key and its days for a month, the day itself for a day. Weeks may straddle months and
    /// never count.
    pub fn holds_counter(&self, counter_key: &str) -> bool {
        counter_key == self.key
            || (self.key.len() == 7
                && counter_key.len() == 10
                && counter_key.starts_with(&self.key)
                && counter_key.as_bytes().get(7) == Some(&b'-'))
    }

    /// Whether a usage time lies in the period.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.start && at < self.end
    }
}

/// What the ledger holds for one customer in a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BilledTotals {
    /// Trace entries.
    pub traces: u64,
    /// Credits of revisions known delivered (marked, or listed by their receipt).
    pub delivered: u64,
    /// Credits of claims not known delivered: in flight or ambiguous.
    pub in_flight: u64,
}

/// Adds an entry's credits to its customer's totals; `delivered`: its receipt lists the
/// pending revision.
pub fn add(out: &mut BTreeMap<String, BilledTotals>, entry: &LedgerEntry, delivered: bool) {
    let customer = entry
        .pending
        .as_ref()
        .map(|p| p.customer_id.clone())
        .or_else(|| entry.customer_id.clone());
    let Some(customer) = customer else {
        return;
    };
    let t = out.entry(customer).or_default();
    t.traces += 1;
    t.delivered += entry.billed_credits;
    if let Some(p) = &entry.pending {
        if delivered {
            t.delivered += p.billable;
        } else {
            t.in_flight += p.billable;
        }
    }
}

/// One customer's figures and how far they drift apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerDrift {
    /// Credits the ledger says were billed (delivered revisions).
    pub ledger: u64,
    /// Credits Stripe aggregated.
    pub stripe: u64,
    /// Credits the budget counters of the period counted, when they can be compared.
    pub counters: Option<u64>,
    /// Credits in claims not known delivered yet (in flight or ambiguous).
    pub in_flight: u64,
}

impl CustomerDrift {
    /// Ledger minus Stripe.
    pub fn stripe_drift(&self) -> i128 {
        i128::from(self.ledger) - i128::from(self.stripe)
    }

    /// Counters minus ledger and in-flight claims (a claim counts in the budget at once).
    pub fn counter_drift(&self) -> Option<i128> {
        self.counters
            .map(|c| i128::from(c) - i128::from(self.ledger) - i128::from(self.in_flight))
    }

    /// Whether either drift is beyond `tolerance` credits.
    pub fn drifts(&self, tolerance: u64) -> bool {
        let beyond = |d: i128| d.unsigned_abs() > u128::from(tolerance);
        beyond(self.stripe_drift()) || self.counter_drift().is_some_and(beyond)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_days_parse_to_aligned_ranges() {
        let m = ReconcilePeriod::parse("2026-12").expect("month");
        assert_eq!(m.start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(m.end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let d = ReconcilePeriod::parse("2026-11-30").expect("day");
        assert_eq!(d.end.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert!(ReconcilePeriod::parse("2026-13").is_none());
        assert!(ReconcilePeriod::parse("2026-W48").is_none());
        let now = Utc
            .with_ymd_and_hms(2026, 12, 5, 10, 7, 42)
            .single()
            .expect("t");
        assert_eq!(m.end_at(now).to_rfc3339(), "2026-12-05T10:07:00+00:00");
        assert_eq!(d.end_at(now), d.end);
    }

    #[test]
    fn counters_of_the_month_and_its_days_belong_to_it() {
        let m = ReconcilePeriod::parse("2026-11").expect("month");
        assert!(m.holds_counter("2026-11") && m.holds_counter("2026-11-23"));
        assert!(!m.holds_counter("2026-W48") && !m.holds_counter("2026-12-01"));
        assert!(!m.holds_counter("2026-110"));
    }

    #[test]
    fn drift_is_beyond_the_tolerance_either_way() {
        let d = CustomerDrift {
            ledger: 100,
            stripe: 90,
            counters: Some(105),
            in_flight: 5,
        };
        assert_eq!((d.stripe_drift(), d.counter_drift()), (10, Some(0)));
        assert!(d.drifts(9) && !d.drifts(10));
        let even = CustomerDrift {
            stripe: 100,
            counters: None,
            ..d
        };
        assert!(!even.drifts(0));
    }
}
