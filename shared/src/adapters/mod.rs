//! One small adapter per outside system.

pub mod credential;
pub mod dead_letters;
pub mod dynamo;
pub mod http;
pub mod ingest_store;
pub mod langfuse;
pub mod ledger_cache;
pub mod price_cache;
pub mod secrets;
pub mod sqs;
pub mod startup;
pub mod stripe;
pub mod stripe_events;
pub mod stripe_meter;
pub mod stripe_reports;
