//! The v2 API (Langfuse Cloud and v4): `GET /api/public/v2/observations`, cursor paginated.
//!
//! - One trace's usage: `?traceId=..&fields=core,basic,time,usage,metadata,model` (up to 1000 per page),
//!   folded by [`usage_from_v2`].
//! - Ingest's listing: `?fields=core,time&limit=1000&fromStartTime=..&toStartTime=..` walked with
//!   Langfuse's own cursor (newest first). Only the `core` and `time` field groups are asked
//!   for: the trace id, the start time and the last update are all ingest needs (a trace's
//!   newest change, [`changed_at`], is what the ledger's coverage is compared with). After each page the checkpoint position is the
//!   oldest start time on it (+1 ms, so a resume re-reads that millisecond rather than
//!   skipping it).

use super::parse::{cost_of, object, seconds_between};
use super::scan::{Fetched, iso, millisecond};
use super::{LangfuseClient, LangfuseScanner};
use crate::domain::ingest::ListedUsage;
use crate::domain::scan::{ListedTrace, PageOutcome, ScanPage, Walk};
use crate::domain::usage::{ModelTokens, TraceUsage};
use crate::error::Result;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tracing::warn;

/// Page size for v2 reads (the API maximum).
pub const V2_PAGE_LIMIT: u32 = 1000;
/// v2 listing page size (the API maximum).
pub const V2_SCAN_LIMIT: u32 = 1000;
/// The field groups of a usage read: `time` for `updatedAt`, `model` for the model name the
/// price book's token prices match.
pub(super) const USAGE_FIELDS: &str = "core,basic,time,usage,metadata,model";

/// When an observation last changed as far as billing cares: its start, or its last update
/// when later (a cost added to an existing observation). Ingest's listing and the
/// processor's read both use it, and the ledger stores it as `last_observation_at`.
pub fn changed_at(start: DateTime<Utc>, updated: Option<DateTime<Utc>>) -> DateTime<Utc> {
    updated.map_or(start, |u| u.max(start))
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
    /// Last update (time group): cost added to an existing observation moves it.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
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
    /// Units per usage type, e.g. tokens (usage group).
    #[serde(default)]
    pub usage_details: Option<BTreeMap<String, i64>>,
    /// The model name as provided (model group).
    #[serde(default)]
    pub provided_model_name: Option<String>,
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
    let mut tokens = Vec::new();
    // Newest first, so the oldest (root) observation's metadata and user win.
    let mut ordered: Vec<&ObservationV2> = observations.iter().collect();
    ordered.sort_by(|a, b| {
        b.start_time
            .cmp(&a.start_time)
            .then_with(|| b.id.cmp(&a.id))
    });
    for obs in ordered {
        end = end.max(obs.end_time.unwrap_or(obs.start_time));
        last_start = last_start.max(changed_at(obs.start_time, obs.updated_at));
        let own = cost_of(trace_id, obs.total_cost, &obs.cost_details)?;
        cost += own;
        let details = obs.usage_details.clone().unwrap_or_default();
        tokens.extend(ModelTokens::from_details(
            obs.provided_model_name.as_deref(),
            &details,
            own,
        ));
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
        tokens,
    }))
}

impl LangfuseClient {
    /// One trace's usage: the batch read of that one trace.
    pub(super) async fn usage_v2(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        let ids = [trace_id.to_string()];
        self.usage_v2_batch(&ids)
            .await?
            .remove(trace_id)
            .transpose()
    }
}

/// An observation as ingest lists it (the `core` field group).
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
    /// Time group: the last update.
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

/// A page of ingest's listing.
#[derive(Debug, Deserialize)]
struct V2Page {
    data: Vec<CoreObservation>,
    #[serde(default)]
    meta: ObservationsV2Meta,
}

impl LangfuseScanner {
    /// The next page of the walk, newest first.
    pub(super) async fn next_v2(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome> {
        let mut stats = ScanPage::default();
        let (to, cursor) = v2_upper_bound(walk);
        let mut query = vec![
            ("fields", "core,time".to_string()),
            ("limit", V2_SCAN_LIMIT.to_string()),
            ("fromStartTime", iso(walk.scan.from)),
            ("toStartTime", iso(to)),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let Fetched::Done(page) = self
            .fetch::<V2Page>("/api/public/v2/observations", &query, until, &mut stats)
            .await?
        else {
            return Ok(PageOutcome::OutOfTime { partial: stats });
        };
        stats.rows = page.data.len();
        stats.traces = listed_traces(&page.data, walk.scan.from);
        advance_v2(walk, &page, to);
        Ok(PageOutcome::Page(stats))
    }
}

/// The upper bound and cursor of the next request. The token carries the upper bound its
/// cursor was issued for: `<to ms>|<cursor>`.
fn v2_upper_bound(walk: &Walk) -> (DateTime<Utc>, Option<String>) {
    match walk.token.as_deref().and_then(|t| t.split_once('|')) {
        Some((to, cursor)) => (
            to.parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or(walk.scan.position),
            Some(cursor.to_string()),
        ),
        None => (walk.scan.position, None),
    }
}

/// The page's distinct traces, each with its newest observation on the page.
fn listed_traces(rows: &[CoreObservation], from: DateTime<Utc>) -> Vec<ListedTrace> {
    let mut traces: Vec<ListedTrace> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for obs in rows {
        let Some(trace_id) = obs.trace_id.as_deref().filter(|t| !t.is_empty()) else {
            continue;
        };
        let start_time = changed_at(obs.start_time.unwrap_or_else(|| {
            warn!(
                trace_id,
                observation = obs.id.as_deref().unwrap_or("?"),
                "Langfuse listed an observation without startTime; its trace is enqueued and the processor will judge it"
            );
            from
        }), obs.updated_at);
        match index.get(trace_id) {
            Some(&i) => {
                if let Some(ListedTrace {
                    seen: ListedUsage::V2 { newest_observation },
                    ..
                }) = traces.get_mut(i)
                    && start_time > *newest_observation
                {
                    *newest_observation = start_time;
                }
            }
            None => {
                index.insert(trace_id.to_string(), traces.len());
                traces.push(ListedTrace {
                    trace_id: trace_id.to_string(),
                    seen: ListedUsage::V2 {
                        newest_observation: start_time,
                    },
                });
            }
        }
    }
    traces
}

/// Moves the walk past the page: on to Langfuse's next cursor, or done.
fn advance_v2(walk: &mut Walk, page: &V2Page, to: DateTime<Utc>) {
    match page.meta.cursor.as_deref().filter(|c| !c.is_empty()) {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::str::FromStr;

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
    fn cost_added_to_an_existing_observation_moves_its_newest_change() {
        let page: ObservationsV2Page = serde_json::from_value(serde_json::json!({
            "data": [
                {"id": "a", "traceId": "t", "startTime": "2026-11-23T10:00:00Z",
                 "updatedAt": "2026-11-23T12:00:00.123456Z", "totalCost": 0.002},
                {"id": "b", "traceId": "t", "startTime": "2026-11-23T10:00:05Z",
                 "updatedAt": "2026-11-23T10:00:01Z", "totalCost": 0.001},
            ],
            "meta": {}
        }))
        .unwrap();
        let usage = usage_from_v2("t", &page.data).unwrap().unwrap();
        let updated = page.data[0].updated_at.unwrap();
        assert_eq!(
            usage.last_observation_at,
            Some(updated),
            "the later update wins"
        );
        // Ingest's listing sees the same time for the trace.
        let rows: Vec<CoreObservation> = serde_json::from_value(serde_json::json!([
            {"id": "a", "traceId": "t", "startTime": "2026-11-23T10:00:00Z",
             "updatedAt": "2026-11-23T12:00:00.123456Z"},
            {"id": "b", "traceId": "t", "startTime": "2026-11-23T10:00:05Z"},
        ]))
        .unwrap();
        let listed = listed_traces(&rows, page.data[0].start_time);
        assert_eq!(
            listed[0].seen,
            ListedUsage::V2 {
                newest_observation: updated
            }
        );
        let start = page.data[1].start_time;
        assert_eq!(changed_at(start, None), start);
        assert_eq!(changed_at(start, Some(updated)), updated);
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
}
