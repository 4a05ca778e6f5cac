//! Langfuse client for both API generations, behind [`UsageSource`].
//!
//! - `v2`: `GET /api/public/v2/observations?traceId=..&fields=core,basic,usage,metadata`
//!   (cursor pagination, up to 1000 per page). Langfuse Cloud and v4.
//! - `legacy`: `GET /api/public/traces/{id}` (self-hosted v3). `latency` is in seconds,
//!   `totalCost` in USD; without the `metrics` field group both are -1.

use super::http;
use crate::config::{LangfuseApi, LangfuseConfig, Secret};
use crate::domain::usage::{TraceUsage, decimal_from_f64};
use crate::error::{Error, FailureReason, Result};
use crate::ports::UsageSource;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

const SERVICE: &str = "langfuse";
/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Page size for v2 reads (the API maximum).
pub const V2_PAGE_LIMIT: u32 = 1000;
/// At most this many pages are read for one trace.
const MAX_PAGES_PER_TRACE: usize = 100;

/// The Langfuse client.
#[derive(Clone)]
pub struct LangfuseClient {
    http: reqwest::Client,
    base_url: String,
    public_key: String,
    secret_key: Secret,
    api: LangfuseApi,
}

impl std::fmt::Debug for LangfuseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LangfuseClient")
            .field("base_url", &self.base_url)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// A v2 observation, with the field groups tracemeter asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationV2 {
    /// Observation id.
    pub id: String,
    /// Trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Start time.
    pub start_time: DateTime<Utc>,
    /// End time.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// User id (basic group).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Metadata (metadata group).
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Total cost in USD (usage group).
    #[serde(default)]
    pub total_cost: Option<f64>,
    /// Cost per usage type in USD (usage group).
    #[serde(default)]
    pub cost_details: Option<BTreeMap<String, Option<f64>>>,
}

/// A page of v2 observations.
#[derive(Debug, Clone, Deserialize)]
pub struct ObservationsV2Page {
    /// The observations.
    pub data: Vec<ObservationV2>,
    /// Pagination.
    pub meta: ObservationsV2Meta,
}

/// v2 pagination metadata.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ObservationsV2Meta {
    /// Cursor of the next page; absent on the last page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A legacy trace with its observations (`TraceWithFullDetails`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyTrace {
    /// Trace id.
    pub id: String,
    /// Trace timestamp.
    pub timestamp: DateTime<Utc>,
    /// User id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Latency in seconds; -1 when the metrics group was not requested.
    #[serde(default)]
    pub latency: Option<f64>,
    /// Total cost in USD; -1 when the metrics group was not requested.
    #[serde(default)]
    pub total_cost: Option<f64>,
    /// Observations.
    #[serde(default)]
    pub observations: Vec<LegacyObservation>,
}

/// A legacy observation (`ObservationsView`), the fields tracemeter reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyObservation {
    /// Observation id.
    pub id: String,
    /// Start time.
    pub start_time: DateTime<Utc>,
    /// End time.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// Calculated total cost in USD.
    #[serde(default)]
    pub calculated_total_cost: Option<f64>,
    /// Cost per usage type.
    #[serde(default)]
    pub cost_details: Option<BTreeMap<String, Option<f64>>>,
}

fn object(value: Option<Value>) -> BTreeMap<String, Value> {
    match value {
        Some(Value::Object(map)) => map.into_iter().collect(),
        // Metadata can arrive as a JSON string (v2 truncates long values).
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        },
        _ => BTreeMap::new(),
    }
}

fn amount(trace_id: &str, what: &str, value: f64) -> Result<Decimal> {
    decimal_from_f64(value).ok_or_else(|| {
        Error::permanent(
            FailureReason::InvalidUsage,
            format!("trace {trace_id}: {what} {value} is not a number"),
        )
    })
}

/// One observation's cost: a number, never negative (a negative cost would silently lower
/// the trace's total).
fn cost(trace_id: &str, value: f64) -> Result<Decimal> {
    let usd = amount(trace_id, "cost", value)?;
    if usd < Decimal::ZERO {
        return Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!("trace {trace_id}: an observation has a negative cost of {value} USD"),
        ));
    }
    Ok(usd)
}

/// An observation's cost: `totalCost`, else `costDetails.total`, else the sum of the
/// details; a `null` or missing cost is zero (Langfuse could not price the model).
fn cost_of(
    trace_id: &str,
    total: Option<f64>,
    details: &Option<BTreeMap<String, Option<f64>>>,
) -> Result<Decimal> {
    if let Some(total) = total {
        return cost(trace_id, total);
    }
    let Some(details) = details else {
        return Ok(Decimal::ZERO);
    };
    if let Some(Some(total)) = details.get("total") {
        return cost(trace_id, *total);
    }
    let mut sum = Decimal::ZERO;
    for v in details.values().flatten() {
        sum += cost(trace_id, *v)?;
    }
    Ok(sum)
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
    let ms = (to - from).num_milliseconds().max(0);
    Decimal::new(ms, 3)
}

/// Folds v2 observations of one trace into its usage. `None` when there are none.
pub fn usage_from_v2(trace_id: &str, observations: &[ObservationV2]) -> Result<Option<TraceUsage>> {
    let Some(first) = observations.iter().map(|o| o.start_time).min() else {
        return Ok(None);
    };
    let mut end = first;
    let mut last_start = first;
    let mut cost = Decimal::ZERO;
    let mut metadata = BTreeMap::new();
    let mut user_id = None;
    // Newest first, so the oldest (root) observation's metadata and user win.
    let mut ordered: Vec<&ObservationV2> = observations.iter().collect();
    ordered.sort_by(|a, b| {
        b.start_time
            .cmp(&a.start_time)
            .then_with(|| b.id.cmp(&a.id))
    });
    for obs in ordered {
        end = end.max(obs.end_time.unwrap_or(obs.start_time));
        last_start = last_start.max(obs.start_time);
        cost += cost_of(trace_id, obs.total_cost, &obs.cost_details)?;
        for (k, v) in object(obs.metadata.clone()) {
            metadata.insert(k, v);
        }
        if let Some(u) = obs.user_id.as_ref().filter(|u| !u.is_empty()) {
            user_id = Some(u.clone());
        }
    }
    Ok(Some(TraceUsage {
        trace_id: trace_id.to_string(),
        timestamp: first,
        latency_seconds: seconds_between(first, end),
        ai_cost_usd: cost,
        user_id,
        metadata,
        observation_count: u32::try_from(observations.len()).unwrap_or(u32::MAX),
        last_observation_at: Some(last_start),
    }))
}

/// Turns a legacy trace into usage.
pub fn usage_from_legacy(trace: LegacyTrace) -> Result<TraceUsage> {
    let id = trace.id.clone();
    let ai_cost_usd = match trace.total_cost {
        Some(c) if c >= 0.0 => amount(&id, "totalCost", c)?,
        _ => {
            let mut sum = Decimal::ZERO;
            for o in &trace.observations {
                sum += cost_of(&id, o.calculated_total_cost, &o.cost_details)?;
            }
            sum
        }
    };
    let latency_seconds = match trace.latency {
        Some(l) if l >= 0.0 => amount(&id, "latency", l)?,
        _ => {
            let start = trace.observations.iter().map(|o| o.start_time).min();
            let end = trace
                .observations
                .iter()
                .map(|o| o.end_time.unwrap_or(o.start_time))
                .max();
            match (start, end) {
                (Some(s), Some(e)) => seconds_between(s, e),
                _ => Decimal::ZERO,
            }
        }
    };
    Ok(TraceUsage {
        last_observation_at: trace.observations.iter().map(|o| o.start_time).max(),
        observation_count: u32::try_from(trace.observations.len()).unwrap_or(u32::MAX),
        trace_id: id,
        timestamp: trace.timestamp,
        latency_seconds,
        ai_cost_usd,
        user_id: trace.user_id.filter(|u| !u.is_empty()),
        metadata: object(trace.metadata),
    })
}

impl LangfuseClient {
    /// Builds the client from configuration.
    pub fn new(cfg: &LangfuseConfig) -> Result<LangfuseClient> {
        Ok(LangfuseClient {
            http: http::client(cfg.timeout)?,
            base_url: cfg.base_url.clone(),
            public_key: cfg.public_key.clone(),
            secret_key: cfg.secret_key.clone(),
            api: cfg.api,
        })
    }

    /// GETs JSON; `Ok(None)` on 404.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<T>> {
        let response = self
            .http
            .get(format!("{}{}", self.base_url, path))
            .basic_auth(&self.public_key, Some(self.secret_key.expose()))
            .query(query)
            .send()
            .await
            .map_err(|e| http::transport(SERVICE, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.status_error(path, response).await);
        }
        let body = http::read_limited(SERVICE, response, MAX_RESPONSE_BYTES).await?;
        parse(path, &body).map(Some)
    }

    async fn status_error(&self, path: &str, response: reqwest::Response) -> Error {
        let status = response.status();
        let retry_after = http::retry_after(response.headers(), Utc::now().timestamp());
        let body = http::read_limited(SERVICE, response, 64 * 1024)
            .await
            .unwrap_or_default();
        let hint = match status.as_u16() {
            401 | 403 => " (check LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY)",
            429 => " (rate limited)",
            _ => "",
        };
        Error::Transient {
            service: SERVICE,
            detail: format!("{path} answered {status}{hint}: {}", http::excerpt(&body)),
            retry_after,
        }
    }

    async fn usage_v2(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        let mut observations = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES_PER_TRACE {
            let mut query = vec![
                ("traceId", trace_id.to_string()),
                ("fields", "core,basic,usage,metadata".to_string()),
                ("limit", V2_PAGE_LIMIT.to_string()),
            ];
            if let Some(c) = cursor.take() {
                query.push(("cursor", c));
            }
            let page: ObservationsV2Page = self
                .get_json("/api/public/v2/observations", &query)
                .await
                .map_err(|e| about(trace_id, e))?
                .ok_or_else(|| {
                    Error::transient(
                        SERVICE,
                        "GET /api/public/v2/observations answered 404: check LANGFUSE_BASE_URL and LANGFUSE_API",
                    )
                })?;
            observations.extend(page.data);
            match page.meta.cursor.filter(|c| !c.is_empty()) {
                Some(next) => cursor = Some(next),
                None => return usage_from_v2(trace_id, &observations),
            }
        }
        Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!(
                "trace {trace_id}: more than {} observations",
                MAX_PAGES_PER_TRACE * V2_PAGE_LIMIT as usize
            ),
        ))
    }

    async fn usage_legacy(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        let path = format!("/api/public/traces/{}", encode_path(trace_id));
        let fields = [("fields", "core,io,observations,metrics".to_string())];
        let trace: Option<LegacyTrace> = self
            .get_json(&path, &fields)
            .await
            .map_err(|e| about(trace_id, e))?;
        trace.map(usage_from_legacy).transpose()
    }
}

/// Parses an answer: malformed JSON is transient, well-formed JSON that breaks the schema
/// is permanent.
pub fn parse<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            // Well-formed JSON that breaks the schema (a missing or mistyped field): the
            // stored data is wrong, and asking again returns the same answer.
            Error::permanent(
                FailureReason::InvalidUsage,
                format!("GET {path}: the answer does not match Langfuse's schema: {e}"),
            )
        } else {
            // Cut short or not JSON at all: a transport or proxy problem, worth a retry.
            Error::transient(
                SERVICE,
                format!("GET {path}: response is not the expected JSON: {e}"),
            )
        }
    })
}

/// Names the trace in a permanent error's detail (what the ledger records).
fn about(trace_id: &str, error: Error) -> Error {
    match error {
        Error::Permanent { reason, detail } => Error::Permanent {
            reason,
            detail: format!("trace {trace_id}: {detail}"),
        },
        other => other,
    }
}

/// Percent-encodes a path segment.
pub fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl UsageSource for LangfuseClient {
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        match self.api {
            LangfuseApi::V2 => self.usage_v2(trace_id).await,
            LangfuseApi::Legacy => self.usage_legacy(trace_id).await,
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
        let response = self
            .http
            .post(format!("{}{}", self.base_url, path))
            .basic_auth(&self.public_key, Some(self.secret_key.expose()))
            .json(&body)
            .send()
            .await
            .map_err(|e| http::transport(SERVICE, e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(path, response).await)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn broken_json_is_transient_and_a_broken_schema_permanent() {
        let path = "/api/public/v2/observations";
        let full = br#"{"data":[{"id":"o1","startTime":"2026-11-23T10:00:00Z"}],"meta":{}}"#;
        assert!(parse::<ObservationsV2Page>(path, full).is_ok());
        let truncated = &full[..full.len() / 2];
        let e = parse::<ObservationsV2Page>(path, truncated).unwrap_err();
        assert!(e.is_transient(), "{e}");
        let html = b"<html>502 Bad Gateway</html>";
        assert!(
            parse::<ObservationsV2Page>(path, html)
                .unwrap_err()
                .is_transient()
        );
        let missing = br#"{"data":[{"id":"o1"}],"meta":{}}"#;
        let e = about(
            "t-1",
            parse::<ObservationsV2Page>(path, missing).unwrap_err(),
        );
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(text.contains("t-1") && text.contains("startTime"), "{text}");
        let mistyped = br#"{"data":[{"id":"o1","startTime":"x","totalCost":"free"}],"meta":{}}"#;
        assert!(
            !parse::<ObservationsV2Page>(path, mistyped)
                .unwrap_err()
                .is_transient()
        );
    }

    #[test]
    fn a_negative_observation_cost_is_invalid_even_when_the_total_is_positive() {
        let page: ObservationsV2Page = serde_json::from_value(serde_json::json!({
            "data": [
                {"id": "a", "startTime": "2026-11-23T10:00:00Z", "totalCost": 5.0},
                {"id": "b", "startTime": "2026-11-23T10:00:01Z", "totalCost": -1.0},
            ],
            "meta": {}
        }))
        .expect("page");
        let e = usage_from_v2("t-neg", &page.data).unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("negative cost"), "{e}");
        // null costs are zero: Langfuse could not price the model.
        let page: ObservationsV2Page = serde_json::from_value(serde_json::json!({
            "data": [{"id": "a", "startTime": "2026-11-23T10:00:00Z", "totalCost": null,
                      "costDetails": null}],
            "meta": {}
        }))
        .expect("page");
        let usage = usage_from_v2("t-null", &page.data).unwrap().unwrap();
        assert_eq!(usage.ai_cost_usd, Decimal::ZERO);
    }

    #[test]
    fn v2_observations_fold_into_usage() {
        let page: ObservationsV2Page = serde_json::from_value(serde_json::json!({
            "data": [
                {"id": "o2", "traceId": "t", "startTime": "2026-11-01T10:00:30Z", "endTime": "2026-11-01T10:01:30.500Z",
                 "type": "GENERATION", "totalCost": 0.0003, "userId": "u1",
                 "metadata": {"stripeCustomerId": "cus_late"}},
                {"id": "o1", "traceId": "t", "startTime": "2026-11-01T10:00:00Z", "endTime": "2026-11-01T10:00:10Z",
                 "type": "SPAN", "totalCost": null, "costDetails": {"input": 0.0001, "output": 0.0002},
                 "metadata": "{\"stripeCustomerId\":\"cus_root\"}"}
            ],
            "meta": {}
        }))
        .expect("parse");
        let usage = usage_from_v2("t", &page.data).expect("ok").expect("some");
        assert_eq!(usage.ai_cost_usd, Decimal::from_str("0.0006").expect("dec"));
        assert_eq!(
            usage.latency_seconds,
            Decimal::from_str("90.5").expect("dec")
        );
        assert_eq!(usage.user_id.as_deref(), Some("u1"));
        assert_eq!(usage.observation_count, 2);
        assert!(usage.metadata.contains_key("stripeCustomerId"));
        assert!(usage_from_v2("t", &[]).expect("ok").is_none());
    }

    #[test]
    fn legacy_minus_one_metrics_fall_back_to_observations() {
        let trace: LegacyTrace = serde_json::from_value(serde_json::json!({
            "id": "t", "timestamp": "2026-11-01T10:00:00Z", "latency": -1, "totalCost": -1,
            "userId": "", "metadata": {"customerId": "cus_1"},
            "observations": [
                {"id": "o1", "startTime": "2026-11-01T10:00:00Z", "endTime": "2026-11-01T10:00:45Z", "calculatedTotalCost": 0.25}
            ]
        }))
        .expect("parse");
        let usage = usage_from_legacy(trace).expect("ok");
        assert_eq!(usage.ai_cost_usd, Decimal::from_str("0.25").expect("dec"));
        assert_eq!(usage.latency_seconds, Decimal::from_str("45").expect("dec"));
        assert_eq!(usage.user_id, None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path("abc-1_2.3"), "abc-1_2.3");
    }
}
