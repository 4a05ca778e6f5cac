//! In-memory adapters for fast handler tests (feature `testing`), and the ledger contract
//! suite that the in-memory and the DynamoDB ledgers both pass.
//!
//! Each adapter honours the conditional semantics of its production counterpart:
//!
//! - [`MemoryLedger`]: the four ledger traits, item by item as
//!   [`crate::adapters::dynamo::DynamoLedger`] writes them (versions, claims, leases,
//!   receipts, budget counters with the hard-limit condition, alerts);
//! - [`MemoryUsage`]: Langfuse, as a map of trace usage;
//! - [`MemoryMeter`]: Stripe meter events, with identifier dedup in a 24 h window on an
//!   injectable clock, v1 or v2 stream mode, permanent rejections and transient failures;
//! - [`MemoryQueue`]: SQS visibility changes and sends, recorded;
//! - [`MemoryQuota`]: the shared Langfuse request budget's slot counters.
//!
//! None of them injects faults in the ports' calls beyond what is listed; wrap them for that
//! ([`FaultyLedger`] wraps a ledger with planted [`LedgerFaults`]).

pub mod contract;
mod faulty;
mod ledger;
mod meter;
mod queue;
mod quota;
mod usage;

pub use faulty::{FaultyLedger, LedgerFaults};
pub use ledger::{Alert, Counter, FailedMessage, MemoryLedger, StoredTrace};
pub use meter::{MemoryMeter, StripeMode};
pub use queue::MemoryQueue;
pub use quota::MemoryQuota;
pub use usage::{BilledMark, MemoryUsage};

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, taking over the state a panicking holder left (test adapters keep going).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
