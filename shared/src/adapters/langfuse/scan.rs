//! Listing settled usage from Langfuse in time ranges, for ingest, within a request budget.
//!
//! The walk itself is per API generation (`v2`: newest first by Langfuse's cursor; `legacy`:
//! oldest first by keyset on time); this file holds what both share: the scanner, the request
//! budget and the fetch of one page.
//!
//! Every request first waits for the deployment's shared request budget
//! (`LANGFUSE_REQUESTS_PER_MINUTE`, `domain::quota`), which the process function draws from too. A
//! 429 is waited out as `Retry-After` (or `X-RateLimit-Reset`) asks, when that fits in the
//! time left; otherwise the page is reported out of time and the run checkpoints. 5xx
//! answers, transport errors and bodies cut short are retried a bounded number of times.

use super::{Connection, DEFAULT_429_WAIT, SERVICE, http, parse, status_error};
use crate::config::{IngestConfig, LangfuseApi};
use crate::domain::ingest::Direction;
use crate::domain::quota::Grant;
use crate::domain::scan::{PageOutcome, ScanPage, Walk};
use crate::error::{Error, Result};
use crate::ports::RequestQuota;
use crate::ports::TraceLister;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub use super::legacy::LEGACY_SCAN_LIMIT;
pub use super::v2::V2_SCAN_LIMIT;

/// Largest scan response read, in bytes.
const MAX_SCAN_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The Langfuse scanner (either generation).
pub struct LangfuseScanner {
    conn: Connection,
    attempts: u32,
}

impl std::fmt::Debug for LangfuseScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.debug(f, "LangfuseScanner")
    }
}

/// A page, or no time left to read it.
pub(super) enum Fetched<T> {
    Done(T),
    OutOfTime,
}

/// One request's outcome, short of a final error.
enum Attempt<T> {
    Done(T),
    OutOfTime,
    /// A 429 was waited out: ask again.
    Again,
    /// Worth another try (5xx, transport, a body cut short or not JSON).
    Failed(Error),
}

/// A time as Langfuse's query parameters take it.
pub(super) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One millisecond, the resolution of Langfuse's times.
pub(super) fn millisecond() -> chrono::Duration {
    chrono::Duration::milliseconds(1)
}

impl LangfuseScanner {
    /// Builds the scanner from the ingest configuration and the Langfuse keys.
    pub fn new(
        cfg: &IngestConfig,
        keys: crate::adapters::credential::Credential<crate::config::LangfuseKeys>,
    ) -> Result<LangfuseScanner> {
        Ok(LangfuseScanner {
            conn: Connection::new(&cfg.langfuse, keys)?,
            attempts: cfg.langfuse_attempts,
        })
    }

    /// Draws every request from `quota`, the deployment's shared budget.
    pub fn with_quota(mut self, quota: Arc<dyn RequestQuota>) -> LangfuseScanner {
        self.conn.quota = quota;
        self
    }

    /// GETs a page within the budget, waiting out 429s and retrying 5xx and transport
    /// errors a bounded number of times.
    pub(super) async fn fetch<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        until: Instant,
        stats: &mut ScanPage,
    ) -> Result<Fetched<T>> {
        let mut failures = 0u32;
        loop {
            if !self.wait_for_budget(until, stats).await? {
                return Ok(Fetched::OutOfTime);
            }
            let failure = match self.attempt(path, query, until, stats).await? {
                Attempt::Done(page) => return Ok(Fetched::Done(page)),
                Attempt::OutOfTime => return Ok(Fetched::OutOfTime),
                Attempt::Again => continue,
                Attempt::Failed(e) => e,
            };
            failures += 1;
            if failures >= self.attempts {
                return Err(failure);
            }
            let backoff = Duration::from_millis(250u64.saturating_mul(1 << failures.min(6)));
            if Instant::now() + backoff >= until {
                return Err(failure);
            }
            warn!(error = %failure, attempt = failures, backoff_ms = backoff.as_millis() as u64, "Langfuse page failed; retrying");
            tokio::time::sleep(backoff).await;
            stats.waited += backoff;
        }
    }

    /// Takes the budget for the next request, waiting while it is spent; false when the
    /// wait would pass `until` (nothing taken).
    async fn wait_for_budget(&self, until: Instant, stats: &mut ScanPage) -> Result<bool> {
        loop {
            let wait = match self.conn.quota.take(Utc::now()).await? {
                Grant::Granted => return Ok(Instant::now() < until),
                Grant::Wait(wait) => wait,
            };
            if Instant::now() + wait >= until {
                return Ok(false);
            }
            info!(
                wait_ms = wait.as_millis() as u64,
                "waiting for the shared Langfuse request budget"
            );
            tokio::time::sleep(wait).await;
            stats.waited += wait;
        }
    }

    /// One request, counted against the budget. An answer that no retry can change (a 4xx
    /// other than 429) is the error.
    async fn attempt<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        until: Instant,
        stats: &mut ScanPage,
    ) -> Result<Attempt<T>> {
        stats.requests += 1;
        let response = match self.conn.get_granted(path, query).await {
            Ok(response) => response,
            Err(e) => return Ok(Attempt::Failed(e)),
        };
        let status = response.status();
        if status.is_success() {
            // A body cut short or not JSON (a proxy's error page) is retried like a 5xx: the
            // next attempt usually reads it whole.
            return Ok(
                match http::read_limited(SERVICE, response, MAX_SCAN_RESPONSE_BYTES)
                    .await
                    .and_then(|body| parse(path, &body))
                {
                    Ok(page) => Attempt::Done(page),
                    Err(e) => Attempt::Failed(e),
                },
            );
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Ok(wait_out_429(path, &response, until, stats).await);
        }
        let err = status_error(&format!("GET {path}"), response).await;
        if !status.is_server_error() {
            return Err(err);
        }
        Ok(Attempt::Failed(err))
    }
}

/// A 429: waits as asked when that fits in the time left.
async fn wait_out_429<T>(
    path: &str,
    response: &reqwest::Response,
    until: Instant,
    stats: &mut ScanPage,
) -> Attempt<T> {
    stats.rate_limited += 1;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let wait =
        http::retry_after(response.headers(), Utc::now().timestamp()).unwrap_or(DEFAULT_429_WAIT);
    let limit = header("x-ratelimit-limit");
    let remaining = header("x-ratelimit-remaining");
    if Instant::now() + wait >= until {
        warn!(
            path,
            wait_ms = wait.as_millis() as u64,
            limit,
            remaining,
            "Langfuse rate limited (429); the wait does not fit in the time left, stopping here"
        );
        return Attempt::OutOfTime;
    }
    warn!(
        path,
        wait_ms = wait.as_millis() as u64,
        limit,
        remaining,
        "Langfuse rate limited (429); waiting as asked"
    );
    tokio::time::sleep(wait).await;
    stats.waited += wait;
    Attempt::Again
}

#[async_trait]
impl TraceLister for LangfuseScanner {
    fn api(&self) -> &'static str {
        match self.conn.api {
            LangfuseApi::V2 => "v2",
            LangfuseApi::Legacy => "legacy",
        }
    }

    fn direction(&self) -> Direction {
        match self.conn.api {
            LangfuseApi::V2 => Direction::NewestFirst,
            LangfuseApi::Legacy => Direction::OldestFirst,
        }
    }

    async fn next_page(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome> {
        if walk.done {
            return Ok(PageOutcome::Page(ScanPage::default()));
        }
        match self.conn.api {
            LangfuseApi::V2 => self.next_v2(walk, until).await,
            LangfuseApi::Legacy => self.next_legacy(walk, until).await,
        }
    }
}
