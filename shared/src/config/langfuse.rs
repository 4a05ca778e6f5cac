//! The Langfuse variables, read by both functions.

use super::env::Env;
use super::keys::{self, KeySource, LangfuseKeys};
use crate::domain::quota::RequestLimit;
use crate::error::{Error, Result};
use std::time::Duration;

/// Which Langfuse API generation to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LangfuseApi {
    /// `GET /api/public/v2/observations` (Langfuse Cloud and v4).
    V2,
    /// `GET /api/public/traces` and `/traces/{id}` (self-hosted v3).
    Legacy,
}

/// Langfuse connection settings.
#[derive(Debug, Clone)]
pub struct LangfuseConfig {
    /// `LANGFUSE_BASE_URL`, e.g. `https://cloud.langfuse.com`.
    pub base_url: String,
    /// `LANGFUSE_SECRET_ARN` (a secret with `public_key` and `secret_key`), or for local
    /// development `LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY`.
    pub keys: KeySource<LangfuseKeys>,
    /// `LANGFUSE_API` (`v2` or `legacy`, default `v2`).
    pub api: LangfuseApi,
    /// `LANGFUSE_TIMEOUT_MS` (default 10000).
    pub timeout: Duration,
    /// `LANGFUSE_SCORE_ENABLED`: mark billed traces with a score (default false).
    pub score_enabled: bool,
    /// `LANGFUSE_REQUESTS_PER_MINUTE` (default 30, or `unlimited`): the request budget of the
    /// whole deployment, ingest and every process instance together (`domain::quota`). 30
    /// is the smallest Langfuse Cloud plan (Hobby); Langfuse counts per organisation, so
    /// leave room for the organisation's other callers; `unlimited` for self-hosted.
    pub requests: RequestLimit,
}

impl LangfuseConfig {
    /// The Langfuse variables alone, through `lookup` (`tracemeter doctor` checks each
    /// service on its own).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<LangfuseConfig> {
        LangfuseConfig::read(&Env::new(lookup), false)
    }

    /// Reads the Langfuse variables (`scores`: read `LANGFUSE_SCORE_ENABLED`; ingest never
    /// writes scores).
    pub(super) fn read(env: &Env<'_>, scores: bool) -> Result<LangfuseConfig> {
        let api = match env.optional("LANGFUSE_API").as_deref() {
            None | Some("v2") => LangfuseApi::V2,
            Some("legacy") => LangfuseApi::Legacy,
            Some(other) => {
                return Err(Error::Config(format!(
                    "LANGFUSE_API={other:?} is not valid: expected v2 or legacy"
                )));
            }
        };
        Ok(LangfuseConfig {
            base_url: env.url("LANGFUSE_BASE_URL", None)?,
            keys: keys::langfuse(env)?,
            api,
            timeout: env.timeout_ms("LANGFUSE_TIMEOUT_MS")?,
            score_enabled: scores
                && env.parsed("LANGFUSE_SCORE_ENABLED", false, "true or false")?,
            requests: match env.optional("LANGFUSE_REQUESTS_PER_MINUTE").as_deref() {
                Some("unlimited") => RequestLimit::Unlimited,
                _ => RequestLimit::PerMinute(env.count(
                    "LANGFUSE_REQUESTS_PER_MINUTE",
                    30,
                    1_000_000,
                )?),
            },
        })
    }
}
