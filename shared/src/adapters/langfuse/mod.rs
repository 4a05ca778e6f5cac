//! Langfuse, both API generations: per-trace usage for the process function (behind
//! [`UsageSource`]) and time-range listings for ingest (behind
//! [`TraceLister`](crate::ports::TraceLister)).
//!
//! - `v2.rs`: `GET /api/public/v2/observations` (Langfuse Cloud and v4).
//! - `batch.rs`: the usage of many traces in few v2 requests (the JSON `filter`).
//! - `legacy.rs`: `GET /api/public/traces` and `/traces/{id}` (self-hosted v3).
//! - [`scan`]: the ingest scanner, its request budget and its retries.
//! - `parse.rs`: answers into data, and the cost and latency rules both generations share.
//!
//! Both readers share one `Connection`: the HTTP client, the base URL, the keys (a
//! [`Credential`]: read from their secret, and read again after a 401) and the deployment's
//! shared request budget (`domain::quota`), which every request draws from before it is sent.

mod batch;
mod legacy;
mod parse;
mod probe;
pub mod scan;
mod v2;

pub use batch::{MAX_OBSERVATIONS_PER_TRACE, MAX_URL_BYTES, chunk_ids, trace_filter};
pub use legacy::{LegacyObservation, LegacyTrace, usage_from_legacy};
pub use parse::{encode_path, parse};
pub use probe::Probe;
pub use scan::{LEGACY_SCAN_LIMIT, LangfuseScanner, V2_SCAN_LIMIT};
pub use v2::{
    ObservationV2, ObservationsV2Meta, ObservationsV2Page, V2_PAGE_LIMIT, changed_at, usage_from_v2,
};

use super::credential::{self, Credential};
use super::http;
use crate::config::{LangfuseApi, LangfuseConfig, LangfuseKeys};
use crate::domain::quota::Grant;
use crate::domain::returns::Returns;
use crate::domain::usage::TraceUsage;
use crate::error::{Error, Result};
use crate::ports::RequestQuota;
use crate::ports::usage::{UsageByTrace, UsageSource};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

const SERVICE: &str = "langfuse";
/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Wait asked for after a 429 that names no wait.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(5);

/// The HTTP client, base URL and keys both readers use; every request carries basic auth
/// and is covered by the shared request budget.
#[derive(Clone)]
struct Connection {
    http: reqwest::Client,
    base_url: String,
    keys: Credential<LangfuseKeys>,
    api: LangfuseApi,
    quota: Arc<dyn RequestQuota>,
}

impl Connection {
    fn new(cfg: &LangfuseConfig, keys: Credential<LangfuseKeys>) -> Result<Connection> {
        Ok(Connection {
            http: http::client(cfg.timeout)?,
            base_url: cfg.base_url.clone(),
            keys,
            api: cfg.api,
            quota: Arc::new(crate::ports::Unmetered),
        })
    }

    /// Takes the budget for one request now, or a transient error that asks to wait until
    /// the budget has room (the caller defers the work; it never sends uncovered).
    async fn admit(&self) -> Result<()> {
        match self.quota.take(Utc::now()).await? {
            Grant::Granted => Ok(()),
            Grant::Wait(wait) => Err(budget_spent(wait)),
        }
    }

    /// A `GET` whose budget the caller already took.
    async fn get_granted(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Response> {
        let request = self.http.get(format!("{}{}", self.base_url, path));
        self.send(request.query(query)).await
    }

    /// A `POST` of `body` as JSON to `path`, authenticated, within the budget.
    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<reqwest::Response> {
        self.admit().await?;
        let request = self.http.post(format!("{}{}", self.base_url, path));
        self.send(request.json(body)).await
    }

    /// Sends with the keys (a 401 re-reads them once: see [`Credential::send`]).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        self.keys.send(SERVICE, request).await
    }

    fn debug(&self, f: &mut std::fmt::Formatter<'_>, name: &str) -> std::fmt::Result {
        f.debug_struct(name)
            .field("base_url", &self.base_url)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The error of a request the shared budget does not cover now: wait `wait` and ask again.
fn budget_spent(wait: Duration) -> Error {
    Error::Transient {
        service: SERVICE,
        detail:
            "the shared Langfuse request budget (LANGFUSE_REQUESTS_PER_MINUTE) is spent for now"
                .to_string(),
        retry_after: Some(wait),
    }
}

/// An answer that is not a success, as a transient error naming the request (`what`), with
/// the wait Langfuse asked for, a hint for the usual causes and an excerpt of the body.
async fn status_error(what: &str, response: reqwest::Response) -> Error {
    let status = response.status();
    let mut retry_after = http::retry_after(response.headers(), Utc::now().timestamp());
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        // A 429 always asks to wait, even when it does not say how long.
        retry_after = retry_after.or(Some(DEFAULT_429_WAIT));
    }
    let hint = match (status.as_u16(), credential::refused(&response)) {
        (401, Some(check)) => format!(" (the key was refused: check {check})"),
        (401 | 403, _) => " (check the Langfuse keys)".to_string(),
        (404, _) => " (check LANGFUSE_BASE_URL and LANGFUSE_API)".to_string(),
        (429, _) => " (rate limited)".to_string(),
        _ => String::new(),
    };
    let body = http::read_limited(SERVICE, response, 64 * 1024)
        .await
        .unwrap_or_default();
    Error::Transient {
        service: SERVICE,
        detail: format!("{what} answered {status}{hint}: {}", http::excerpt(&body)),
        retry_after,
    }
}

/// The process function's Langfuse client: one trace's usage, and the billed score.
#[derive(Clone)]
pub struct LangfuseClient {
    conn: Connection,
}

impl std::fmt::Debug for LangfuseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.debug(f, "LangfuseClient")
    }
}

impl LangfuseClient {
    /// Builds the client from configuration and the keys ([`Credential::load`]).
    pub fn new(cfg: &LangfuseConfig, keys: Credential<LangfuseKeys>) -> Result<LangfuseClient> {
        Ok(LangfuseClient {
            conn: Connection::new(cfg, keys)?,
        })
    }

    /// Draws every request from `quota`, the deployment's shared budget.
    pub fn with_quota(mut self, quota: Arc<dyn RequestQuota>) -> LangfuseClient {
        self.conn.quota = quota;
        self
    }

    /// GETs JSON; `Ok(None)` on 404.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<T>> {
        self.conn.admit().await?;
        self.get_json_granted(path, query).await
    }

    /// GETs JSON whose budget the caller already took; `Ok(None)` on 404.
    async fn get_json_granted<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<T>> {
        let response = self.conn.get_granted(path, query).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(path, response).await);
        }
        let body = http::read_limited(SERVICE, response, MAX_RESPONSE_BYTES).await?;
        parse(path, &body).map(Some)
    }
}

#[async_trait]
impl UsageSource for LangfuseClient {
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        match self.conn.api {
            LangfuseApi::V2 => self.usage_v2(trace_id).await,
            LangfuseApi::Legacy => self.usage_legacy(trace_id).await,
        }
    }

    async fn traces_usage(&self, trace_ids: &[String]) -> Result<UsageByTrace> {
        match self.conn.api {
            LangfuseApi::V2 => self.usage_v2_batch(trace_ids).await,
            LangfuseApi::Legacy => self.usage_legacy_batch(trace_ids).await,
        }
    }

    async fn record_billed(&self, trace_id: &str, identifier: &str, credits: u64) -> Result<()> {
        let path = "/api/public/scores";
        let body = serde_json::json!({
            "id": identifier,
            "traceId": trace_id,
            "name": "tracemeter_billed_credits",
            "value": credits,
            "dataType": "NUMERIC",
            "comment": format!("billed to Stripe as {identifier}"),
        });
        let response = self.conn.post(path, &body).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(path, response).await)
        }
    }

    async fn book_returns(
        &self,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        n: usize,
        requests_per_message: f64,
    ) -> Result<Option<Returns>> {
        self.conn
            .quota
            .book_returns(earliest, latest, n, requests_per_message)
            .await
    }
}
