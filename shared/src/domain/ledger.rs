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

#[cfg(test)]
mod tests {
    use super::*;

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
}
