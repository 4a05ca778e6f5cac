//! Stripe, one billing meter's settings: `GET /v1/billing/meters/{id}` (the `billing.meter`
//! object), read by `tracemeter doctor` to compare with what the functions send.

use super::credential::Credential;
use super::http;
use super::stripe::Failure;
use crate::config::{StripeConfig, StripeKey};
use crate::error::{Error, Result};
use serde::Deserialize;

const SERVICE: &str = "stripe";

/// The payload key the meter events carry the Stripe customer in (`by_id`).
pub const CUSTOMER_PAYLOAD_KEY: &str = "stripe_customer_id";
/// The payload key the meter events carry their credits in.
pub const VALUE_PAYLOAD_KEY: &str = "value";

/// What retrieving a meter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterLookup {
    /// The meter.
    Found(BillingMeter),
    /// 401/403: the key was refused (what to check, and Stripe's message).
    Refused(String),
    /// 404: no such meter for this key (Stripe's message names the other mode when the
    /// meter is there).
    NotFound(String),
}

/// A billing meter, the fields the functions depend on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BillingMeter {
    /// `mtr_...`.
    pub id: String,
    /// The `event_name` meter events must carry to count.
    pub event_name: String,
    /// `active` or `inactive` (an inactive meter drops its events).
    pub status: String,
    /// Which payload key names the customer.
    pub customer_mapping: CustomerMapping,
    /// Which payload key holds the value.
    pub value_settings: ValueSettings,
    /// How values add up.
    pub default_aggregation: Aggregation,
    /// Live or test mode.
    pub livemode: bool,
}

/// `customer_mapping`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CustomerMapping {
    /// `by_id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload key holding the Stripe customer id.
    pub event_payload_key: String,
}

/// `value_settings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValueSettings {
    /// The payload key holding the value.
    pub event_payload_key: String,
}

/// `default_aggregation`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Aggregation {
    /// `sum`, `count` or `last`.
    pub formula: String,
}

/// Retrieves the meter `meter_id` with the Stripe key (GET, Bearer auth, the pinned
/// `Stripe-Version`, no body, as stripe-python's `stripe.billing.Meter.retrieve`). A refused key and an unknown meter are
/// answers; other failures (throttling, 5xx, transport) are errors.
pub async fn retrieve_meter(
    cfg: &StripeConfig,
    key: &Credential<StripeKey>,
    meter_id: &str,
) -> Result<MeterLookup> {
    let url = format!("{}/v1/billing/meters/{meter_id}", cfg.api_base);
    let request = http::client(cfg.timeout)?
        .get(url)
        .header("Stripe-Version", super::stripe::API_VERSION);
    let response = key.send(SERVICE, request).await?;
    let what = format!("billing meter {meter_id}");
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let failure = Failure::read(response).await;
        return match status {
            401 | 403 => Ok(MeterLookup::Refused(failure.error(&what).to_string())),
            404 => Ok(MeterLookup::NotFound(failure.message().to_string())),
            _ => Err(failure.error(&what)),
        };
    }
    let body = http::read_limited(SERVICE, response, 256 * 1024).await?;
    serde_json::from_slice(&body)
        .map(MeterLookup::Found)
        .map_err(|e| Error::transient(SERVICE, format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_meter_object_parses() {
        // Stripe's API reference example of the billing meter object.
        let doc = r#"{
          "id": "mtr_test_61Q8nQMqIFK9fRQmr41CMAXJrFdZ5MnA",
          "object": "billing.meter",
          "created": 1704824589,
          "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
          "default_aggregation": {"formula": "sum"},
          "display_name": "API Requests",
          "event_name": "API Requests",
          "event_time_window": null,
          "livemode": false,
          "status": "active",
          "status_transitions": {"deactivated_at": null},
          "updated": 1704824589,
          "value_settings": {"event_payload_key": "value"}
        }"#;
        let meter: BillingMeter = serde_json::from_str(doc).expect("parses");
        assert_eq!(meter.customer_mapping.kind, "by_id");
        assert_eq!(meter.value_settings.event_payload_key, "value");
        assert_eq!(meter.default_aggregation.formula, "sum");
        assert!(!meter.livemode);
    }
}
