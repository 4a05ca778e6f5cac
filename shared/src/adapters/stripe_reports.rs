//! Stripe, read side: a customer's meter event summaries
//! (`GET /v1/billing/meters/{meter}/event_summaries`, paginated with `starting_after`).

use super::credential::Credential;
use super::http;
use super::stripe::{API_VERSION, Failure};
use crate::config::{StripeConfig, StripeKey};
use crate::error::{Error, Result};
use crate::ports::MeterReports;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

const SERVICE: &str = "stripe";

/// Reads what Stripe aggregated for one meter.
#[derive(Clone)]
pub struct StripeReports {
    http: reqwest::Client,
    api_base: String,
    key: Credential<StripeKey>,
    meter_id: String,
}

impl std::fmt::Debug for StripeReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeReports")
            .field("api_base", &self.api_base)
            .field("meter_id", &self.meter_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct SummaryList {
    data: Vec<Summary>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Debug, Deserialize)]
struct Summary {
    id: String,
    aggregated_value: f64,
}

impl StripeReports {
    /// For the meter `meter_id` (`STRIPE_METER_ID`, `mtr_...`), with the Stripe key.
    pub fn new(
        cfg: &StripeConfig,
        key: Credential<StripeKey>,
        meter_id: impl Into<String>,
    ) -> Result<StripeReports> {
        Ok(StripeReports {
            http: http::client(cfg.timeout)?,
            api_base: cfg.api_base.clone(),
            key,
            meter_id: meter_id.into(),
        })
    }

    async fn page(&self, query: &[(&str, String)]) -> Result<SummaryList> {
        let url = format!(
            "{}/v1/billing/meters/{}/event_summaries",
            self.api_base, self.meter_id
        );
        let request = self
            .http
            .get(url)
            .header("Stripe-Version", API_VERSION)
            .query(query);
        let response = self.key.send(SERVICE, request).await?;
        if !response.status().is_success() {
            let what = format!("meter event summaries of meter {}", self.meter_id);
            return Err(Failure::read(response).await.error(&what));
        }
        let body = http::read_limited(SERVICE, response, 1024 * 1024).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::transient(SERVICE, format!("meter event summaries: {e}")))
    }
}

#[async_trait]
impl MeterReports for StripeReports {
    async fn aggregated(
        &self,
        customer_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64> {
        let mut total = 0.0;
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("customer", customer_id.to_string()),
                ("start_time", start.timestamp().to_string()),
                ("end_time", end.timestamp().to_string()),
                ("limit", "100".to_string()),
            ];
            if let Some(id) = after.take() {
                query.push(("starting_after", id));
            }
            let page = self.page(&query).await?;
            total += page.data.iter().map(|s| s.aggregated_value).sum::<f64>();
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(total.round().max(0.0) as u64),
            }
        }
    }
}
