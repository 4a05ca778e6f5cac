//! The Stripe variables (the process function only: ingest holds no Stripe secret).

use super::env::Env;
use super::keys::{self, KeySource, StripeKey};
use crate::error::{Error, Result};
use std::time::Duration;

/// How meter events reach Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeApiMode {
    /// `POST /v1/billing/meter_events`: one event per request, validated synchronously, one
    /// concurrent request per customer and meter.
    V1,
    /// `POST /v2/billing/meter_event_session` then `POST /v2/billing/meter_event_stream`: up
    /// to 100 events per request, validated asynchronously.
    V2Stream,
}

/// Stripe connection settings.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`).
    pub api_base: String,
    /// `STRIPE_API_MODE` (`v1` or `v2_stream`, default `v1`).
    pub api_mode: StripeApiMode,
    /// `STRIPE_METER_EVENTS_BASE`: the host of the v2 meter event stream (default
    /// `https://meter-events.stripe.com`).
    pub meter_events_base: String,
    /// `STRIPE_SECRET_ARN` (a secret with `secret_key`), or for local development
    /// `STRIPE_SECRET_KEY`.
    pub key: KeySource<StripeKey>,
    /// `STRIPE_METER_EVENT_NAME`.
    pub meter_event_name: String,
    /// `STRIPE_TIMEOUT_MS` (default 10000).
    pub timeout: Duration,
}

impl StripeConfig {
    /// The Stripe variables alone, through `lookup` (`tracemeter doctor` checks each service
    /// on its own).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<StripeConfig> {
        StripeConfig::read(&Env::new(lookup))
    }

    /// Reads the Stripe variables.
    pub(super) fn read(env: &Env<'_>) -> Result<StripeConfig> {
        let key = keys::stripe(env)?;
        let api_mode = match env.optional("STRIPE_API_MODE").as_deref() {
            Some("v1") => StripeApiMode::V1,
            None | Some("v2_stream") => StripeApiMode::V2Stream,
            Some(other) => {
                return Err(Error::Config(format!(
                    "STRIPE_API_MODE={other:?} is not valid: expected v1 or v2_stream"
                )));
            }
        };
        Ok(StripeConfig {
            api_base: env.url("STRIPE_API_BASE", Some("https://api.stripe.com"))?,
            api_mode,
            meter_events_base: env.url(
                "STRIPE_METER_EVENTS_BASE",
                Some("https://meter-events.stripe.com"),
            )?,
            key,
            meter_event_name: env.required("STRIPE_METER_EVENT_NAME")?,
            timeout: env.timeout_ms("STRIPE_TIMEOUT_MS")?,
        })
    }
}
