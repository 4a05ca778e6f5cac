//! One small adapter per outside system.

pub mod dynamo;
pub mod http;
pub mod ingest_store;
pub mod langfuse;
pub mod sqs;
pub mod stripe;

/// The ingest scanner's former path, kept while `tests/src` still imports it; new code uses
/// [`langfuse::scan`].
pub use langfuse::scan as langfuse_scan;
