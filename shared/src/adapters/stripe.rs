//! Stripe meter events, in one of two modes (`STRIPE_API_MODE`):
//!
//! - `v1`: `POST /v1/billing/meter_events`, form-encoded, one event per request, with a
//!   deterministic `identifier` and the same value as `Idempotency-Key`. A repeated identifier
//!   is answered 400 "An event already exists": already delivered.
//! - `v2_stream`: a session token from `POST /v2/billing/meter_event_session` (secret key,
//!   valid 15 minutes), then `POST /v2/billing/meter_event_stream` on the meter events host
//!   with up to 100 events per JSON request, authenticated with the token. Events are
//!   validated asynchronously: a 200 means accepted; identifiers dedup the same way (a repeat
//!   is dropped by Stripe and reported later, never billed twice). An expired token (401
//!   `billing_meter_event_session_expired`) is renewed once and the request resent.
//!
//! The secret key is a [`Credential`]: a 401 to a request made with it re-reads the key from
//! its secret and resends the same request once.

use super::credential::{self, Credential};
use super::http;
use crate::config::{Secret, StripeApiMode, StripeConfig, StripeKey};
use crate::domain::meter::{Delivery, MeterEvent};
use crate::error::{Error, FailureReason, Result};
use crate::ports::MeterSink;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use std::sync::Arc;

const SERVICE: &str = "stripe";
/// Events per stream request (Stripe's limit).
pub const MAX_STREAM_EVENTS: usize = 100;
/// The `Stripe-Version` of every Stripe request: the GA version stripe-python 16.1.0 pins,
/// the SDK tracemeter's requests were checked against (docs/conformance.md).
/// It documents all tracemeter uses: v1 meter events and event summaries, the v2 meter event
/// session and stream, and the v2 events list with its `types` and `created` filters (GA
/// since `2025-10-29.clover`).
pub const API_VERSION: &str = "2026-10-28.endive";
/// A session token this close to its expiry is renewed before use.
const SESSION_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// The Stripe meter-event client.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    meter_events_base: String,
    mode: StripeApiMode,
    key: Credential<StripeKey>,
    event_name: String,
    session: Arc<tokio::sync::Mutex<Option<Session>>>,
}

/// A meter event session: its token and expiry.
#[derive(Clone)]
struct Session {
    token: Secret,
    expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.api_base)
            .field("meter_events_base", &self.meter_events_base)
            .field("mode", &self.mode)
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

#[derive(Debug, Deserialize)]
struct SessionBody {
    authentication_token: String,
    expires_at: DateTime<Utc>,
}

/// A failed response, read.
pub(crate) struct Failure {
    status: u16,
    code: String,
    message: String,
    should_retry: Option<bool>,
    retry_after: Option<std::time::Duration>,
    /// What to check after a refused key ([`credential::Refused`]).
    check: Option<String>,
}

impl Failure {
    pub(crate) async fn read(response: reqwest::Response) -> Failure {
        let status = response.status().as_u16();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let retry_after = http::retry_after(response.headers(), Utc::now().timestamp());
        let check = credential::refused(&response).map(str::to_string);
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
        Failure {
            status,
            code,
            message,
            should_retry,
            retry_after,
            check,
        }
    }

    /// Stripe's message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Transient or permanent, as `what` failed.
    pub(crate) fn error(&self, what: &str) -> Error {
        let detail = format!("{what}: {} {}: {}", self.status, self.code, self.message);
        // A 429 always asks to wait (the processor defers the message), named or not.
        let asked = match self.status {
            429 => self.retry_after.or(Some(std::time::Duration::from_secs(1))),
            _ => self.retry_after,
        };
        let transient = |detail: String| Error::Transient {
            service: SERVICE,
            detail,
            retry_after: asked,
        };
        match self.status {
            // Throttling, conflicts (a concurrent request with the same idempotency key),
            // server errors: try again later.
            409 | 429 | 500..=599 => transient(detail),
            // Bad credentials or permissions: an operator fixes them; keep the message.
            401 | 403 => {
                let check = self.check.as_deref().unwrap_or("the Stripe key");
                Error::transient(SERVICE, format!("{detail} (check {check})"))
            }
            _ if self.should_retry == Some(true) => transient(detail),
            400..=499 => Error::permanent(FailureReason::StripeRejected, detail),
            _ => Error::transient(SERVICE, detail),
        }
    }
}

impl StripeClient {
    /// Builds the client from configuration and the key ([`Credential::load`]).
    pub fn new(cfg: &StripeConfig, key: Credential<StripeKey>) -> Result<StripeClient> {
        Ok(StripeClient {
            http: http::client(cfg.timeout)?,
            api_base: cfg.api_base.clone(),
            meter_events_base: cfg.meter_events_base.clone(),
            mode: cfg.api_mode,
            key,
            event_name: cfg.meter_event_name.clone(),
            session: Arc::default(),
        })
    }

    /// The same client sending through the other API mode (tests, tooling).
    pub fn with_mode(&self, mode: StripeApiMode) -> StripeClient {
        StripeClient {
            mode,
            session: Arc::default(),
            ..self.clone()
        }
    }

    async fn send_v1(&self, event: &MeterEvent) -> Result<Delivery> {
        let form = [
            ("event_name", self.event_name.clone()),
            ("payload[stripe_customer_id]", event.customer_id.clone()),
            ("payload[value]", event.value.to_string()),
            ("identifier", event.identifier.clone()),
            ("timestamp", event.timestamp.to_string()),
        ];
        // A 401 re-reads the key and resends this same request (same identifier and
        // Idempotency-Key): safe to repeat.
        let request = self
            .http
            .post(format!("{}/v1/billing/meter_events", self.api_base))
            .header("Stripe-Version", API_VERSION)
            .header("Idempotency-Key", &event.identifier)
            .form(&form);
        let response = self.key.send(SERVICE, request).await?;
        if response.status().is_success() {
            return Ok(Delivery::Recorded);
        }
        let failure = Failure::read(response).await;
        if failure.status == 400 && is_duplicate_identifier(&failure.message) {
            return Ok(Delivery::AlreadyRecorded);
        }
        Err(failure.error(&format!(
            "meter event {} for {}",
            event.identifier, event.customer_id
        )))
    }

    /// A live session token: the cached one, or a new session (`renew`: always new).
    async fn session_token(&self, renew: bool) -> Result<Secret> {
        let mut session = self.session.lock().await;
        if !renew
            && let Some(s) = session.as_ref()
            && s.expires_at - Utc::now() > SESSION_MARGIN
        {
            return Ok(s.token.clone());
        }
        let request = self
            .http
            .post(format!("{}/v2/billing/meter_event_session", self.api_base))
            .header("Stripe-Version", API_VERSION)
            .json(&serde_json::json!({}));
        let response = self.key.send(SERVICE, request).await?;
        if !response.status().is_success() {
            // Whatever went wrong, it is not the events' fault: retry them later.
            let failure = Failure::read(response).await;
            let e = failure.error("creating a meter event session");
            return Err(match e {
                Error::Permanent { detail, .. } => Error::transient(SERVICE, detail),
                e => e,
            });
        }
        let body = http::read_limited(SERVICE, response, 64 * 1024).await?;
        let parsed: SessionBody = serde_json::from_slice(&body).map_err(|e| {
            Error::transient(
                SERVICE,
                format!(
                    "meter event session: unexpected response ({e}): {}",
                    http::excerpt(&body)
                ),
            )
        })?;
        let token = Secret::new(parsed.authentication_token);
        *session = Some(Session {
            token: token.clone(),
            expires_at: parsed.expires_at,
        });
        Ok(token)
    }

    /// Sends up to [`MAX_STREAM_EVENTS`] events in one stream request.
    async fn send_stream(&self, events: &[MeterEvent]) -> Result<()> {
        let body = serde_json::json!({
            "events": events.iter().map(|e| stream_event(&self.event_name, e)).collect::<Vec<_>>(),
        });
        let what = format!(
            "meter event stream request of {} events ({}..)",
            events.len(),
            events.first().map(|e| e.identifier.as_str()).unwrap_or("")
        );
        let mut renew = false;
        loop {
            let token = self.session_token(renew).await?;
            let response = self
                .http
                .post(format!(
                    "{}/v2/billing/meter_event_stream",
                    self.meter_events_base
                ))
                .bearer_auth(token.expose())
                .header("Stripe-Version", API_VERSION)
                .json(&body)
                .send()
                .await
                .map_err(|e| http::transport(SERVICE, e))?;
            if response.status().is_success() {
                return Ok(());
            }
            let failure = Failure::read(response).await;
            if failure.status == 401 && !renew {
                // Expired (billing_meter_event_session_expired) or revoked: a new session.
                renew = true;
                continue;
            }
            return Err(failure.error(&what));
        }
    }
}

/// One event of a stream request.
fn stream_event(event_name: &str, e: &MeterEvent) -> serde_json::Value {
    let timestamp = DateTime::from_timestamp(e.timestamp, 0)
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    serde_json::json!({
        "event_name": event_name,
        "identifier": e.identifier,
        "timestamp": timestamp,
        "payload": {
            "stripe_customer_id": e.customer_id,
            "value": e.value.to_string(),
        },
    })
}

/// True for Stripe's answer to a repeated identifier.
pub fn is_duplicate_identifier(message: &str) -> bool {
    message.contains("already exists with identifier")
        || message.contains("An event already exists")
}

#[async_trait]
impl MeterSink for StripeClient {
    async fn send(&self, event: &MeterEvent) -> Result<Delivery> {
        match self.mode {
            StripeApiMode::V1 => self.send_v1(event).await,
            StripeApiMode::V2Stream => self
                .send_stream(std::slice::from_ref(event))
                .await
                .map(|()| Delivery::Recorded),
        }
    }

    fn batches(&self) -> bool {
        self.mode == StripeApiMode::V2Stream
    }

    async fn send_batch(&self, events: &[MeterEvent]) -> Vec<Result<Delivery>> {
        let mut out = Vec::with_capacity(events.len());
        match self.mode {
            StripeApiMode::V1 => {
                for e in events {
                    out.push(self.send_v1(e).await);
                }
            }
            StripeApiMode::V2Stream => {
                for chunk in events.chunks(MAX_STREAM_EVENTS) {
                    let result = self.send_stream(chunk).await.map(|()| Delivery::Recorded);
                    out.extend(std::iter::repeat_n(result, chunk.len()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_carry_rfc3339_times_and_string_values() {
        let e = MeterEvent {
            identifier: "tm_t1_r1".into(),
            customer_id: "cus_1".into(),
            value: 292,
            timestamp: 1_717_243_200,
        };
        assert_eq!(
            stream_event("llm_credits", &e),
            serde_json::json!({
                "event_name": "llm_credits",
                "identifier": "tm_t1_r1",
                "timestamp": "2024-06-01T12:00:00.000Z",
                "payload": {"stripe_customer_id": "cus_1", "value": "292"},
            })
        );
    }
}
