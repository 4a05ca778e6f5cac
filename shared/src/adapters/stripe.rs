//! Stripe meter events: `POST /v1/billing/meter_events`, form-encoded, with a deterministic
//! `identifier` and the same value as `Idempotency-Key`.

use super::http;
use crate::config::{Secret, StripeConfig};
use crate::error::{Error, FailureReason, Result};
use crate::ports::{Delivery, MeterEvent, MeterSink};
use async_trait::async_trait;
use chrono::Utc;
use serde::Deserialize;

const SERVICE: &str = "stripe";

/// The Stripe meter-event client.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: Secret,
    event_name: String,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.api_base)
            .field("event_name", &self.event_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Debug, Deserialize)]
struct StripeError {
    #[serde(default)]
    r#type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl StripeClient {
    /// Builds the client from configuration.
    pub fn new(cfg: &StripeConfig) -> Result<StripeClient> {
        Ok(StripeClient {
            http: http::client(cfg.timeout)?,
            api_base: cfg.api_base.clone(),
            secret_key: cfg.secret_key.clone(),
            event_name: cfg.meter_event_name.clone(),
        })
    }
}

/// True for Stripe's answer to a repeated identifier.
pub fn is_duplicate_identifier(message: &str) -> bool {
    message.contains("already exists with identifier")
        || message.contains("An event already exists")
}

#[async_trait]
impl MeterSink for StripeClient {
    async fn send(&self, event: &MeterEvent) -> Result<Delivery> {
        let form = [
            ("event_name", self.event_name.clone()),
            ("payload[stripe_customer_id]", event.customer_id.clone()),
            ("payload[value]", event.value.to_string()),
            ("identifier", event.identifier.clone()),
            ("timestamp", event.timestamp.to_string()),
        ];
        let response = self
            .http
            .post(format!("{}/v1/billing/meter_events", self.api_base))
            .bearer_auth(self.secret_key.expose())
            .header("Idempotency-Key", &event.identifier)
            .form(&form)
            .send()
            .await
            .map_err(|e| http::transport(SERVICE, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Delivery::Recorded);
        }
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let retry_after = http::retry_after(response.headers(), Utc::now().timestamp());
        let body = http::read_limited(SERVICE, response, 64 * 1024)
            .await
            .unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let message = parsed
            .as_ref()
            .and_then(|b| b.error.message.clone())
            .unwrap_or_else(|| http::excerpt(&body));
        let code = parsed
            .as_ref()
            .and_then(|b| b.error.code.clone().or(b.error.r#type.clone()))
            .unwrap_or_default();
        let detail = format!(
            "meter event {} for {}: {status} {code}: {message}",
            event.identifier, event.customer_id
        );
        match status.as_u16() {
            400 if is_duplicate_identifier(&message) => Ok(Delivery::AlreadyRecorded),
            // Throttling, conflicts (a concurrent request with the same idempotency key),
            // server errors: try again later.
            409 | 429 | 500..=599 => Err(Error::Transient {
                service: SERVICE,
                detail,
                retry_after,
            }),
            // Bad credentials or permissions: an operator fixes them; keep the message.
            401 | 403 => Err(Error::transient(
                SERVICE,
                format!("{detail} (check STRIPE_SECRET_KEY)"),
            )),
            _ if should_retry == Some(true) => Err(Error::Transient {
                service: SERVICE,
                detail,
                retry_after,
            }),
            400..=499 => Err(Error::permanent(FailureReason::StripeRejected, detail)),
            _ => Err(Error::transient(SERVICE, detail)),
        }
    }
}
