//! `GET /v1/billing/meters/{id}/event_summaries` (Stripe's list of
//! `billing.meter_event_summary` objects, as in `local/specs/stripe-meter-fixtures.json`):
//! the sum of the events the fake recorded for `customer` with a timestamp in
//! `[start_time, end_time)`, both required and aligned to minutes as Stripe requires. The fake
//! has one meter: any meter id sums every event. Events made to be dropped with
//! [`StripeFake::drop_event`](super::StripeFake::drop_event) (Stripe's asynchronous
//! validation) are left out. Without `value_grouping_window` there is one summary for the
//! range, as on Stripe; the fake does not group by hour or day (400).

use super::errors::{invalid_request, missing};
use super::{Shared, lock};
use crate::fakes::{Incoming, Reply, parse_urlencoded};
use serde_json::json;

/// Answers a summaries request.
pub(super) fn event_summaries(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    let st = lock(state);
    if let Err(reply) = st.authenticate(incoming) {
        return (reply, false);
    }
    let meter = incoming
        .path
        .trim_start_matches("/v1/billing/meters/")
        .trim_end_matches("/event_summaries")
        .to_string();
    let params = match parse_urlencoded(incoming.query.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return (invalid_request(None, None, &e), true),
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if get("value_grouping_window").is_some() {
        let message = "The fake does not group summaries: omit value_grouping_window.";
        return (
            invalid_request(None, Some("value_grouping_window"), message),
            true,
        );
    }
    let Some(customer) = get("customer") else {
        return (missing("customer"), true);
    };
    let (start, end) = match (
        time(get("start_time"), "start_time"),
        time(get("end_time"), "end_time"),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(reply), _) | (_, Err(reply)) => return (reply, true),
    };
    let value: u64 = st
        .events
        .iter()
        .filter(|e| e.customer == customer && e.timestamp >= start && e.timestamp < end)
        .filter(|e| !st.dropped.contains(&e.identifier))
        .map(|e| e.value)
        .sum();
    let summary = json!({
        "id": format!("mtrusg_fake_{customer}_{start}_{end}"),
        "object": "billing.meter_event_summary",
        "aggregated_value": value,
        "start_time": start,
        "end_time": end,
        "livemode": false,
        "meter": meter,
    });
    let url = format!("/v1/billing/meters/{meter}/event_summaries");
    let list = json!({"object": "list", "data": [summary], "has_more": false, "url": url});
    (Reply::json(200, &list), true)
}

/// A required Unix time aligned to a minute.
fn time(raw: Option<String>, name: &str) -> Result<i64, Reply> {
    let raw = raw.ok_or_else(|| missing(name))?;
    let t: i64 = raw
        .parse()
        .map_err(|_| invalid_request(None, Some(name), &format!("Invalid integer: {raw}")))?;
    if t % 60 != 0 {
        let message = format!("{name} must be aligned with minute boundaries.");
        return Err(invalid_request(None, Some(name), &message));
    }
    Ok(t)
}
