//! The ingest function's configuration, read on its own so that ingest needs no Stripe
//! secrets: Langfuse, the table, the queue, settling and the ingest tuning.

use super::env::Env;
use super::langfuse::LangfuseConfig;
use crate::error::Result;

/// The ingest function's whole configuration.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Langfuse (`LANGFUSE_BASE_URL`, `LANGFUSE_SECRET_ARN` or the development keys,
    /// `LANGFUSE_API`, `LANGFUSE_TIMEOUT_MS`).
    pub langfuse: LangfuseConfig,
    /// `TABLE_NAME`: the ledger table, which also holds ingest's lease and cursor.
    pub table_name: String,
    /// `QUEUE_URL`: the meter queue.
    pub queue_url: String,
    /// `SETTLE_SECONDS` (default 900): usage younger than this is left for a later run.
    pub settle: chrono::Duration,
    /// `RESCAN_SECONDS` (default 86400): each run also re-reads this much before the
    /// watermark, to find late observations (0 = no re-scan).
    pub rescan: chrono::Duration,
    /// `INGEST_START_LOOKBACK_SECONDS` (default 86400): how far back the very first run (no
    /// watermark yet) starts.
    pub start_lookback: chrono::Duration,
    /// `INGEST_TIME_BUDGET_MARGIN_SECONDS` (default 20): a run stops, checkpoints and releases
    /// its lease this long before the Lambda's deadline.
    pub time_budget_margin: chrono::Duration,
    /// `INGEST_SEND_ATTEMPTS` (default 4): tries per SQS entry before it is reported failed.
    pub send_attempts: u32,
    /// `INGEST_LANGFUSE_ATTEMPTS` (default 4): tries per Langfuse page on 5xx or transport
    /// errors (429s are waited out and not counted).
    pub langfuse_attempts: u32,
    /// `INGEST_PROGRESS_EVERY_PAGES` (default 10): a progress line every N pages.
    pub progress_every_pages: u32,
}

impl IngestConfig {
    /// Reads the ingest configuration from the process environment.
    pub fn from_env() -> Result<IngestConfig> {
        IngestConfig::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the ingest configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<IngestConfig> {
        let env = Env::new(lookup);
        Ok(IngestConfig {
            // Ingest never writes scores.
            langfuse: LangfuseConfig::read(&env, false)?,
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.url("QUEUE_URL", None)?,
            settle: env.seconds("SETTLE_SECONDS", 900, 7 * 86_400)?,
            rescan: env.seconds("RESCAN_SECONDS", 86_400, 30 * 86_400)?,
            start_lookback: env.seconds("INGEST_START_LOOKBACK_SECONDS", 86_400, 366 * 86_400)?,
            time_budget_margin: env.seconds("INGEST_TIME_BUDGET_MARGIN_SECONDS", 20, 600)?,
            send_attempts: env.count("INGEST_SEND_ATTEMPTS", 4, 20)?,
            langfuse_attempts: env.count("INGEST_LANGFUSE_ATTEMPTS", 4, 20)?,
            progress_every_pages: env.count("INGEST_PROGRESS_EVERY_PAGES", 10, 1_000_000)?,
        })
    }
}
