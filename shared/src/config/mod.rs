//! Typed configuration, read once at cold start from environment variables.
//!
//! A missing or malformed value fails at start with a message that names the variable.
//! Secrets are wrapped in [`Secret`], whose `Debug` never shows them; the Langfuse and Stripe
//! keys come from Secrets Manager ([`KeySource`]), read by the adapters, not from variables.
//!
//! - [`ProcessConfig`]: the process function (Langfuse, Stripe, pricing, budgets, tuning).
//! - [`IngestConfig`]: the ingest function (Langfuse, settling, scan tuning; no Stripe).
//! - [`AdminConfig`]: the operator command (table and queues).
//! - [`catalog`]: every variable with its default and meaning (the documented reference).

mod admin;
pub mod catalog;
mod env;
mod ingest;
mod keys;
mod langfuse;
mod process;
mod stripe;
#[cfg(test)]
mod tests;

pub use admin::AdminConfig;
pub use env::{Secret, is_loopback_host, validate_url};
pub use ingest::IngestConfig;
pub use keys::{KeySource, LangfuseKeys, StripeKey};
pub use langfuse::{LangfuseApi, LangfuseConfig};
pub use process::{CustomerRules, ProcessConfig, ProcessTuning};
pub use stripe::{StripeApiMode, StripeConfig};
