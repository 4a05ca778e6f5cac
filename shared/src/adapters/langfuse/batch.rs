//! Batch usage reads (v2): the observations of many traces (or of one: a per-trace read is a
//! batch of one) in as few `GET /api/public/v2/observations` requests as possible.
//!
//! The trace ids go in Langfuse's JSON `filter` parameter,
//! `[{"type":"stringOptions","column":"traceId","operator":"any of","value":[..]}]` (it
//! becomes `trace_id IN (..)`; a `filter` takes precedence over the plain query filters).
//! Langfuse enforces no count: the URL length is the cap, so the ids are chunked to keep
//! each URL under [`MAX_URL_BYTES`]. Every page of a chunk is followed (cursor, newest
//! first, `limit` 1000); the observations are grouped by trace and folded by
//! [`usage_from_v2`].

use super::v2::{
    ObservationV2, ObservationsV2Meta, USAGE_FIELDS as FIELDS, V2_PAGE_LIMIT, usage_from_v2,
};
use super::{LangfuseClient, SERVICE};
use crate::domain::usage::TraceUsage;
use crate::error::{Error, FailureReason, Result};
use crate::ports::UsageByTrace;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// The longest request URL sent, in bytes: well under the 8 KiB proxies commonly accept.
pub const MAX_URL_BYTES: usize = 6 * 1024;
/// Room kept in each URL for the `cursor` parameter of later pages.
const CURSOR_RESERVE: usize = 512;
/// A trace with more observations than this is refused (`invalid_usage`).
pub const MAX_OBSERVATIONS_PER_TRACE: usize = 100 * V2_PAGE_LIMIT as usize;
const PATH: &str = "/api/public/v2/observations";

/// The `filter` parameter that selects the observations of `trace_ids`.
pub fn trace_filter(trace_ids: &[String]) -> String {
    serde_json::json!([{
        "type": "stringOptions",
        "column": "traceId",
        "operator": "any of",
        "value": trace_ids,
    }])
    .to_string()
}

/// Splits `trace_ids` into chunks whose request URL (on `base_url`) stays within
/// `max_url_bytes`, cursor included. An id too long to fit alone gets a chunk of its own.
pub fn chunk_ids(base_url: &str, trace_ids: &[String], max_url_bytes: usize) -> Vec<Vec<String>> {
    let fixed = base_url.len()
        + PATH.len()
        + "?fields=&limit=&filter=".len()
        + encoded_len(FIELDS)
        + V2_PAGE_LIMIT.to_string().len()
        + encoded_len(&trace_filter(&[]))
        + CURSOR_RESERVE;
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut length = fixed;
    for id in trace_ids {
        // The id as a JSON string, and the comma before it.
        let cost = encoded_len(&serde_json::Value::from(id.as_str()).to_string()) + 3;
        if !current.is_empty() && length + cost > max_url_bytes {
            chunks.push(std::mem::take(&mut current));
            length = fixed;
        }
        length += cost;
        current.push(id.clone());
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The length of `s` once form-urlencoded (as `reqwest` encodes a query).
fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"*-._ ".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum()
}

impl LangfuseClient {
    /// The usage of `trace_ids`, chunk after chunk.
    pub(super) async fn usage_v2_batch(&self, trace_ids: &[String]) -> Result<UsageByTrace> {
        let mut out = UsageByTrace::new();
        for chunk in chunk_ids(&self.conn.base_url, trace_ids, MAX_URL_BYTES) {
            let observations = self.observations_of(&chunk).await?;
            out.extend(fold(&chunk, observations));
        }
        Ok(out)
    }

    /// Every observation of the chunk's traces, all pages followed.
    async fn observations_of(&self, chunk: &[String]) -> Result<Rows> {
        let filter = trace_filter(chunk);
        let max_pages = chunk.len() * MAX_OBSERVATIONS_PER_TRACE / V2_PAGE_LIMIT as usize + 1;
        let mut rows = Rows::default();
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages {
            let mut query = vec![
                ("fields", FIELDS.to_string()),
                ("limit", V2_PAGE_LIMIT.to_string()),
                ("filter", filter.clone()),
            ];
            if let Some(c) = cursor.take() {
                query.push(("cursor", c));
            }
            let page: RawPage = self
                .get_json(PATH, &query)
                .await
                .map_err(|e| about_chunk(chunk, e))?
                .ok_or_else(|| {
                    Error::transient(
                        SERVICE,
                        "GET /api/public/v2/observations answered 404: check LANGFUSE_BASE_URL and LANGFUSE_API",
                    )
                })?;
            rows.add(page.data).map_err(|e| about_chunk(chunk, e))?;
            match page.meta.cursor.filter(|c| !c.is_empty()) {
                Some(next) => cursor = Some(next),
                None => return Ok(rows),
            }
        }
        let detail = format!(
            "observations of {} traces: more than {max_pages} pages",
            chunk.len()
        );
        Err(match chunk {
            // One trace alone past the cap: it is too big to bill.
            [trace_id] => Error::permanent(
                FailureReason::InvalidUsage,
                format!("trace {trace_id}: {detail}"),
            ),
            _ => Error::transient(SERVICE, detail),
        })
    }
}

/// A page as sent: each row is read on its own, so one malformed observation condemns its
/// trace, not the page.
#[derive(Deserialize)]
struct RawPage {
    data: Vec<Value>,
    #[serde(default)]
    meta: ObservationsV2Meta,
}

/// The observations read so far, and the traces with one that does not match the schema.
#[derive(Default)]
struct Rows {
    observations: Vec<ObservationV2>,
    invalid: HashMap<String, String>,
}

impl Rows {
    fn add(&mut self, data: Vec<Value>) -> Result<()> {
        for row in data {
            let trace_id = row.get("traceId").and_then(Value::as_str).map(String::from);
            match (serde_json::from_value::<ObservationV2>(row), trace_id) {
                (Ok(obs), _) => self.observations.push(obs),
                (Err(e), Some(trace_id)) => {
                    let detail = format!(
                        "trace {trace_id}: an observation does not match Langfuse's schema: {e}"
                    );
                    self.invalid.entry(trace_id).or_insert(detail);
                }
                (Err(e), None) => {
                    return Err(Error::permanent(
                        FailureReason::InvalidUsage,
                        format!(
                            "{PATH}: an observation without traceId does not match Langfuse's schema: {e}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A permanent error names the chunk's first trace and its size.
fn about_chunk(chunk: &[String], error: Error) -> Error {
    match error {
        Error::Permanent { reason, detail } => Error::Permanent {
            reason,
            detail: format!(
                "observations of {} traces ({}..): {detail}",
                chunk.len(),
                chunk.first().map(String::as_str).unwrap_or_default()
            ),
        },
        other => other,
    }
}

/// Groups the observations by trace (only the traces asked for) and folds each one.
fn fold(chunk: &[String], rows: Rows) -> UsageByTrace {
    let Rows {
        observations,
        invalid,
    } = rows;
    let mut by_trace: HashMap<&str, Vec<ObservationV2>> = HashMap::new();
    for id in chunk {
        by_trace.insert(id.as_str(), Vec::new());
    }
    for obs in observations {
        let Some(trace) = obs.trace_id.as_deref() else {
            continue;
        };
        if let Some(list) = by_trace.get_mut(trace) {
            list.push(obs);
        }
    }
    let mut out: UsageByTrace = by_trace
        .into_iter()
        .filter_map(|(id, list)| fold_one(id, &list).map(|usage| (id.to_string(), usage)))
        .collect();
    for (trace_id, detail) in invalid {
        if chunk.contains(&trace_id) {
            let e = Error::permanent(FailureReason::InvalidUsage, detail);
            out.insert(trace_id, Err(e));
        }
    }
    out
}

/// One trace's usage; `None` when Langfuse has no observation of it.
fn fold_one(trace_id: &str, observations: &[ObservationV2]) -> Option<Result<TraceUsage>> {
    if observations.len() > MAX_OBSERVATIONS_PER_TRACE {
        return Some(Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!("trace {trace_id}: more than {MAX_OBSERVATIONS_PER_TRACE} observations"),
        )));
    }
    usage_from_v2(trace_id, observations).transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    /// The URL reqwest would send for the first page of a chunk, cursor reserve included.
    fn url_len(base: &str, chunk: &[String]) -> usize {
        let url = reqwest::Url::parse_with_params(
            &format!("{base}{PATH}"),
            &[
                ("fields", FIELDS.to_string()),
                ("limit", V2_PAGE_LIMIT.to_string()),
                ("filter", trace_filter(chunk)),
            ],
        )
        .unwrap();
        url.as_str().len() + CURSOR_RESERVE
    }

    #[test]
    fn chunks_keep_every_url_within_the_limit_and_every_id_once() {
        let base = "https://cloud.langfuse.com";
        for (n, len) in [(100, 32), (1000, 36), (10, 1), (250, 100)] {
            let all = ids(n, len);
            let chunks = chunk_ids(base, &all, MAX_URL_BYTES);
            assert_eq!(chunks.concat(), all, "every id once, in order");
            for c in &chunks {
                assert!(
                    url_len(base, c) <= MAX_URL_BYTES,
                    "{n} ids of {len}: {}",
                    url_len(base, c)
                );
            }
            // Greedy: a chunk could not have taken the next id.
            for pair in chunks.windows(2) {
                let mut bigger = pair[0].clone();
                bigger.push(pair[1][0].clone());
                assert!(url_len(base, &bigger) > MAX_URL_BYTES);
            }
        }
        // 100 uuid-like ids fit in 2 URLs.
        assert!(chunk_ids(base, &ids(100, 36), MAX_URL_BYTES).len() <= 2);
    }

    #[test]
    fn ids_that_need_escaping_are_measured_as_sent() {
        let base = "http://127.0.0.1:4000";
        let odd: Vec<String> = (0..300).map(|i| format!("é \"q\"/{i}&x=ü")).collect();
        for c in chunk_ids(base, &odd, 2048) {
            assert!(url_len(base, &c) <= 2048);
        }
        let huge = vec!["x".repeat(5000), "y".into()];
        assert_eq!(
            chunk_ids(base, &huge, 2048).len(),
            2,
            "an oversized id alone"
        );
    }

    #[test]
    fn observations_are_grouped_by_trace_and_unknown_traces_are_absent() {
        let data = serde_json::json!([
            {"id": "a1", "traceId": "a", "startTime": "2026-11-23T10:00:01Z", "totalCost": 0.001},
            {"id": "b1", "traceId": "b", "startTime": "2026-11-23T10:00:00Z", "totalCost": -1.0},
            {"id": "a0", "traceId": "a", "startTime": "2026-11-23T10:00:00Z", "totalCost": 0.002},
            {"id": "x", "traceId": "other", "startTime": "2026-11-23T10:00:00Z"},
            {"id": "y", "startTime": "2026-11-23T10:00:00Z"},
            {"id": "d1", "traceId": "d", "totalCost": 0.001},
        ]);
        let mut rows = Rows::default();
        rows.add(serde_json::from_value(data).unwrap()).unwrap();
        let chunk: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let out = fold(&chunk, rows);
        assert_eq!(out.len(), 3, "c is absent, other was not asked for");
        let d = out["d"].as_ref().unwrap_err();
        assert!(
            !d.is_transient() && d.to_string().contains("startTime"),
            "{d}"
        );
        let mut rows = Rows::default();
        let nameless = serde_json::json!([{"id": "z", "startTime": 5}]);
        assert!(rows.add(serde_json::from_value(nameless).unwrap()).is_err());
        let a = out["a"].as_ref().unwrap();
        assert_eq!(a.observation_count, 2);
        assert_eq!(a.ai_cost_usd.to_string(), "0.003");
        assert!(
            !out["b"].as_ref().unwrap_err().is_transient(),
            "b alone is invalid"
        );
    }
}
