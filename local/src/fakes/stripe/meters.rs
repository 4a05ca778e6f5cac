//! `GET /v1/billing/meters/{id}`: the fake's one billing meter, as Stripe's API reference
//! shows the `billing.meter` object. A key of the other mode (`sk_live_` against a test-mode
//! meter) gets Stripe's 404 naming the mode that has it, as on Stripe, where the modes'
//! objects are apart.

use super::errors::stripe_error_with_param;
use super::{Shared, StripeFake, lock};
use crate::fakes::{Incoming, Reply};
use serde_json::json;

/// The meter's id unless [`StripeFake::set_meter`] says otherwise.
pub const FAKE_METER_ID: &str = "mtr_fake";
/// Its event name unless [`StripeFake::set_meter`] says otherwise.
pub const FAKE_METER_EVENT_NAME: &str = "llm_credits";

/// The fake's billing meter: what `GET /v1/billing/meters/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMeter {
    /// `id`.
    pub id: String,
    /// `event_name`.
    pub event_name: String,
    /// `customer_mapping.type`.
    pub mapping_type: String,
    /// `customer_mapping.event_payload_key`.
    pub customer_key: String,
    /// `value_settings.event_payload_key`.
    pub value_key: String,
    /// `default_aggregation.formula`.
    pub formula: String,
    /// `status`: `active` when true, else `inactive`.
    pub active: bool,
    /// `livemode`.
    pub livemode: bool,
}

impl FakeMeter {
    /// An active test-mode meter summing `value` per `stripe_customer_id` (by id): what
    /// the functions need.
    pub fn new(id: &str, event_name: &str) -> FakeMeter {
        FakeMeter {
            id: id.to_string(),
            event_name: event_name.to_string(),
            mapping_type: "by_id".to_string(),
            customer_key: "stripe_customer_id".to_string(),
            value_key: "value".to_string(),
            formula: "sum".to_string(),
            active: true,
            livemode: false,
        }
    }

    fn object(&self) -> serde_json::Value {
        let created = 1_704_824_589;
        json!({
            "id": self.id,
            "object": "billing.meter",
            "created": created,
            "customer_mapping": {"type": self.mapping_type, "event_payload_key": self.customer_key},
            "default_aggregation": {"formula": self.formula},
            "display_name": "LLM credits",
            "event_name": self.event_name,
            "event_time_window": null,
            "livemode": self.livemode,
            "status": if self.active { "active" } else { "inactive" },
            "status_transitions": {"deactivated_at": if self.active { None } else { Some(created + 60) }},
            "updated": created,
            "value_settings": {"event_payload_key": self.value_key},
        })
    }
}

impl Default for FakeMeter {
    fn default() -> Self {
        FakeMeter::new(FAKE_METER_ID, FAKE_METER_EVENT_NAME)
    }
}

impl StripeFake {
    /// Replaces the billing meter the fake serves.
    pub fn set_meter(&self, meter: FakeMeter) {
        lock(&self.state).meter = meter;
    }

    /// The billing meter the fake serves.
    pub fn meter(&self) -> FakeMeter {
        lock(&self.state).meter.clone()
    }
}

/// Answers `GET /v1/billing/meters/{id}`.
pub(super) fn retrieve(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    let st = lock(state);
    if let Err(reply) = st.authenticate(incoming) {
        return (reply, false);
    }
    let id = incoming.path.trim_start_matches("/v1/billing/meters/");
    let live_key = bearer_is_live(incoming);
    let meter = &st.meter;
    if id != meter.id || live_key != meter.livemode {
        let mut message = format!("No such billing meter: '{id}'");
        if id == meter.id {
            let (has, used) = match meter.livemode {
                true => ("live", "test"),
                false => ("test", "live"),
            };
            message.push_str(&format!(
                "; a similar object exists in {has} mode, but a {used} mode key was used to make this request."
            ));
        }
        let reply = stripe_error_with_param(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            Some("id"),
            &message,
        );
        return (reply, true);
    }
    (Reply::json(200, &meter.object()), true)
}

/// Whether the request's key is a live-mode one (`sk_live_`, `rk_live_`).
fn bearer_is_live(incoming: &Incoming) -> bool {
    incoming
        .header(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(_, key)| {
            let key = key.trim();
            key.starts_with("sk_live_") || key.starts_with("rk_live_")
        })
}
