//! Stripe's asynchronous meter event errors: the error reports it sends as thin events
//! (`v1.billing.meter.error_report_triggered`, `v1.billing.meter.no_meter_found`), their
//! sample identifiers mapped back to trace revisions, and what giving a rejected revision's
//! credits back does to its ledger entry.
//!
//! Stripe accepts a meter event (v1 or the v2 stream) with 200 and validates it later: an
//! event for a customer that does not exist is dropped and reported in a window's error
//! report, which lists *samples* of the identifiers, not all of them.

use crate::domain::ledger::{LedgerEntry, LedgerState};
use chrono::{DateTime, Utc};

/// The thin event type of a meter's error report.
pub const ERROR_REPORT_TRIGGERED: &str = "v1.billing.meter.error_report_triggered";
/// The thin event type of events whose meter (event name) does not exist.
pub const NO_METER_FOUND: &str = "v1.billing.meter.no_meter_found";

/// One error report (a thin event's `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterErrorReport {
    /// The event id (`evt_...`).
    pub event_id: String,
    /// [`ERROR_REPORT_TRIGGERED`] or [`NO_METER_FOUND`].
    pub event_type: String,
    /// When Stripe created the event.
    pub created: DateTime<Utc>,
    /// The validation window the report covers.
    pub validation_start: Option<DateTime<Utc>>,
    /// Its end.
    pub validation_end: Option<DateTime<Utc>>,
    /// `reason.error_count`: every invalid event of the window (more than the samples).
    pub error_count: u64,
    /// The sample errors of every error type.
    pub samples: Vec<MeterErrorSample>,
}

/// One sample error: `reason.error_types[].sample_errors[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterErrorSample {
    /// `error_types[].code` (e.g. `meter_event_customer_not_found`).
    pub code: String,
    /// `sample_errors[].request.identifier`: the meter event's identifier.
    pub identifier: String,
    /// `sample_errors[].error_message`.
    pub message: String,
}

/// The trace and revision an identifier names: readable identifiers only
/// (`tm_<trace>_r<revision>`, see [`crate::domain::meter::identifier`]); a hashed one
/// (`tm_h<hash>_r<n>`) or a foreign one gives `None`.
pub fn revision_of(identifier: &str) -> Option<(String, u32)> {
    let rest = identifier.strip_prefix("tm_")?;
    let (trace, revision) = rest.rsplit_once("_r")?;
    let revision: u32 = revision.parse().ok()?;
    let hashed = trace.len() == 49
        && trace.starts_with('h')
        && trace[1..].chars().all(|c| c.is_ascii_hexdigit());
    if trace.is_empty() || hashed || revision == 0 {
        return None;
    }
    (crate::domain::meter::identifier(trace, revision) == identifier)
        .then(|| (trace.to_string(), revision))
}

/// What the ledger holds of a rejected revision, read before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionTarget<'a> {
    /// The entry as stored (a receipt not folded in).
    pub entry: &'a LedgerEntry,
    /// The period its committed revision was counted in (`period`).
    pub committed_period: Option<&'a str>,
    /// The identifiers already recorded as rejected on the entry.
    pub already_rejected: bool,
}

/// What giving a rejected revision back does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectionPlan {
    /// Recorded before: nothing to do.
    AlreadyRejected,
    /// The entry becomes `failed` (`stripe_rejected`) at `revision` (so a replay bills a new
    /// revision with a new identifier) with these totals, and the counter of `customer` and
    /// `period` gives back `billable` and `capped` — conditional on the version read.
    GiveBack(GiveBack),
    /// The ledger cannot give this revision back (why).
    Refused(String),
}

/// The write of [`RejectionPlan::GiveBack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveBack {
    /// The version the write is conditional on.
    pub version: u64,
    /// The rejected revision (the entry's revision afterwards).
    pub revision: u32,
    /// The customer whose counter gives the credits back.
    pub customer_id: String,
    /// The counter's period.
    pub period: String,
    /// Credits billed by the revision.
    pub billable: u64,
    /// Credits it counted as capped.
    pub capped: u64,
    /// The entry's totals afterwards: total, billed, capped.
    pub totals: (u64, u64, u64),
}

/// Decides what rejecting `revision` (identifier `identifier`) of an entry does: the pending
/// revision (claimed, delivered through its receipt or not, or ambiguous) is given back; a
/// first revision already folded into the entry (metered) is given back whole; a revision
/// folded under later ones cannot be (its own credits are no longer stored).
pub fn plan_rejection(t: &RejectionTarget<'_>, revision: u32, identifier: &str) -> RejectionPlan {
    let e = t.entry;
    if t.already_rejected {
        return RejectionPlan::AlreadyRejected;
    }
    if let Some(p) = &e.pending {
        if p.revision == revision && p.identifier == identifier {
            return match e.state {
                LedgerState::Claimed | LedgerState::Ambiguous => {
                    RejectionPlan::GiveBack(GiveBack {
                        version: e.version,
                        revision,
                        customer_id: p.customer_id.clone(),
                        period: p.period.clone(),
                        billable: p.billable,
                        capped: p.capped,
                        totals: (e.total_credits, e.billed_credits, e.capped_credits),
                    })
                }
                s => RejectionPlan::Refused(format!("entry is {} with it pending", s.as_str())),
            };
        }
        return RejectionPlan::Refused(format!(
            "revision {} is in flight; run again once it is settled",
            p.revision
        ));
    }
    let folded_first = e.state == LedgerState::Metered && e.revision == revision && revision == 1;
    match (folded_first, &e.customer_id, t.committed_period) {
        (true, Some(customer), Some(period)) => RejectionPlan::GiveBack(GiveBack {
            version: e.version,
            revision,
            customer_id: customer.clone(),
            period: period.to_string(),
            billable: e.billed_credits,
            capped: e.capped_credits,
            totals: (0, 0, 0),
        }),
        _ if e.revision < revision => {
            RejectionPlan::Refused(format!("the ledger has no revision {revision}"))
        }
        _ => RejectionPlan::Refused(format!(
            "revision {revision} is folded into the entry's totals (revision {}, {}): give it back by hand",
            e.revision,
            e.state.as_str()
        )),
    }
}

/// What the ledger did with one rejected identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Recorded now: the entry is `failed` (`stripe_rejected`), these credits went back.
    Rejected {
        /// The customer.
        customer_id: String,
        /// The counter's period.
        period: String,
        /// Credits given back to `used`.
        billable: u64,
    },
    /// Recorded before: nothing changed.
    AlreadyRejected,
    /// No ledger entry for the trace.
    NotFound,
    /// Left as it is (why).
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::PendingClaim;
    use crate::domain::meter::identifier;

    #[test]
    fn readable_identifiers_name_their_trace_and_revision() {
        assert_eq!(revision_of("tm_abc-1_r2"), Some(("abc-1".into(), 2)));
        assert_eq!(revision_of("tm_a_r_b_r3"), Some(("a_r_b".into(), 3)));
        assert_eq!(revision_of(&identifier(&"x".repeat(80), 1)), None);
        assert_eq!(revision_of("cb447754-6880"), None);
        assert_eq!(revision_of("tm_abc_rx"), None);
    }

    fn entry(state: LedgerState, revision: u32, pending: Option<PendingClaim>) -> LedgerEntry {
        LedgerEntry {
            trace_id: "t".into(),
            state,
            version: 4,
            revision,
            total_credits: 30,
            billed_credits: 30,
            capped_credits: 0,
            customer_id: (revision > 0).then(|| "cus_a".to_string()),
            last_observation_at: None,
            pending,
            reason: None,
            detail: None,
            receipted: None,
            price_version: None,
        }
    }

    fn pending(revision: u32) -> PendingClaim {
        let now = Utc::now();
        PendingClaim {
            revision,
            identifier: identifier("t", revision),
            customer_id: "cus_x".into(),
            billable: 12,
            capped: 3,
            total_after: 45,
            event_timestamp: 0,
            period: "2026-11".into(),
            claimed_at: now,
            lease_until: now,
            receipt: Some("r".into()),
        }
    }

    #[test]
    fn a_pending_revision_is_given_back_and_a_folded_later_one_is_refused() {
        let e = entry(LedgerState::Claimed, 1, Some(pending(2)));
        let t = RejectionTarget {
            entry: &e,
            committed_period: Some("2026-10"),
            already_rejected: false,
        };
        let RejectionPlan::GiveBack(g) = plan_rejection(&t, 2, &identifier("t", 2)) else {
            panic!("expected a give-back");
        };
        assert_eq!(
            (
                g.customer_id.as_str(),
                g.period.as_str(),
                g.billable,
                g.capped
            ),
            ("cus_x", "2026-11", 12, 3)
        );
        assert_eq!((g.version, g.revision, g.totals), (4, 2, (30, 30, 0)));
        assert!(matches!(
            plan_rejection(&t, 1, &identifier("t", 1)),
            RejectionPlan::Refused(_)
        ));
        let done = RejectionTarget {
            already_rejected: true,
            ..t
        };
        assert_eq!(
            plan_rejection(&done, 2, &identifier("t", 2)),
            RejectionPlan::AlreadyRejected
        );
    }

    #[test]
    fn a_folded_first_revision_is_given_back_whole() {
        let e = entry(LedgerState::Metered, 1, None);
        let t = RejectionTarget {
            entry: &e,
            committed_period: Some("2026-11"),
            already_rejected: false,
        };
        let RejectionPlan::GiveBack(g) = plan_rejection(&t, 1, &identifier("t", 1)) else {
            panic!("expected a give-back");
        };
        assert_eq!((g.billable, g.totals), (30, (0, 0, 0)));
        let later = entry(LedgerState::Metered, 2, None);
        let t2 = RejectionTarget { entry: &later, ..t };
        assert!(matches!(
            plan_rejection(&t2, 1, &identifier("t", 1)),
            RejectionPlan::Refused(_)
        ));
        assert!(matches!(
            plan_rejection(&t2, 3, &identifier("t", 3)),
            RejectionPlan::Refused(_)
        ));
    }
}
