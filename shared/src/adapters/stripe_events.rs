//! Stripe, asynchronous meter event errors: the thin events
//! `v1.billing.meter.error_report_triggered` and `v1.billing.meter.no_meter_found`, read from
//! the v2 events API: `GET /v2/core/events` (filters `types` and `created`, encoded as the
//! official SDKs encode a GET's arrays and objects: `types[0]=..&types[1]=..&created[gte]=..`;
//! paged through `next_page_url`), and `GET /v2/core/events/{id}` for an event listed
//! without its `data` (Stripe documents `data` as a field included when the event is
//! fetched). A sample's `request.identifier` is, in Stripe's words, the request's idempotency
//! key: tracemeter sends the meter event identifier as both (v1), and the stream has only the
//! identifier, so either way it names the trace revision.

use super::credential::Credential;
use super::http;
use super::stripe::{API_VERSION, Failure};
use crate::config::{StripeConfig, StripeKey};
use crate::domain::meter_errors::{
    ERROR_REPORT_TRIGGERED, MeterErrorReport, MeterErrorSample, NO_METER_FOUND,
};
use crate::error::{Error, Result};
use crate::ports::MeterErrorReports;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

const SERVICE: &str = "stripe";
/// Events per page.
const PAGE_SIZE: &str = "20";
/// Pages read before giving up (20 events each: 10,000 error reports).
const MAX_PAGES: usize = 500;

/// Reads Stripe's meter error reports.
#[derive(Clone)]
pub struct StripeEvents {
    http: reqwest::Client,
    api_base: String,
    key: Credential<StripeKey>,
}

impl std::fmt::Debug for StripeEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeEvents")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct EventList {
    data: Vec<ThinEvent>,
    #[serde(default)]
    next_page_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ThinEvent {
    id: String,
    r#type: String,
    created: DateTime<Utc>,
    #[serde(default)]
    data: Option<ReportData>,
}

#[derive(Debug, Deserialize)]
struct ReportData {
    #[serde(default)]
    reason: Option<Reason>,
    #[serde(default)]
    validation_start: Option<DateTime<Utc>>,
    #[serde(default)]
    validation_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Reason {
    #[serde(default)]
    error_count: u64,
    #[serde(default)]
    error_types: Vec<ErrorType>,
}

#[derive(Debug, Deserialize)]
struct ErrorType {
    code: String,
    #[serde(default)]
    sample_errors: Vec<SampleError>,
}

#[derive(Debug, Deserialize)]
struct SampleError {
    #[serde(default)]
    error_message: String,
    #[serde(default)]
    request: Option<SampleRequest>,
}

#[derive(Debug, Deserialize)]
struct SampleRequest {
    #[serde(default)]
    identifier: Option<String>,
}

impl StripeEvents {
    /// With the Stripe variables (`STRIPE_API_BASE`) and the Stripe key.
    pub fn new(cfg: &StripeConfig, key: Credential<StripeKey>) -> Result<StripeEvents> {
        Ok(StripeEvents {
            http: http::client(cfg.timeout)?,
            api_base: cfg.api_base.clone(),
            key,
        })
    }

    /// One GET on Stripe's API host, parsed.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let request = self
            .http
            .get(format!("{}{path_and_query}", self.api_base))
            .header("Stripe-Version", API_VERSION)
            .query(query);
        let response = self.key.send(SERVICE, request).await?;
        if !response.status().is_success() {
            return Err(Failure::read(response).await.error("meter error events"));
        }
        let body = http::read_limited(SERVICE, response, 4 * 1024 * 1024).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::transient(SERVICE, format!("meter error events: {e}")))
    }

    /// The path of a `next_page_url` on the API host; another host is refused (the secret key
    /// goes only to the configured one).
    fn next_path(&self, next: &str) -> Result<String> {
        let path = next.strip_prefix(self.api_base.as_str()).unwrap_or(next);
        if path.starts_with("/v2/core/events") {
            Ok(path.to_string())
        } else {
            Err(Error::transient(
                SERVICE,
                format!("unexpected next_page_url {next:?}"),
            ))
        }
    }
}

#[async_trait]
impl MeterErrorReports for StripeEvents {
    async fn error_reports(&self, since: DateTime<Utc>) -> Result<Vec<MeterErrorReport>> {
        // Brackets with indexes, as the SDKs send them: repeated `types=` keys are not the
        // same request.
        let first = vec![
            ("types[0]", ERROR_REPORT_TRIGGERED.to_string()),
            ("types[1]", NO_METER_FOUND.to_string()),
            (
                "created[gte]",
                since.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            ("limit", PAGE_SIZE.to_string()),
        ];
        let mut out = Vec::new();
        let mut page: EventList = self.get("/v2/core/events", &first).await?;
        for _ in 0..MAX_PAGES {
            for event in page.data {
                if event.r#type != ERROR_REPORT_TRIGGERED && event.r#type != NO_METER_FOUND {
                    continue;
                }
                let event = match event.data {
                    Some(_) => event,
                    None => {
                        self.get(&format!("/v2/core/events/{}", event.id), &[])
                            .await?
                    }
                };
                out.push(report(event));
            }
            let Some(next) = page.next_page_url.filter(|u| !u.is_empty()) else {
                out.sort_by(|a, b| (a.created, &a.event_id).cmp(&(b.created, &b.event_id)));
                return Ok(out);
            };
            page = self.get(&self.next_path(&next)?, &[]).await?;
        }
        Err(Error::transient(
            SERVICE,
            format!("more than {MAX_PAGES} pages of meter error events: use a later --since"),
        ))
    }
}

/// The report a thin event carries.
fn report(event: ThinEvent) -> MeterErrorReport {
    let data = event.data;
    let (start, end) = data
        .as_ref()
        .map_or((None, None), |d| (d.validation_start, d.validation_end));
    let reason = data.and_then(|d| d.reason);
    let error_count = reason.as_ref().map_or(0, |r| r.error_count);
    let samples = reason
        .into_iter()
        .flat_map(|r| r.error_types)
        .flat_map(|t| {
            let code = t.code;
            t.sample_errors.into_iter().map(move |s| MeterErrorSample {
                code: code.clone(),
                identifier: s.request.and_then(|r| r.identifier).unwrap_or_default(),
                message: s.error_message,
            })
        })
        .collect();
    MeterErrorReport {
        event_id: event.id,
        event_type: event.r#type,
        created: event.created,
        validation_start: start,
        validation_end: end,
        error_count,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_event_reads_as_one_report() {
        let fixtures: serde_json::Value = serde_json::from_str(include_str!(
            "../../../local/specs/stripe-meter-fixtures.json"
        ))
        .expect("fixtures");
        let event = &fixtures["resources"]["v2.core.event"];
        let parsed: ThinEvent = serde_json::from_value(event.clone()).expect("event");
        let r = report(parsed);
        assert_eq!(r.event_type, ERROR_REPORT_TRIGGERED);
        assert_eq!(r.error_count, 1);
        assert_eq!(r.samples.len(), 1);
        assert_eq!(r.samples[0].code, "meter_event_no_customer_defined");
        assert_eq!(
            r.samples[0].identifier,
            "cb447754-6880-45c2-8f2f-ef19b6ce81e9"
        );
        assert!(r.validation_start < r.validation_end);
    }
}
