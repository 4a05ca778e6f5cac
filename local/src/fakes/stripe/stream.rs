//! The v2 high-throughput path: meter event sessions and the meter event stream.

use super::errors::*;
use super::v1::parse_whole_number;
use super::*;

/// Most events one stream request takes.
pub const MAX_STREAM_EVENTS: usize = 100;

pub(super) fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `POST /v2/billing/meter_event_session`: a session token for the stream.
pub(super) fn create_session(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    let mut st = lock(state);
    if let Some(status) = st.fail.take() {
        return (injected_failure(status), false);
    }
    if let Err(reply) = st.authenticate(incoming) {
        return (reply, false);
    }
    if let RateDecision::Limited { .. } = st.rate.check() {
        return (rate_limited(), true);
    }
    let now = st.now();
    let expires_at = now + st.session_ttl;
    let token = format!("ekmes_test_{:024x}", next_sequence());
    st.sessions.insert(token.clone(), expires_at);
    st.sessions_created += 1;
    let reply = Reply::json(
        200,
        &json!({
            "id": format!("mes_test_{:016x}", next_sequence()),
            "object": "v2.billing.meter_event_session",
            "authentication_token": token,
            "created": rfc3339(now),
            "expires_at": rfc3339(expires_at),
            "livemode": false,
        }),
    );
    (reply, true)
}

/// `POST /v2/billing/meter_event_stream`: accepted at once, validated asynchronously.
/// Under chaos (`StripeFake::set_chaos`): `429` and `500` before anything is recorded;
/// `lost_response`: the events are recorded and the answer comes only after `lost`;
/// `duplicate_400` (a v1 answer) becomes its stream equivalent: the events are recorded and
/// the answer is a 500, so the client sends them again and Stripe drops the repeats.
pub(super) async fn meter_event_stream(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    let (events, fault) = {
        let mut st = lock(state);
        if let Some(status) = st.fail.take() {
            return (injected_failure(status), false);
        }
        let fault = match st.draw_fault() {
            Ok(fault) => fault,
            Err(reply) => return (reply, false),
        };
        if let Err(reply) = st.check_session(incoming) {
            return (reply, false);
        }
        if let RateDecision::Limited { .. } = st.rate.check() {
            return (rate_limited(), true);
        }
        match stream_events(incoming) {
            Ok(events) => (events, fault),
            Err(reply) => return (reply, true),
        }
    };
    let latency = lock(state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    {
        let mut st = lock(state);
        st.record_stream(&events);
        if st.fail_after_record > 0 {
            st.fail_after_record -= 1;
            return (api_error(500), true);
        }
    }
    match fault {
        Some(("lost_response", lost)) => tokio::time::sleep(lost).await,
        Some(("duplicate_400", _)) => return (api_error(500), true),
        _ => {}
    }
    (Reply::json(200, &json!({})), true)
}

impl StripeState {
    /// The stream's `Authorization: Bearer <session token>`: a live session's token.
    fn check_session(&self, incoming: &Incoming) -> Result<(), Reply> {
        let token = incoming
            .header(header::AUTHORIZATION)
            .map(str::trim)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned())
            .unwrap_or_default();
        match self.sessions.get(&token) {
            Some(expires_at) if *expires_at > self.now() => Ok(()),
            Some(_) => Err(stripe_error(
                401,
                "invalid_request_error",
                Some("billing_meter_event_session_expired"),
                "The temporary session token has expired.",
            )),
            None => Err(stripe_error(
                401,
                "invalid_request_error",
                None,
                "The meter event stream needs the authentication token of a meter event session \
                 (POST /v2/billing/meter_event_session), not an API key.",
            )),
        }
    }

    /// Records the valid events whose identifiers are new; lists the others as Stripe's
    /// later error report would.
    fn record_stream(&mut self, events: &[Value]) {
        let now = self.now();
        for event in events {
            match parse_stream_event(event, now.timestamp()) {
                Err(problem) => self.stream_errors.push(problem),
                Ok(e) if self.knows(&e.identifier) => self.stream_errors.push(format!(
                    "an event already exists with identifier {}",
                    e.identifier
                )),
                Ok(e) => {
                    self.identifiers.insert(e.identifier.clone(), now);
                    self.validate_later(&e);
                    self.events.push(e);
                }
            }
        }
        self.stream_batches.push(events.len());
    }
}

/// The request's `events`: 1 to [`MAX_STREAM_EVENTS`] objects (checked at once; each event's
/// content is checked later).
fn stream_events(incoming: &Incoming) -> Result<Vec<Value>, Reply> {
    let body: Value = serde_json::from_slice(&incoming.body)
        .map_err(|e| invalid_request(None, None, &format!("Invalid JSON body: {e}")))?;
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| missing("events"))?;
    if events.is_empty() || events.len() > MAX_STREAM_EVENTS {
        return Err(invalid_request(
            Some("parameter_invalid"),
            Some("events"),
            &format!(
                "events must hold 1 to {MAX_STREAM_EVENTS} events, got {}.",
                events.len()
            ),
        ));
    }
    if let Some(i) = events.iter().position(|e| !e.is_object()) {
        return Err(invalid_request(
            Some("parameter_invalid"),
            Some(&format!("events[{i}]")),
            "Each event must be an object.",
        ));
    }
    Ok(events)
}

/// The asynchronous validation of one stream event.
pub(super) fn parse_stream_event(event: &Value, now: i64) -> Result<RecordedMeterEvent, String> {
    let text = |v: Option<&Value>, name: &str| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("missing or invalid {name}"))
    };
    let event_name = text(event.get("event_name"), "event_name")?;
    let payload = event.get("payload");
    let customer = text(
        payload.and_then(|p| p.get("stripe_customer_id")),
        "payload.stripe_customer_id",
    )?;
    let raw_value = text(payload.and_then(|p| p.get("value")), "payload.value")?;
    let value = parse_whole_number(&raw_value)
        .ok_or_else(|| format!("payload.value {raw_value:?} is not a whole number"))?;
    let identifier = match event.get("identifier") {
        None => format!("fake_mev_{:016x}", next_sequence()),
        Some(v) => text(Some(v), "identifier")?,
    };
    if identifier.chars().count() > MAX_IDENTIFIER_LEN {
        return Err(format!("identifier {identifier} is too long"));
    }
    let timestamp = match event.get("timestamp") {
        None => now,
        Some(v) => {
            let raw = text(Some(v), "timestamp")?;
            chrono::DateTime::parse_from_rfc3339(&raw)
                .map_err(|_| format!("timestamp {raw:?} is not RFC 3339"))?
                .timestamp()
        }
    };
    if timestamp < now - MAX_PAST_SECS || timestamp > now + MAX_FUTURE_SECS {
        return Err(format!(
            "timestamp {timestamp} of {identifier} is outside the past 35 days / next 5 minutes"
        ));
    }
    Ok(RecordedMeterEvent {
        identifier,
        event_name,
        customer,
        value,
        timestamp,
        idempotency_key: None,
    })
}
