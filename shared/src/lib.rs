//! tracemeter: Langfuse usage to Stripe meter events, exactly once, with budgets.
//!
//! - [`domain`]: usage, credits, customers, budgets, ledger states; no SDK types.
//! - [`ports`]: the small traits the handlers depend on.
//! - [`adapters`]: Langfuse (v2 and legacy), Stripe, DynamoDB, SQS.
//! - [`config`]: the environment contract.

pub mod adapters;
pub mod alerts;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod ports;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, FailureReason, Result};
