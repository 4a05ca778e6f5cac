//! One cheap authenticated read of the configured API generation, for `tracemeter doctor`:
//! `GET /api/public/v2/observations?limit=1` (v2) or `GET /api/public/traces?limit=1`
//! (legacy), outside the shared request budget (one request, by an operator).

use super::{LangfuseClient, SERVICE};
use crate::adapters::{credential, http};
use crate::config::LangfuseApi;
use crate::error::Result;

/// What the read answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The request, `GET <path>`.
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// `X-RateLimit-Limit`, when Langfuse sent it (requests per minute).
    pub rate_limit: Option<u64>,
    /// On a refused key: what to check (the secret and its variable).
    pub refused: Option<String>,
    /// On a failure: an excerpt of the body.
    pub detail: String,
}

impl LangfuseClient {
    /// Reads one item of the configured API generation.
    pub async fn probe(&self) -> Result<Probe> {
        let (path, query) = match self.conn.api {
            LangfuseApi::V2 => (
                "/api/public/v2/observations",
                vec![("limit", "1".to_string()), ("fields", "core".to_string())],
            ),
            LangfuseApi::Legacy => ("/api/public/traces", vec![("limit", "1".to_string())]),
        };
        let response = self.conn.get_granted(path, &query).await?;
        let status = response.status().as_u16();
        let rate_limit = response
            .headers()
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let refused = credential::refused(&response).map(str::to_string);
        let detail = if response.status().is_success() {
            String::new()
        } else {
            let body = http::read_limited(SERVICE, response, 64 * 1024).await;
            http::excerpt(&body.unwrap_or_default())
        };
        Ok(Probe {
            request: format!("GET {path}"),
            status,
            rate_limit,
            refused,
            detail,
        })
    }
}
