//! The legacy API (self-hosted v3): `GET /api/public/traces`.
//!
//! - One trace's usage: `GET /api/public/traces/{id}`. `latency` is in seconds, `totalCost`
//!   in USD; without the `metrics` field group both are -1.
//! - Ingest's listing: `?orderBy=timestamp.asc&fields=core,metrics&page=1&limit=100`, paged
//!   by keyset on time: `fromTimestamp` moves to the last timestamp seen and ids already seen
//!   at that timestamp are dropped. Page numbers are used only inside a closed,
//!   one-millisecond slice of settled time (when more than a page of traces share one
//!   millisecond), which can no longer change. Never offsets over a set that moves.

use super::parse::{about, amount, cost_of, encode_path, object, seconds_between};
use super::scan::{Fetched, iso, millisecond};
use super::{LangfuseClient, LangfuseScanner, budget_spent};
use crate::domain::ingest::ListedUsage;
use crate::domain::scan::{ListedTrace, PageOutcome, ScanPage, Walk};
use crate::domain::usage::{ModelTokens, TraceUsage, decimal_from_f64};
use crate::error::Result;
use crate::ports::{UsageByTrace, read_each};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// Legacy listing page size (the API maximum).
pub const LEGACY_SCAN_LIMIT: u32 = 100;

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
    /// Units per usage type, e.g. tokens.
    #[serde(default)]
    pub usage_details: Option<BTreeMap<String, i64>>,
    /// The model name as provided.
    #[serde(default)]
    pub model: Option<String>,
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
    let mut tokens = Vec::new();
    for o in &trace.observations {
        let own = cost_of(&id, o.calculated_total_cost, &o.cost_details)?;
        let details = o.usage_details.clone().unwrap_or_default();
        tokens.extend(ModelTokens::from_details(o.model.as_deref(), &details, own));
    }
    Ok(TraceUsage {
        tokens,
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
    /// One trace's usage, with its observations and metrics.
    pub(super) async fn usage_legacy(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        self.conn.admit().await.map_err(|e| about(trace_id, e))?;
        self.usage_legacy_granted(trace_id).await
    }

    /// One trace's read whose budget was taken.
    async fn usage_legacy_granted(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        let path = format!("/api/public/traces/{}", encode_path(trace_id));
        let fields = [("fields", "core,io,observations,metrics".to_string())];
        let trace: Option<LegacyTrace> = self
            .get_json_granted(&path, &fields)
            .await
            .map_err(|e| about(trace_id, e))?;
        trace.map(usage_from_legacy).transpose()
    }

    /// Several traces, a request each (the legacy API has no batch read), their budget taken
    /// together: one conditional add for all the budget covers, not a read and a write per
    /// request. The traces it does not cover now answer the budget's wait; when it covers
    /// none, that is the answer for all (a short wait the caller may sit out).
    pub(super) async fn usage_legacy_batch(&self, trace_ids: &[String]) -> Result<UsageByTrace> {
        let now = Utc::now();
        let want = u32::try_from(trace_ids.len()).unwrap_or(u32::MAX);
        let taken = self.conn.quota.take_up_to(now, want).await?;
        let (granted, wait) = (taken.granted as usize, taken.wait);
        if granted == 0 && !trace_ids.is_empty() {
            return Err(budget_spent(wait));
        }
        let (covered, uncovered) = trace_ids.split_at(granted.min(trace_ids.len()));
        let mut out = read_each(
            covered,
            |id| async move { self.usage_legacy_granted(&id).await },
        )
        .await;
        for id in uncovered {
            out.insert(id.clone(), Err(about(id, budget_spent(wait))));
        }
        Ok(out)
    }
}

/// A trace as ingest lists it (`core,metrics`).
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

/// A listed metric; -1 (the metrics group was not computed) is unknown.
fn metric(value: Option<f64>) -> Option<Decimal> {
    value.filter(|v| *v >= 0.0).and_then(decimal_from_f64)
}

impl LangfuseScanner {
    /// The next page of the walk, oldest first.
    pub(super) async fn next_legacy(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome> {
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
        let Fetched::Done(page) = self
            .fetch::<LegacyPage>("/api/public/traces", &query, until, &mut stats)
            .await?
        else {
            return Ok(PageOutcome::OutOfTime { partial: stats });
        };
        stats.rows = page.data.len();
        let full = page.data.len() >= LEGACY_SCAN_LIMIT as usize;
        stats.traces = listed_traces(walk, &page.data);
        if in_slice {
            advance_in_slice(walk, full, to);
        } else {
            advance_by_keyset(walk, &page.data, full);
        }
        Ok(PageOutcome::Page(stats))
    }
}

/// The page's traces, but for those already seen at the position.
fn listed_traces(walk: &Walk, rows: &[ListedLegacyTrace]) -> Vec<ListedTrace> {
    let position = walk.scan.position;
    rows.iter()
        .filter(|t| !(t.timestamp == position && walk.ids_at_position.contains(&t.id)))
        .map(|t| ListedTrace {
            trace_id: t.id.clone(),
            seen: ListedUsage::Legacy {
                cost_usd: metric(t.total_cost),
                latency_seconds: metric(t.latency),
            },
        })
        .collect()
}

/// Inside a one-millisecond slice (ending at `to`): the next page number, or past the slice.
fn advance_in_slice(walk: &mut Walk, full: bool, to: DateTime<Utc>) {
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
}

/// Outside a slice: done after a short page; else on to the last timestamp seen, or into a
/// slice when the whole page shares the position's millisecond.
fn advance_by_keyset(walk: &mut Walk, rows: &[ListedLegacyTrace], full: bool) {
    let position = walk.scan.position;
    if !full {
        walk.scan.position = walk.scan.to;
        walk.ids_at_position.clear();
        walk.done = true;
        return;
    }
    let Some(last) = rows.last().map(|t| t.timestamp) else {
        walk.done = true;
        return;
    };
    if last <= position {
        // A whole page within one millisecond: page through that closed slice.
        walk.slice_page = 1;
        for t in rows {
            if !walk.ids_at_position.contains(&t.id) {
                walk.ids_at_position.push(t.id.clone());
            }
        }
    } else {
        walk.scan.position = last;
        walk.ids_at_position = rows
            .iter()
            .filter(|t| t.timestamp == last)
            .map(|t| t.id.clone())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

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
    fn legacy_metrics_of_minus_one_are_unknown() {
        assert_eq!(metric(Some(-1.0)), None);
        assert_eq!(metric(None), None);
        assert_eq!(
            metric(Some(0.25)).map(|d| d.to_string()),
            Some("0.25".into())
        );
    }
}
