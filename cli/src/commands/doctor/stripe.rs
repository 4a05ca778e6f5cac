//! Stripe: the key authenticates (its mode said aloud), and the meter `STRIPE_METER_ID` is
//! active and set up the way the functions send their events.

use super::report::Check;
use tracemeter::adapters::credential::Credential;
use tracemeter::adapters::stripe_meter::{
    BillingMeter, CUSTOMER_PAYLOAD_KEY, MeterLookup, VALUE_PAYLOAD_KEY, retrieve_meter,
};
use tracemeter::config::{StripeConfig, StripeKey};

/// How to get a meter right: its settings cannot be changed after it is created.
const NEW_METER: &str = "a meter's settings cannot be changed: create one as docs/deploying.md (step 2) shows, and set STRIPE_METER_ID to it";

/// Live or test, from the key's prefix.
fn mode(key: &StripeKey) -> Option<bool> {
    let k = key.expose();
    match () {
        _ if k.starts_with("sk_live_") || k.starts_with("rk_live_") => Some(true),
        _ if k.starts_with("sk_test_") || k.starts_with("rk_test_") => Some(false),
        _ => None,
    }
}

fn mode_name(live: bool) -> &'static str {
    if live { "live" } else { "test" }
}

/// The Stripe checks.
pub(super) async fn check(
    cfg: &StripeConfig,
    key: Credential<StripeKey>,
    meter_id: Option<&str>,
) -> Vec<Check> {
    let live = mode(&key.current().key);
    let said = match live {
        Some(true) => "a LIVE mode key: meter events bill real customers",
        Some(false) => "a TEST mode key: nothing is billed for real",
        None => "a key of unknown mode (neither sk_/rk_live_ nor sk_/rk_test_)",
    };
    let Some(meter_id) = meter_id else {
        return vec![Check::fail(
            "stripe.meter",
            "STRIPE_METER_ID is not set: the key and the meter cannot be checked",
            "set STRIPE_METER_ID to the meter's id (mtr_..., Stripe: Billing > Meters)",
        )];
    };
    let meter = match retrieve_meter(cfg, &key, meter_id).await {
        Ok(MeterLookup::Found(meter)) => meter,
        Ok(MeterLookup::Refused(why)) => {
            return vec![Check::fail(
                "stripe.key",
                format!("Stripe refused the key: {why}"),
                "store a valid secret key (or a restricted key that may read billing meters and write meter events) in the secret",
            )];
        }
        Ok(MeterLookup::NotFound(message)) => {
            return vec![
                Check::ok("stripe.key", format!("the key authenticates: {said}")),
                not_found(meter_id, live, &message),
            ];
        }
        Err(e) => {
            let fix = format!(
                "check STRIPE_API_BASE ({}), then run doctor again",
                cfg.api_base
            );
            return vec![Check::fail("stripe.meter", e.to_string(), fix)];
        }
    };
    let mut checks = vec![Check::ok(
        "stripe.key",
        format!("the key authenticates: {said}"),
    )];
    checks.push(meter_state(&meter, live));
    checks.extend(meter_settings(&meter, &cfg.meter_event_name));
    checks
}

/// A 404: no such meter, or one of the other mode.
fn not_found(meter_id: &str, live: Option<bool>, message: &str) -> Check {
    let key_mode = live.map(mode_name).unwrap_or("unknown");
    Check::fail(
        "stripe.meter",
        format!("meter {meter_id} not found with this {key_mode} mode key: {message}"),
        "use the key of the meter's mode, or set STRIPE_METER_ID to a meter of the key's mode (test and live meters are apart)",
    )
}

/// Active, and of the key's mode.
fn meter_state(meter: &BillingMeter, live: Option<bool>) -> Check {
    let id = &meter.id;
    if meter.status != "active" {
        return Check::fail(
            "stripe.meter",
            format!(
                "meter {id} is {}: Stripe drops the events sent to it",
                meter.status
            ),
            format!(
                "reactivate it (stripe billing meters reactivate {id}, or POST /v1/billing/meters/{id}/reactivate), or set STRIPE_METER_ID to an active meter"
            ),
        );
    }
    let meter_mode = mode_name(meter.livemode);
    match live {
        Some(l) if l != meter.livemode => Check::fail(
            "stripe.meter",
            format!(
                "meter {id} is a {meter_mode} mode meter; the key is a {} mode key",
                mode_name(l)
            ),
            "use the key and the meter of one mode",
        ),
        _ => Check::ok(
            "stripe.meter",
            format!("meter {id} is active ({meter_mode} mode)"),
        ),
    }
}

/// The event name, customer mapping, value key and aggregation against what is sent.
fn meter_settings(meter: &BillingMeter, sent_name: &str) -> Vec<Check> {
    let name = &meter.event_name;
    let mapping = &meter.customer_mapping;
    let value = &meter.value_settings.event_payload_key;
    let formula = &meter.default_aggregation.formula;
    vec![
        Check::expect(
            "stripe.event_name",
            name == sent_name,
            format!(
                "the meter counts `{name}`; the functions send `{sent_name}` (STRIPE_METER_EVENT_NAME)"
            ),
            || {
                format!(
                    "set STRIPE_METER_EVENT_NAME (the StripeMeterEventName parameter) to {name}, or use a meter whose event_name is {sent_name}"
                )
            },
        ),
        Check::expect(
            "stripe.customer_mapping",
            mapping.kind == "by_id" && mapping.event_payload_key == CUSTOMER_PAYLOAD_KEY,
            format!(
                "the meter maps customers {} on `{}`; the functions send the customer id in `{CUSTOMER_PAYLOAD_KEY}` (by_id)",
                mapping.kind, mapping.event_payload_key
            ),
            || NEW_METER.to_string(),
        ),
        Check::expect(
            "stripe.value_key",
            value == VALUE_PAYLOAD_KEY,
            format!(
                "the meter reads the value from `{value}`; the functions send it in `{VALUE_PAYLOAD_KEY}`"
            ),
            || NEW_METER.to_string(),
        ),
        Check::expect(
            "stripe.aggregation",
            formula == "sum",
            format!("the meter aggregates with `{formula}`; credits add up with `sum`"),
            || NEW_METER.to_string(),
        ),
    ]
}
