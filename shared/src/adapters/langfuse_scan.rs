//! Listing settled usage from Langfuse in time ranges, for ingest, within a request budget.
//!
//! - `v2`: `GET /api/public/v2/observations?fields=core&limit=1000&fromStartTime=..&toStartTime=..`
//!   walked with Langfuse's own cursor (newest first). Only the `core` field group is asked
//!   for: the trace id and start time are all ingest needs. After each page the checkpoint
//!   position is the oldest start time on it (+1 ms, so a resume re-reads that millisecond
//!   rather than skipping it).
//! - `legacy`: `GET /api/public/traces?orderBy=timestamp.asc&fields=core,metrics&page=1&limit=100`
//!   paged by keyset on time: `fromTimestamp` moves to the last timestamp seen and ids already
//!   seen at that timestamp are dropped. Page numbers are used only inside a closed,
//!   one-millisecond slice of settled time (when more than a page of traces share one
//!   millisecond), which can no longer change. Never offsets over a set that moves.
//!
//! Every request first waits for the per-minute budget (`LANGFUSE_REQUESTS_PER_MINUTE`). A
//! 429 is waited out as `Retry-After` (or `X-RateLimit-Reset`) asks, when that fits in the
//! time left; otherwise the page is reported out of time and the run checkpoints.

use super::http;
use crate::config::{IngestConfig, LangfuseApi, Secret};
use crate::domain::ingest::{Direction, ListedUsage};
use crate::domain::scan::{ListedTrace, PageOutcome, ScanPage, Walk};
use crate::domain::usage::decimal_from_f64;
use crate::error::{Error, Result};
use crate::ports::TraceLister;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const SERVICE: &str = "langfuse";
/// v2 page size (the API maximum).
pub const V2_SCAN_LIMIT: u32 = 1000;
/// Legacy page size (the API maximum).
pub const LEGACY_SCAN_LIMIT: u32 = 100;
/// Wait after a 429 that names no wait.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(5);
/// Largest scan response read, in bytes.
const MAX_SCAN_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A sliding one-minute request budget.
#[derive(Debug)]
pub struct RequestBudget {
    per_minute: u32,
    sent: Mutex<VecDeque<Instant>>,
}

impl RequestBudget {
    /// At most `per_minute` requests in any 60 seconds.
    pub fn new(per_minute: u32) -> RequestBudget {
        RequestBudget {
            per_minute: per_minute.max(1),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// How long to wait at `now` before the next request fits the budget.
    pub fn wait_at(&self, now: Instant) -> Duration {
        let window = Duration::from_secs(60);
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        while sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            sent.pop_front();
        }
        if sent.len() < self.per_minute as usize {
            return Duration::ZERO;
        }
        sent.front()
            .map(|oldest| (*oldest + window).saturating_duration_since(now))
            .unwrap_or(Duration::ZERO)
    }

    /// Counts a request made at `at`.
    pub fn record(&self, at: Instant) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.push_back(at);
        while sent.len() > self.per_minute as usize {
            sent.pop_front();
        }
    }
}

/// The Langfuse scanner (either generation).
pub struct LangfuseScanner {
    http: reqwest::Client,
    base_url: String,
    public_key: String,
    secret_key: Secret,
    api: LangfuseApi,
    budget: RequestBudget,
    attempts: u32,
}

impl std::fmt::Debug for LangfuseScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LangfuseScanner")
            .field("base_url", &self.base_url)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CoreObservation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    /// Required by the API; a row without it still lists its trace (the processor records
    /// the trace's bad data as a permanent failure) instead of blocking the scan.
    #[serde(default)]
    start_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct V2Page {
    data: Vec<CoreObservation>,
    #[serde(default)]
    meta: V2Meta,
}

#[derive(Debug, Default, Deserialize)]
struct V2Meta {
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedLegacyTrace {
    id: String,
    timestamp: DateTime<Utc>,
    #[serde(default)]
    total_cost: Option<f64>,
    #[serde(default)]
    latency: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct LegacyPage {
    data: Vec<ListedLegacyTrace>,
}

enum Fetched<T> {
    Done(T),
    OutOfTime,
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn millisecond() -> chrono::Duration {
    chrono::Duration::milliseconds(1)
}

fn metric(value: Option<f64>) -> Option<rust_decimal::Decimal> {
    value.filter(|v| *v >= 0.0).and_then(decimal_from_f64)
}

impl LangfuseScanner {
    /// Builds the scanner from the ingest configuration.
    pub fn new(cfg: &IngestConfig) -> Result<LangfuseScanner> {
        Ok(LangfuseScanner {
            http: http::client(cfg.langfuse.timeout)?,
            base_url: cfg.langfuse.base_url.clone(),
            public_key: cfg.langfuse.public_key.clone(),
            secret_key: cfg.langfuse.secret_key.clone(),
            api: cfg.langfuse.api,
            budget: RequestBudget::new(cfg.requests_per_minute),
            attempts: cfg.langfuse_attempts,
        })
    }

    /// GETs a page within the budget, waiting out 429s and retrying 5xx and transport
    /// errors a bounded number of times.
    async fn fetch<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        until: Instant,
        stats: &mut ScanPage,
    ) -> Result<Fetched<T>> {
        let mut failures = 0u32;
        loop {
            let wait = self.budget.wait_at(Instant::now());
            if !wait.is_zero() {
                if Instant::now() + wait >= until {
                    return Ok(Fetched::OutOfTime);
                }
                info!(
                    wait_ms = wait.as_millis() as u64,
                    per_minute = self.budget.per_minute,
                    "waiting for the Langfuse request budget"
                );
                tokio::time::sleep(wait).await;
                stats.waited += wait;
            }
            if Instant::now() >= until {
                return Ok(Fetched::OutOfTime);
            }
            self.budget.record(Instant::now());
            stats.requests += 1;
            let sent = self
                .http
                .get(format!("{}{}", self.base_url, path))
                .basic_auth(&self.public_key, Some(self.secret_key.expose()))
                .query(query)
                .send()
                .await;
            let failure = match sent {
                Err(e) => http::transport(SERVICE, e),
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        // A body cut short or not JSON (a proxy's error page) is retried like
                        // a 5xx: the next attempt usually reads it whole.
                        match http::read_limited(SERVICE, response, MAX_SCAN_RESPONSE_BYTES)
                            .await
                            .and_then(|body| super::langfuse::parse(path, &body))
                        {
                            Ok(page) => return Ok(Fetched::Done(page)),
                            Err(e) => e,
                        }
                    } else {
                        let header = |name: &str| {
                            response
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                            stats.rate_limited += 1;
                            let wait =
                                http::retry_after(response.headers(), Utc::now().timestamp())
                                    .unwrap_or(DEFAULT_429_WAIT);
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
                                return Ok(Fetched::OutOfTime);
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
                            continue;
                        }
                        let body = http::read_limited(SERVICE, response, 64 * 1024)
                            .await
                            .unwrap_or_default();
                        let hint = match status.as_u16() {
                            401 | 403 => " (check LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY)",
                            404 => " (check LANGFUSE_BASE_URL and LANGFUSE_API)",
                            _ => "",
                        };
                        let err = Error::transient(
                            SERVICE,
                            format!(
                                "GET {path} answered {status}{hint}: {}",
                                http::excerpt(&body)
                            ),
                        );
                        if !status.is_server_error() {
                            return Err(err);
                        }
                        err
                    }
                }
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

    async fn next_v2(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome> {
        let mut stats = ScanPage::default();
        // The token carries the upper bound its cursor was issued for: `<to ms>|<cursor>`.
        let (to, cursor) = match walk.token.as_deref().and_then(|t| t.split_once('|')) {
            Some((to, cursor)) => (
                to.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
                    .unwrap_or(walk.scan.position),
                Some(cursor.to_string()),
            ),
            None => (walk.scan.position, None),
        };
        let mut query = vec![
            ("fields", "core".to_string()),
            ("limit", V2_SCAN_LIMIT.to_string()),
            ("fromStartTime", iso(walk.scan.from)),
            ("toStartTime", iso(to)),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let page: V2Page = match self
            .fetch("/api/public/v2/observations", &query, until, &mut stats)
            .await?
        {
            Fetched::Done(page) => page,
            Fetched::OutOfTime => return Ok(PageOutcome::OutOfTime { partial: stats }),
        };
        stats.rows = page.data.len();
        let mut index: HashMap<String, usize> = HashMap::new();
        for obs in &page.data {
            let Some(trace_id) = obs.trace_id.as_deref().filter(|t| !t.is_empty()) else {
                continue;
            };
            let start_time = obs.start_time.unwrap_or_else(|| {
                warn!(
                    trace_id,
                    observation = obs.id.as_deref().unwrap_or("?"),
                    "Langfuse listed an observation without startTime; its trace is enqueued and the processor will judge it"
                );
                walk.scan.from
            });
            match index.get(trace_id) {
                Some(&i) => {
                    if let Some(ListedTrace {
                        seen: ListedUsage::V2 { newest_observation },
                        ..
                    }) = stats.traces.get_mut(i)
                        && start_time > *newest_observation
                    {
                        *newest_observation = start_time;
                    }
                }
                None => {
                    index.insert(trace_id.to_string(), stats.traces.len());
                    stats.traces.push(ListedTrace {
                        trace_id: trace_id.to_string(),
                        seen: ListedUsage::V2 {
                            newest_observation: start_time,
                        },
                    });
                }
            }
        }
        match page.meta.cursor.filter(|c| !c.is_empty()) {
            Some(next) => {
                if let Some(oldest) = page.data.iter().filter_map(|o| o.start_time).min() {
                    walk.scan.position = walk.scan.position.min(oldest + millisecond());
                }
                walk.token = Some(format!("{}|{next}", to.timestamp_millis()));
            }
            None => {
                walk.scan.position = walk.scan.from;
                walk.token = None;
                walk.done = true;
            }
        }
        Ok(PageOutcome::Page(stats))
    }

    async fn next_legacy(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome> {
        let mut stats = ScanPage::default();
        let in_slice = walk.slice_page > 0;
        let position = walk.scan.position;
        let (to, page_no) = if in_slice {
            (
                (position + millisecond()).min(walk.scan.to),
                walk.slice_page,
            )
        } else {
            (walk.scan.to, 1)
        };
        let query = vec![
            ("page", page_no.to_string()),
            ("limit", LEGACY_SCAN_LIMIT.to_string()),
            ("orderBy", "timestamp.asc".to_string()),
            ("fields", "core,metrics".to_string()),
            ("fromTimestamp", iso(position)),
            ("toTimestamp", iso(to)),
        ];
        let page: LegacyPage = match self
            .fetch("/api/public/traces", &query, until, &mut stats)
            .await?
        {
            Fetched::Done(page) => page,
            Fetched::OutOfTime => return Ok(PageOutcome::OutOfTime { partial: stats }),
        };
        stats.rows = page.data.len();
        let full = page.data.len() >= LEGACY_SCAN_LIMIT as usize;
        for t in &page.data {
            if t.timestamp == position && walk.ids_at_position.contains(&t.id) {
                continue;
            }
            stats.traces.push(ListedTrace {
                trace_id: t.id.clone(),
                seen: ListedUsage::Legacy {
                    cost_usd: metric(t.total_cost),
                    latency_seconds: metric(t.latency),
                },
            });
        }
        if in_slice {
            if full {
                walk.slice_page += 1;
            } else {
                // The slice is exhausted: move past it.
                walk.slice_page = 0;
                walk.ids_at_position.clear();
                walk.scan.position = to;
                if walk.scan.position >= walk.scan.to {
                    walk.done = true;
                }
            }
            return Ok(PageOutcome::Page(stats));
        }
        if !full {
            walk.scan.position = walk.scan.to;
            walk.ids_at_position.clear();
            walk.done = true;
            return Ok(PageOutcome::Page(stats));
        }
        let Some(last) = page.data.last().map(|t| t.timestamp) else {
            walk.done = true;
            return Ok(PageOutcome::Page(stats));
        };
        if last <= position {
            // A whole page within one millisecond: page through that closed slice.
            walk.slice_page = 1;
            for t in &page.data {
                if !walk.ids_at_position.contains(&t.id) {
                    walk.ids_at_position.push(t.id.clone());
                }
            }
        } else {
            walk.scan.position = last;
            walk.ids_at_position = page
                .data
                .iter()
                .filter(|t| t.timestamp == last)
                .map(|t| t.id.clone())
                .collect();
        }
        Ok(PageOutcome::Page(stats))
    }
}

#[async_trait]
impl TraceLister for LangfuseScanner {
    fn api(&self) -> &'static str {
        match self.api {
            LangfuseApi::V2 => "v2",
            LangfuseApi::Legacy => "legacy",
        }
    }

    fn direction(&self) -> Direction {
        match self.api {
            LangfuseApi::V2 => Direction::NewestFirst,
            LangfuseApi::Legacy => Direction::OldestFirst,
        }
    }

    async fn next_page(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome> {
        if walk.done {
            return Ok(PageOutcome::Page(ScanPage::default()));
        }
        match self.api {
            LangfuseApi::V2 => self.next_v2(walk, until).await,
            LangfuseApi::Legacy => self.next_legacy(walk, until).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_n_per_minute_then_asks_to_wait() {
        let budget = RequestBudget::new(3);
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(budget.wait_at(start), Duration::ZERO, "request {i}");
            budget.record(start + Duration::from_secs(i));
        }
        let wait = budget.wait_at(start + Duration::from_secs(10));
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(
            budget.wait_at(start + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn legacy_metrics_of_minus_one_are_unknown() {
        assert_eq!(metric(Some(-1.0)), None);
        assert_eq!(metric(None), None);
        assert_eq!(
            metric(Some(0.25)).map(|d| d.to_string()),
            Some("0.25".into())
        );
    }
}
