//! The ledger's view of one trace: what was billed, what is in flight.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The state of a trace in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerState {
    /// A revision is claimed (budget counted) and its Stripe event may be in flight.
    Claimed,
    /// Every revision so far was delivered to Stripe.
    Metered,
    /// The last revision was entirely over a hard limit: nothing sent.
    Capped,
    /// The last attempt failed for good; see `reason`.
    Failed,
    /// A claim came back after Stripe's dedup window: an operator must settle it.
    Ambiguous,
}

impl LedgerState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerState::Claimed => "claimed",
            LedgerState::Metered => "metered",
            LedgerState::Capped => "capped",
            LedgerState::Failed => "failed",
            LedgerState::Ambiguous => "ambiguous",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<LedgerState> {
        [
            LedgerState::Claimed,
            LedgerState::Metered,
            LedgerState::Capped,
            LedgerState::Failed,
            LedgerState::Ambiguous,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A revision that has been claimed but not yet marked delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClaim {
    /// The revision number, from 1.
    pub revision: u32,
    /// The Stripe identifier (and idempotency key) of this revision.
    pub identifier: String,
    /// The Stripe customer.
    pub customer_id: String,
    /// Credits to send to Stripe.
    pub billable: u64,
    /// Credits over the hard limit, not sent.
    pub capped: u64,
    /// The trace's total credits once this revision is delivered.
    pub total_after: u64,
    /// The meter event timestamp (usage time), Unix seconds.
    pub event_timestamp: i64,
    /// The budget period key the credits were counted in.
    pub period: String,
    /// When the claim was made.
    pub claimed_at: DateTime<Utc>,
    /// Until when the claiming invocation owns it.
    pub lease_until: DateTime<Utc>,
    /// The receipt that records this revision's delivery when it was claimed in a batch:
    /// one write marks every revision of an invocation delivered (see [`receipt_id`]).
    pub receipt: Option<String>,
}

/// One trace's ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The trace id.
    pub trace_id: String,
    /// Its state.
    pub state: LedgerState,
    /// Optimistic-concurrency version: every write increments it.
    pub version: u64,
    /// Number of delivered (or fully capped) revisions.
    pub revision: u32,
    /// Credits covered so far (billed + capped).
    pub total_credits: u64,
    /// Credits sent to Stripe so far.
    pub billed_credits: u64,
    /// Credits not billed because of hard limits so far.
    pub capped_credits: u64,
    /// The customer billed.
    pub customer_id: Option<String>,
    /// The newest observation time included in `total_credits`.
    pub last_observation_at: Option<DateTime<Utc>>,
    /// The in-flight revision, when `state` is `Claimed` (or `Ambiguous`).
    pub pending: Option<PendingClaim>,
    /// The last permanent failure reason, if any.
    pub reason: Option<String>,
    /// Its detail.
    pub detail: Option<String>,
    /// The identifier of a revision whose delivery is recorded only in its receipt, folded
    /// into this view by [`LedgerEntry::delivered`] but not yet into the stored item.
    pub receipted: Option<String>,
    /// The price version the trace's revisions are priced with
    /// ([`crate::domain::price_book::PriceVersion::id`]), written by its first claim; none
    /// on entries billed before the price book.
    pub price_version: Option<String>,
}

impl LedgerEntry {
    /// This entry once its pending revision is known delivered (its receipt lists the
    /// identifier): the revision folded into the totals, exactly as marking it would.
    pub fn delivered(mut self) -> LedgerEntry {
        if let Some(p) = self.pending.take() {
            self.state = LedgerState::Metered;
            self.revision = p.revision;
            self.total_credits = p.total_after;
            self.billed_credits += p.billable;
            self.capped_credits += p.capped;
            self.customer_id = Some(p.customer_id);
            self.receipted = Some(p.identifier);
        }
        self
    }
}

/// A fresh receipt id for one invocation: a hash of what makes the invocation unique (the
/// receive handles of its messages, the time, the process and a counter).
pub fn receipt_id(seed: &[&str], now: DateTime<Utc>) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = Sha256::new();
    for part in seed {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    hex::encode(&h.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::meter::identifier;

    #[test]
    fn receipt_ids_differ_between_invocations() {
        let now = Utc::now();
        let a = receipt_id(&["h1"], now);
        let b = receipt_id(&["h1"], now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
    }

    #[test]
    fn a_delivered_pending_revision_folds_into_the_totals() {
        let now = Utc::now();
        let e = LedgerEntry {
            trace_id: "t".into(),
            state: LedgerState::Claimed,
            version: 3,
            revision: 1,
            total_credits: 100,
            billed_credits: 90,
            capped_credits: 10,
            customer_id: Some("cus_1".into()),
            last_observation_at: None,
            pending: Some(PendingClaim {
                revision: 2,
                identifier: identifier("t", 2),
                customer_id: "cus_1".into(),
                billable: 40,
                capped: 5,
                total_after: 145,
                event_timestamp: 0,
                period: "2026-11".into(),
                claimed_at: now,
                lease_until: now,
                receipt: Some("r".into()),
            }),
            reason: None,
            detail: None,
            receipted: None,
            price_version: None,
        };
        let d = e.delivered();
        assert_eq!(d.state, LedgerState::Metered);
        assert_eq!(
            (
                d.revision,
                d.total_credits,
                d.billed_credits,
                d.capped_credits
            ),
            (2, 145, 130, 15)
        );
        assert!(d.pending.is_none());
        assert_eq!(d.receipted, Some(identifier("t", 2)));
        assert_eq!(d.version, 3);
    }
}
