//! `POST /v1/billing/meter_events`: validation, `Idempotency-Key`, the per-customer slot,
//! identifier dedup within [`super::DEDUP_WINDOW`].

use super::errors::*;
use super::*;

/// A saved idempotent result, or a request still running under that key.
#[derive(Debug, Clone)]
pub(super) enum IdempotencyEntry {
    InFlight {
        fingerprint: Vec<(String, String)>,
    },
    Done {
        fingerprint: Vec<(String, String)>,
        reply: Reply,
        request_id: String,
    },
}

/// A validated `POST /v1/billing/meter_events` request.
#[derive(Debug, Clone)]
pub(super) struct MeterEventParams {
    event_name: String,
    customer: String,
    value: u64,
    identifier: Option<String>,
    timestamp: Option<i64>,
    /// Every `payload[...]` entry, as sent.
    payload: Map<String, Value>,
    /// Sorted parameters: what "the same request" means for `Idempotency-Key`.
    fingerprint: Vec<(String, String)>,
}

pub(super) async fn create_meter_event(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    // Faults, auth, rate limit, validation, idempotency and the customer slot: under one lock.
    let (params, idempotency_key, fault) = {
        let mut st = lock(state);
        if let Some(status) = st.fail.take() {
            return (injected_failure(status), false);
        }
        let fault = match st.draw_fault() {
            Ok(fault) => fault,
            Err(reply) => return (reply, false),
        };
        if let Err(reply) = st.authenticate(incoming) {
            return (reply, false);
        }
        if let RateDecision::Limited { .. } = st.rate.check() {
            return (rate_limited(), true);
        }
        let params = match parse_meter_event(incoming, st.now().timestamp()) {
            Ok(params) => params,
            Err(reply) => return (reply, true),
        };
        let idempotency_key = incoming
            .header("idempotency-key")
            .map(str::to_owned)
            .filter(|key| !key.is_empty());
        if let Some(key) = &idempotency_key {
            match st.begin_idempotent(key, &params.fingerprint) {
                Ok(()) => {}
                Err(reply) => return (reply, true),
            }
        }
        if !st.in_flight_customers.insert(params.customer.clone()) {
            st.concurrency_violations += 1;
            if let Some(key) = &idempotency_key {
                st.idempotency.remove(key);
            }
            return (concurrency_limited(&params.customer), true);
        }
        (params, idempotency_key, fault)
    };

    let latency = lock(state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let sent = {
        let mut st = lock(state);
        st.in_flight_customers.remove(&params.customer);
        let (saved, sent) = st.execute(&params, idempotency_key.as_deref());
        if let Some(key) = idempotency_key {
            let entry = IdempotencyEntry::Done {
                fingerprint: params.fingerprint.clone(),
                reply: saved,
                request_id: format!("req_fake{:014x}", next_sequence()),
            };
            let now = st.now();
            st.idempotency.insert(key, (now, entry));
        }
        sent
    };
    match fault {
        Some(("lost_response", lost)) => {
            tokio::time::sleep(lost).await;
            (sent, true)
        }
        Some(("duplicate_400", _)) if sent.status == 200 => (
            duplicate_identifier(params.identifier.as_deref().unwrap_or_default()),
            true,
        ),
        _ => (sent, true),
    }
}

/// The fault kinds of [`StripeFake::set_chaos`].
pub const STRIPE_KINDS: &[&str] = &["429", "500", "lost_response", "duplicate_400"];

impl StripeState {
    /// The chaos fault this request draws ([`StripeFake::set_chaos`]): a status kind (`429`,
    /// `500`) is the answer now, before anything is recorded (`Err`); the others come back,
    /// with how late a lost answer comes, for after recording.
    pub(super) fn draw_fault(&self) -> Result<Option<(&'static str, Duration)>, Reply> {
        let fault = self
            .chaos
            .as_ref()
            .and_then(|(chaos, lost)| chaos.draw().map(|kind| (kind, *lost)));
        match fault.and_then(|(kind, _)| kind.parse::<u16>().ok()) {
            Some(status) => Err(injected_failure(status)),
            None => Ok(fault),
        }
    }

    /// Replays, rejects, or marks the key in flight.
    pub(super) fn begin_idempotent(
        &mut self,
        key: &str,
        fingerprint: &[(String, String)],
    ) -> Result<(), Reply> {
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(stripe_error(
                400,
                "idempotency_error",
                None,
                &format!(
                    "Idempotency-Key is too long: {} characters (at most \
                     {MAX_IDEMPOTENCY_KEY_LEN}).",
                    key.len()
                ),
            ));
        }
        let now = self.now();
        let remembered = self
            .idempotency
            .get(key)
            .filter(|(at, _)| now - *at < DEDUP_WINDOW)
            .map(|(_, entry)| entry);
        match remembered {
            None => {
                let entry = IdempotencyEntry::InFlight {
                    fingerprint: fingerprint.to_vec(),
                };
                self.idempotency.insert(key.to_owned(), (now, entry));
                Ok(())
            }
            Some(IdempotencyEntry::Done {
                fingerprint: saved,
                reply,
                request_id,
            }) if saved.as_slice() == fingerprint => Err(reply
                .clone()
                .header("Idempotency-Key", key)
                .header("Idempotent-Replayed", "true")
                .header("Original-Request", request_id)),
            Some(IdempotencyEntry::InFlight { fingerprint: saved })
                if saved.as_slice() == fingerprint =>
            {
                Err(stripe_error(
                    409,
                    "idempotency_error",
                    None,
                    &format!(
                        "There is currently another in-progress request using this Idempotent Key \
                     (that probably means you submitted twice, and the other request is still \
                     going through): {key}. Please try again later."
                    ),
                ))
            }
            Some(_) => Err(stripe_error(
                400,
                "idempotency_error",
                None,
                &format!(
                    "Keys for idempotent requests can only be used with the same parameters they \
                     were first used with. Try using a key other than '{key}' if you meant to \
                     execute a different request."
                ),
            )),
        }
    }

    /// Dedups and records the event. Returns the reply to save for idempotent replay and the
    /// reply to send (they differ under `fail_after_record_next`).
    pub(super) fn execute(
        &mut self,
        params: &MeterEventParams,
        idempotency_key: Option<&str>,
    ) -> (Reply, Reply) {
        if let Some(identifier) = &params.identifier
            && self.knows(identifier)
        {
            let reply = duplicate_identifier(identifier);
            return (reply.clone(), reply);
        }
        let now = self.now();
        let identifier = params
            .identifier
            .clone()
            .unwrap_or_else(|| format!("fake_mev_{:016x}", next_sequence()));
        let timestamp = params.timestamp.unwrap_or(now.timestamp());
        self.identifiers.insert(identifier.clone(), now);
        self.events.push(RecordedMeterEvent {
            identifier: identifier.clone(),
            event_name: params.event_name.clone(),
            customer: params.customer.clone(),
            value: params.value,
            timestamp,
            idempotency_key: idempotency_key.map(str::to_owned),
        });
        if let Some(e) = self.events.last().cloned() {
            self.validate_later(&e);
        }
        let mut reply = Reply::json(
            200,
            &json!({
                "object": "billing.meter_event",
                "created": now.timestamp(),
                "event_name": params.event_name,
                "identifier": identifier,
                "livemode": false,
                "payload": params.payload,
                "timestamp": timestamp,
            }),
        );
        if let Some(key) = idempotency_key {
            reply.set_header("Idempotency-Key", key);
        }
        if self.fail_after_record > 0 {
            self.fail_after_record -= 1;
            return (reply, api_error(500));
        }
        (reply.clone(), reply)
    }
}

/// Parses and validates the form body of `POST /v1/billing/meter_events`.
pub(super) fn parse_meter_event(incoming: &Incoming, now: i64) -> Result<MeterEventParams, Reply> {
    let fields = form_fields(incoming)?;
    let mut event_name = None;
    let mut identifier = None;
    let mut timestamp = None;
    let mut payload = Map::new();
    for (key, value) in &fields {
        check_field(key, value)?;
        match key.as_str() {
            "event_name" => event_name = Some(value.clone()),
            "identifier" => identifier = Some(value.clone()),
            "timestamp" => timestamp = Some(value.clone()),
            _ => {
                if let Some(name) = payload_key(key) {
                    payload.insert(name.to_owned(), Value::String(value.clone()));
                }
            }
        }
    }
    let event_name = event_name.ok_or_else(|| missing("event_name"))?;
    let (customer, value) = payload_values(&payload)?;
    if let Some(identifier) = &identifier
        && identifier.chars().count() > MAX_IDENTIFIER_LEN
    {
        return Err(invalid_request(
            Some("parameter_invalid_string_too_long"),
            Some("identifier"),
            &format!(
                "Invalid identifier: must be at most {MAX_IDENTIFIER_LEN} characters (got {}).",
                identifier.chars().count()
            ),
        ));
    }
    let timestamp = timestamp
        .map(|raw| validate_timestamp(&raw, now))
        .transpose()?;
    let mut fingerprint = fields;
    fingerprint.sort();
    Ok(MeterEventParams {
        event_name,
        customer,
        value,
        identifier,
        timestamp,
        payload,
        fingerprint,
    })
}

/// The fields of a form-encoded UTF-8 body, in order.
fn form_fields(incoming: &Incoming) -> Result<Vec<(String, String)>, Reply> {
    let content_type = incoming.header(header::CONTENT_TYPE).unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type != "application/x-www-form-urlencoded" {
        return Err(invalid_request(
            None,
            None,
            &format!(
                "Invalid request: the body must be application/x-www-form-urlencoded, got \
                 Content-Type '{content_type}'."
            ),
        ));
    }
    let body = std::str::from_utf8(&incoming.body)
        .map_err(|_| invalid_request(None, None, "Invalid request: the body is not UTF-8."))?;
    parse_urlencoded(body).map_err(|e| {
        invalid_request(
            None,
            None,
            &format!("Invalid request: malformed form body ({e})."),
        )
    })
}

/// A known parameter with a value.
fn check_field(key: &str, value: &str) -> Result<(), Reply> {
    let known = matches!(key, "event_name" | "identifier" | "timestamp")
        || payload_key(key).is_some()
        || key == "expand[]"
        || key.starts_with("expand[");
    if !known {
        return Err(invalid_request(
            Some("parameter_unknown"),
            Some(key),
            &format!("Received unknown parameter: {key}"),
        ));
    }
    if value.is_empty() {
        return Err(invalid_request(
            Some("parameter_invalid_empty"),
            Some(key),
            &format!(
                "You passed an empty string for '{key}'. We assume empty values are an \
                 attempt to unset a parameter; however '{key}' cannot be unset. You should \
                 remove '{key}' from your request or supply a non-empty value."
            ),
        ));
    }
    Ok(())
}

/// `payload[stripe_customer_id]` and `payload[value]` (a whole number).
fn payload_values(payload: &Map<String, Value>) -> Result<(String, u64), Reply> {
    let customer = payload
        .get("stripe_customer_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| missing("payload[stripe_customer_id]"))?;
    let raw_value = payload
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("payload[value]"))?;
    let value = parse_whole_number(raw_value).ok_or_else(|| {
        invalid_request(
            Some("parameter_invalid_integer"),
            Some("payload[value]"),
            &format!(
                "Invalid payload[value]: '{raw_value}'. The meter event value must be a \
                 non-negative whole number."
            ),
        )
    })?;
    Ok((customer, value))
}

/// `payload[name]` → `name`.
pub(super) fn payload_key(key: &str) -> Option<&str> {
    key.strip_prefix("payload[")
        .and_then(|rest| rest.strip_suffix(']'))
        .filter(|name| !name.is_empty() && !name.contains(['[', ']']))
}

/// A non-negative whole number in plain decimal digits.
pub(super) fn parse_whole_number(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Unix seconds within the past 35 days and at most 5 minutes ahead of `now`.
pub(super) fn validate_timestamp(raw: &str, now: i64) -> Result<i64, Reply> {
    let timestamp: i64 = raw.trim().parse().map_err(|_| {
        invalid_request(
            Some("parameter_invalid_integer"),
            Some("timestamp"),
            &format!("Invalid integer: {raw}"),
        )
    })?;
    if timestamp < now - MAX_PAST_SECS {
        return Err(invalid_request(
            Some("timestamp_too_far_in_past"),
            Some("timestamp"),
            &format!(
                "The timestamp {timestamp} is too far in the past: meter event timestamps must \
                 be within the past 35 calendar days."
            ),
        ));
    }
    if timestamp > now + MAX_FUTURE_SECS {
        return Err(invalid_request(
            Some("timestamp_in_future"),
            Some("timestamp"),
            &format!(
                "The timestamp {timestamp} is too far in the future: meter event timestamps \
                 must be at most 5 minutes in the future."
            ),
        ));
    }
    Ok(timestamp)
}
