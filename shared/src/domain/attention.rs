//! Entries that need an operator: failed for good (replayable once the cause is fixed) or
//! ambiguous (a claim to settle). The ledger keeps them findable without a table scan.

use crate::domain::ledger::{LedgerEntry, LedgerState};
use chrono::{DateTime, Utc};

/// The reason an ambiguous entry is stored with.
pub const AMBIGUOUS_REASON: &str = "claim_outlived_stripe_dedup_window";

/// What an operator looks for among the entries that need attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionQuery {
    /// `Failed` or `Ambiguous`.
    pub state: LedgerState,
    /// Only this stored `reason` (e.g. `unmapped_customer`).
    pub reason: Option<String>,
    /// Only entries written at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl AttentionQuery {
    /// Every entry in `state`.
    pub fn all(state: LedgerState) -> AttentionQuery {
        AttentionQuery {
            state,
            reason: None,
            since: None,
        }
    }

    /// Whether `entry`, last written at `updated_at`, is one this query asks for.
    pub fn matches(&self, entry: &LedgerEntry, updated_at: DateTime<Utc>) -> bool {
        entry.state == self.state
            && self
                .reason
                .as_deref()
                .is_none_or(|r| entry.reason.as_deref() == Some(r))
            && self.since.is_none_or(|t| updated_at >= t)
    }
}

/// An entry that needs attention and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionEntry {
    /// The entry as stored.
    pub entry: LedgerEntry,
    /// Its last write (`updated_at`).
    pub updated_at: DateTime<Utc>,
}

/// The record of a malformed message: its body named no usable trace, so there is nothing to
/// replay; an operator reads it and deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFailure {
    /// The SQS message id it is recorded under.
    pub message_id: String,
    /// The stored reason (`malformed_message`).
    pub reason: String,
    /// What was wrong with the body.
    pub detail: String,
    /// The body, truncated to 2048 bytes (untrusted text).
    pub body: String,
    /// Its last write.
    pub updated_at: DateTime<Utc>,
}
