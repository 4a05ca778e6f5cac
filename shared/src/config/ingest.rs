//! The ingest function's configuration, read on its own so that ingest needs no Stripe
//! secrets: Langfuse, the table, the queue, settling and the ingest tuning.

use super::env::Env;
use super::langfuse::LangfuseConfig;
use crate::domain::rescan::{DEFAULT_RESCAN_TIERS, RescanTier, effective_tiers, parse_tiers};
use crate::error::{Error, Result};

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
    /// `RESCAN_SECONDS` (default 86400): how late an observation may appear (after settling)
    /// and still be found: the oldest re-scan tier's age (0 = no re-scan).
    pub rescan: chrono::Duration,
    /// `RESCAN_TIERS` (default `900:900,3600:3600,21600:3600,86400:21600`): `AGE:EVERY`
    /// seconds; each instant is read again once at each age, by ranges about `EVERY` long.
    /// Bounded by `RESCAN_SECONDS` (`domain::rescan::effective_tiers`): the tiers run.
    pub rescan_tiers: Vec<RescanTier>,
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
        let rescan = env.seconds("RESCAN_SECONDS", 86_400, 30 * 86_400)?;
        let raw_tiers = env
            .optional("RESCAN_TIERS")
            .unwrap_or_else(|| DEFAULT_RESCAN_TIERS.to_string());
        let tiers = parse_tiers(&raw_tiers)
            .map_err(|e| Error::Config(format!("RESCAN_TIERS={raw_tiers:?} is not valid: {e}")))?;
        Ok(IngestConfig {
            // Ingest never writes scores.
            langfuse: LangfuseConfig::read(&env, false)?,
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.url("QUEUE_URL", None)?,
            settle: env.seconds("SETTLE_SECONDS", 900, 7 * 86_400)?,
            rescan,
            rescan_tiers: effective_tiers(&tiers, rescan),
            start_lookback: env.seconds("INGEST_START_LOOKBACK_SECONDS", 86_400, 366 * 86_400)?,
            time_budget_margin: env.seconds("INGEST_TIME_BUDGET_MARGIN_SECONDS", 20, 600)?,
            send_attempts: env.count("INGEST_SEND_ATTEMPTS", 4, 20)?,
            langfuse_attempts: env.count("INGEST_LANGFUSE_ATTEMPTS", 4, 20)?,
            progress_every_pages: env.count("INGEST_PROGRESS_EVERY_PAGES", 10, 1_000_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(extra: &[(&str, &str)]) -> Result<IngestConfig> {
        let mut vars: HashMap<&str, &str> = HashMap::from([
            ("LANGFUSE_BASE_URL", "https://cloud.langfuse.com"),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-1"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-1"),
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
        ]);
        vars.extend(extra.iter().copied());
        IngestConfig::from_lookup(&|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn rescan_tiers_default_parse_and_refuse() {
        let secs = chrono::Duration::seconds;
        let default = load(&[]).expect("default");
        assert_eq!(default.rescan_tiers.len(), 4);
        assert_eq!(default.rescan_tiers[3].age, secs(86_400));
        let short = load(&[("RESCAN_SECONDS", "3600"), ("RESCAN_TIERS", "600:300")]).expect("ok");
        let ages: Vec<_> = short
            .rescan_tiers
            .iter()
            .map(|t| (t.age, t.every))
            .collect();
        assert_eq!(ages, vec![(secs(600), secs(300)), (secs(3600), secs(300))]);
        assert!(
            load(&[("RESCAN_SECONDS", "0")])
                .expect("ok")
                .rescan_tiers
                .is_empty()
        );
        let err = load(&[("RESCAN_TIERS", "900")])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("RESCAN_TIERS"), "{err}");
    }
}
