//! What goes to Stripe: one meter event per claimed revision, and what Stripe said.

use crate::domain::ledger::PendingClaim;

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
