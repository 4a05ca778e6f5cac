//! A fake of Stripe's billing meter events API (`POST /v1/billing/meter_events`).
//!
//! A meter event request passes, in order:
//! 1. routing (anything else is Stripe's 404 "Unrecognized request URL");
//! 2. an injected failure from [`StripeFake::fail_next`] (nothing recorded);
//! 3. `Authorization: Bearer <secret key>` (401, the key masked in the message);
//! 4. the optional global rate limit per second (429);
//! 5. content type and parameter validation (400; not saved for idempotent replay, as Stripe
//!    saves no result for requests that fail validation);
//! 6. `Idempotency-Key`: a finished key with the same parameters replays the saved response with
//!    `Idempotent-Replayed: true`; other parameters give 400 `idempotency_error`; a key whose
//!    first request is still in flight gives 409;
//! 7. the per-customer concurrency slot (a second in-flight request for the customer gets 429);
//! 8. [`StripeFake::set_latency`] sleep while holding the slot;
//! 9. identifier dedup (400, `Stripe-Should-Retry: false`), else the event is recorded and 200 is
//!    answered, or 500 after recording with [`StripeFake::fail_after_record_next`].
//!
//! The v2 high-throughput path:
//! - `POST /v2/billing/meter_event_session` (secret key) issues a session token valid for
//!   [`StripeFake::set_session_ttl`] (15 minutes by default; [`StripeFake::expire_sessions`]
//!   ends every token now);
//! - `POST /v2/billing/meter_event_stream` (JSON, `Authorization: Bearer <session token>`; the
//!   secret key is refused) takes 1 to 100 events. Structural errors (not JSON, no `events`,
//!   more than 100) are 400; an expired token is 401 `billing_meter_event_session_expired`.
//!   Events are validated asynchronously as on Stripe: the request is answered 200 `{}` and an
//!   invalid event or a repeated identifier is dropped and listed in
//!   [`StripeFake::stream_errors`] (Stripe's later error report), never recorded twice. The
//!   per-customer concurrency limit of v1 does not apply. Injected failures, the rate limit and
//!   `fail_after_record_next` apply as for v1.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::faults::Chaos;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{
    FailPlan, FixedWindow, Incoming, RateDecision, RecordedRequest, Reply, ServerHandle,
    next_sequence, parse_urlencoded,
};

/// Longest `identifier` Stripe accepts.
pub const MAX_IDENTIFIER_LEN: usize = 100;
/// Longest `Idempotency-Key` Stripe accepts.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// How far in the past a meter event `timestamp` may be (35 days).
pub const MAX_PAST_SECS: i64 = 35 * 24 * 60 * 60;
/// How far in the future a meter event `timestamp` may be (5 minutes).
pub const MAX_FUTURE_SECS: i64 = 5 * 60;
/// How long Stripe remembers a meter event `identifier` (and an `Idempotency-Key`): about a
/// day. An identifier seen longer ago than this is accepted again as a new event.
pub const DEDUP_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// A meter event the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMeterEvent {
    /// The event's identifier (sent or generated).
    pub identifier: String,
    /// `event_name`.
    pub event_name: String,
    /// `payload[stripe_customer_id]`.
    pub customer: String,
    /// `payload[value]`.
    pub value: u64,
    /// Event time, Unix seconds (sent, or the fake's clock when absent).
    pub timestamp: i64,
    /// `Idempotency-Key` of the request that created it.
    pub idempotency_key: Option<String>,
}

/// A saved idempotent result, or a request still running under that key.
#[derive(Debug, Clone)]
enum IdempotencyEntry {
    InFlight {
        fingerprint: Vec<(String, String)>,
    },
    Done {
        fingerprint: Vec<(String, String)>,
        reply: Reply,
        request_id: String,
    },
}

#[derive(Debug)]
struct StripeState {
    secret_key: String,
    events: Vec<RecordedMeterEvent>,
    /// Identifiers recorded, with when (the fake's clock).
    identifiers: HashMap<String, chrono::DateTime<Utc>>,
    /// Idempotency keys, with when they were first used (the fake's clock).
    idempotency: HashMap<String, (chrono::DateTime<Utc>, IdempotencyEntry)>,
    /// How far the fake's clock is ahead of the real one ([`StripeFake::advance`]).
    clock_offset: chrono::Duration,
    in_flight_customers: HashSet<String>,
    requests: Vec<RecordedRequest>,
    rate: FixedWindow,
    fail: FailPlan,
    fail_after_record: usize,
    latency: Duration,
    /// Rate-based faults on `POST /v1/billing/meter_events` and how long a lost response
    /// keeps the client waiting.
    chaos: Option<(Arc<Chaos>, Duration)>,
    concurrency_violations: usize,
    sessions: HashMap<String, chrono::DateTime<Utc>>,
    session_ttl: chrono::Duration,
    sessions_created: usize,
    stream_batches: Vec<usize>,
    stream_errors: Vec<String>,
}

type Shared = Arc<Mutex<StripeState>>;

fn lock(state: &Shared) -> MutexGuard<'_, StripeState> {
    state.lock().expect("StripeFake state mutex poisoned")
}

/// A running fake Stripe server. Cheap to clone; the server stops when the last clone is dropped
/// or on [`StripeFake::shutdown`].
#[derive(Debug, Clone)]
pub struct StripeFake {
    state: Shared,
    server: Arc<ServerHandle>,
}

impl StripeFake {
    /// Starts a fake on `127.0.0.1:<free port>` accepting `Authorization: Bearer <secret_key>`.
    ///
    /// # Panics
    /// If no loopback port can be bound (see [`StripeFake::try_start`]).
    pub async fn start(secret_key: &str) -> Self {
        Self::try_start(secret_key)
            .await
            .expect("StripeFake: bind 127.0.0.1:0")
    }

    /// Like [`StripeFake::start`], returning the bind error instead of panicking.
    pub async fn try_start(secret_key: &str) -> std::io::Result<Self> {
        let state: Shared = Arc::new(Mutex::new(StripeState {
            secret_key: secret_key.to_owned(),
            events: Vec::new(),
            identifiers: HashMap::new(),
            clock_offset: chrono::Duration::zero(),
            idempotency: HashMap::new(),
            in_flight_customers: HashSet::new(),
            requests: Vec::new(),
            rate: FixedWindow::new(Duration::from_secs(1)),
            fail: FailPlan::default(),
            fail_after_record: 0,
            latency: Duration::ZERO,
            chaos: None,
            concurrency_violations: 0,
            sessions: HashMap::new(),
            session_ttl: chrono::Duration::minutes(15),
            sessions_created: 0,
            stream_batches: Vec::new(),
            stream_errors: Vec::new(),
        }));
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = Arc::new(ServerHandle::spawn(router).await?);
        Ok(Self { state, server })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash), for `STRIPE_API_BASE`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops the server (graceful: in-flight requests finish, no new connections are accepted).
    pub fn shutdown(&self) {
        self.server.shutdown();
    }

    /// Stops the server and waits until it no longer serves.
    pub async fn shutdown_and_wait(&self) {
        self.server.shutdown_and_wait().await;
    }

    /// Limits authenticated requests per fixed 1-second window (None: unlimited, the default);
    /// over it → 429 `rate_limit` with `Stripe-Should-Retry: true`.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        lock(&self.state).rate.set_limit(per_second);
    }

    /// The next `n` requests to a known route are answered with `status` (meant for 429 or 5xx)
    /// before anything is recorded, with a Stripe error body and `Stripe-Should-Retry: true`
    /// (for 429 and 5xx).
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.state).fail = FailPlan::new(n, status);
    }

    /// The next `n` meter events that would succeed are recorded, then answered with 500, as if
    /// the response was lost. The success is what an `Idempotency-Key` retry replays.
    pub fn fail_after_record_next(&self, n: usize) {
        lock(&self.state).fail_after_record = n;
    }

    /// How long a valid meter event request holds its customer's in-flight slot before being
    /// answered (Duration::ZERO: no wait, the default).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Rate-based faults on `POST /v1/billing/meter_events` (None: off), see
    /// [`STRIPE_KINDS`]: `429` and `500` before anything is recorded; `lost_response`: the
    /// event is recorded and the answer comes only after `lost` (past the client's timeout);
    /// `duplicate_400`: the event is recorded and answered with the 400
    /// `resource_already_exists` a retry of an already recorded event gets.
    pub fn set_chaos(&self, chaos: Option<Arc<Chaos>>, lost: Duration) {
        lock(&self.state).chaos = chaos.map(|c| (c, lost));
    }

    /// Accepted meter events, in acceptance order.
    pub fn events(&self) -> Vec<RecordedMeterEvent> {
        lock(&self.state).events.clone()
    }

    /// Sum of accepted event values per customer.
    pub fn totals_by_customer(&self) -> BTreeMap<String, u64> {
        let state = lock(&self.state);
        let mut totals = BTreeMap::new();
        for event in &state.events {
            *totals.entry(event.customer.clone()).or_insert(0) += event.value;
        }
        totals
    }

    /// Every request answered so far, in completion order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Number of requests answered so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state).requests.len()
    }

    /// Forgets the recorded requests (events, identifiers and idempotency keys stay).
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// Requests rejected because another request for the same customer was in flight.
    pub fn concurrency_violations(&self) -> usize {
        lock(&self.state).concurrency_violations
    }

    /// How long new meter event session tokens live (15 minutes by default).
    pub fn set_session_ttl(&self, ttl: chrono::Duration) {
        lock(&self.state).session_ttl = ttl;
    }

    /// Moves the fake's clock forward by `by`: identifiers and idempotency keys older than
    /// [`DEDUP_WINDOW`] are forgotten, sessions expire, timestamps are judged against it.
    pub fn advance(&self, by: chrono::Duration) {
        lock(&self.state).clock_offset += by;
    }

    /// The fake's clock: the real time plus what [`StripeFake::advance`] added.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        lock(&self.state).now()
    }

    /// Ends every session token issued so far (as if 15 minutes had passed).
    pub fn expire_sessions(&self) {
        let mut st = lock(&self.state);
        let past = st.now() - chrono::Duration::seconds(1);
        for expiry in st.sessions.values_mut() {
            *expiry = past;
        }
    }

    /// Meter event sessions created so far.
    pub fn sessions_created(&self) -> usize {
        lock(&self.state).sessions_created
    }

    /// The number of events of each accepted stream request, in order.
    pub fn stream_batches(&self) -> Vec<usize> {
        lock(&self.state).stream_batches.clone()
    }

    /// Stream events dropped by the asynchronous validation (what Stripe reports later through
    /// its error reports): invalid events and repeated identifiers.
    pub fn stream_errors(&self) -> Vec<String> {
        lock(&self.state).stream_errors.clone()
    }
}

async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let incoming = match Incoming::read(request).await {
        Ok(incoming) => incoming,
        Err(_) => {
            return stripe_error(
                413,
                "invalid_request_error",
                None,
                "Request body too large.",
            )
            .into_response();
        }
    };
    // A task of its own: a client that times out does not cancel the request, as on Stripe.
    match tokio::spawn(process(state, incoming)).await {
        Ok(reply) => reply.into_response(),
        Err(_) => api_error(500).into_response(),
    }
}

async fn process(state: Shared, incoming: Incoming) -> Reply {
    let (reply, authenticated) = match Route::parse(&incoming.method, &incoming.path) {
        Some(Route::CreateMeterEvent) => create_meter_event(&state, &incoming).await,
        Some(Route::CreateMeterEventSession) => create_session(&state, &incoming),
        Some(Route::MeterEventStream) => meter_event_stream(&state, &incoming).await,
        None => (
            stripe_error(
                404,
                "invalid_request_error",
                None,
                &format!(
                    "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we \
                     can help at https://support.stripe.com/.",
                    incoming.method, incoming.path
                ),
            ),
            false,
        ),
    };
    let reply = reply.header("Request-Id", format!("req_fake{:014x}", next_sequence()));
    lock(&state)
        .requests
        .push(incoming.record(reply.status, authenticated));
    reply
}

/// The endpoints the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `POST /v1/billing/meter_events`.
    CreateMeterEvent,
    /// `POST /v2/billing/meter_event_session`.
    CreateMeterEventSession,
    /// `POST /v2/billing/meter_event_stream`.
    MeterEventStream,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        match (method, path) {
            (&Method::POST, "/v1/billing/meter_events") => Some(Self::CreateMeterEvent),
            (&Method::POST, "/v2/billing/meter_event_session") => {
                Some(Self::CreateMeterEventSession)
            }
            (&Method::POST, "/v2/billing/meter_event_stream") => Some(Self::MeterEventStream),
            _ => None,
        }
    }
}

/// Most events one stream request takes.
pub const MAX_STREAM_EVENTS: usize = 100;

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `POST /v2/billing/meter_event_session`: a session token for the stream.
fn create_session(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
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
async fn meter_event_stream(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    let events = {
        let mut st = lock(state);
        if let Some(status) = st.fail.take() {
            return (injected_failure(status), false);
        }
        let token = incoming
            .header(header::AUTHORIZATION)
            .map(str::trim)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned())
            .unwrap_or_default();
        match st.sessions.get(&token) {
            Some(expires_at) if *expires_at > st.now() => {}
            Some(_) => {
                return (
                    stripe_error(
                        401,
                        "invalid_request_error",
                        Some("billing_meter_event_session_expired"),
                        "The temporary session token has expired.",
                    ),
                    false,
                );
            }
            None => {
                return (
                    stripe_error(
                        401,
                        "invalid_request_error",
                        None,
                        "The meter event stream needs the authentication token of a meter event session \
                         (POST /v2/billing/meter_event_session), not an API key.",
                    ),
                    false,
                );
            }
        }
        if let RateDecision::Limited { .. } = st.rate.check() {
            return (rate_limited(), true);
        }
        let body: Value = match serde_json::from_slice(&incoming.body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    invalid_request(None, None, &format!("Invalid JSON body: {e}")),
                    true,
                );
            }
        };
        let Some(events) = body.get("events").and_then(Value::as_array).cloned() else {
            return (missing("events"), true);
        };
        if events.is_empty() || events.len() > MAX_STREAM_EVENTS {
            return (
                invalid_request(
                    Some("parameter_invalid"),
                    Some("events"),
                    &format!(
                        "events must hold 1 to {MAX_STREAM_EVENTS} events, got {}.",
                        events.len()
                    ),
                ),
                true,
            );
        }
        if let Some(i) = events.iter().position(|e| !e.is_object()) {
            return (
                invalid_request(
                    Some("parameter_invalid"),
                    Some(&format!("events[{i}]")),
                    "Each event must be an object.",
                ),
                true,
            );
        }
        events
    };

    let latency = lock(state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let mut st = lock(state);
    let now = st.now();
    for event in &events {
        match parse_stream_event(event, now.timestamp()) {
            Err(problem) => st.stream_errors.push(problem),
            Ok(e) if st.knows(&e.identifier) => st.stream_errors.push(format!(
                "an event already exists with identifier {}",
                e.identifier
            )),
            Ok(e) => {
                st.identifiers.insert(e.identifier.clone(), now);
                st.events.push(e);
            }
        }
    }
    st.stream_batches.push(events.len());
    if st.fail_after_record > 0 {
        st.fail_after_record -= 1;
        return (api_error(500), true);
    }
    (Reply::json(200, &json!({})), true)
}

/// The asynchronous validation of one stream event.
fn parse_stream_event(event: &Value, now: i64) -> Result<RecordedMeterEvent, String> {
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

/// A validated `POST /v1/billing/meter_events` request.
#[derive(Debug, Clone)]
struct MeterEventParams {
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

async fn create_meter_event(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    // Faults, auth, rate limit, validation, idempotency and the customer slot: under one lock.
    let (params, idempotency_key, fault) = {
        let mut st = lock(state);
        if let Some(status) = st.fail.take() {
            return (injected_failure(status), false);
        }
        let fault = st
            .chaos
            .as_ref()
            .and_then(|(chaos, lost)| chaos.draw().map(|kind| (kind, *lost)));
        if let Some(status) = fault.and_then(|(kind, _)| kind.parse::<u16>().ok()) {
            return (injected_failure(status), false);
        }
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
    /// The fake's clock.
    fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// Whether `identifier` was recorded within the dedup window.
    fn knows(&self, identifier: &str) -> bool {
        self.identifiers
            .get(identifier)
            .is_some_and(|at| self.now() - *at < DEDUP_WINDOW)
    }

    fn authenticate(&self, incoming: &Incoming) -> Result<(), Reply> {
        let provided = incoming
            .header(header::AUTHORIZATION)
            .map(str::trim)
            .and_then(|value| {
                value
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, key)| key.trim())
            })
            .filter(|key| !key.is_empty());
        match provided {
            Some(key) if key == self.secret_key => Ok(()),
            Some(key) => Err(stripe_error(
                401,
                "invalid_request_error",
                None,
                &format!("Invalid API Key provided: {}", mask_key(key)),
            )),
            None => Err(stripe_error(
                401,
                "invalid_request_error",
                None,
                "You did not provide an API key. You need to provide your API key in the \
                 Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
                 YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, \
                 or we can help at https://support.stripe.com/.",
            )),
        }
    }

    /// Replays, rejects, or marks the key in flight.
    fn begin_idempotent(
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
    fn execute(
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
fn parse_meter_event(incoming: &Incoming, now: i64) -> Result<MeterEventParams, Reply> {
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
    let fields = parse_urlencoded(body).map_err(|e| {
        invalid_request(
            None,
            None,
            &format!("Invalid request: malformed form body ({e})."),
        )
    })?;

    let mut event_name = None;
    let mut identifier = None;
    let mut timestamp = None;
    let mut payload = Map::new();
    for (key, value) in &fields {
        let known = matches!(key.as_str(), "event_name" | "identifier" | "timestamp")
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

/// `payload[name]` → `name`.
fn payload_key(key: &str) -> Option<&str> {
    key.strip_prefix("payload[")
        .and_then(|rest| rest.strip_suffix(']'))
        .filter(|name| !name.is_empty() && !name.contains(['[', ']']))
}

/// A non-negative whole number in plain decimal digits.
fn parse_whole_number(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Unix seconds within the past 35 days and at most 5 minutes ahead of `now`.
fn validate_timestamp(raw: &str, now: i64) -> Result<i64, Reply> {
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

/// Masks an API key like Stripe: keeps the `sk_test_`-style prefix and the last 4 characters.
fn mask_key(key: &str) -> String {
    const PREFIXES: &[&str] = &[
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_",
    ];
    let prefix = PREFIXES
        .iter()
        .find(|prefix| key.starts_with(*prefix))
        .copied()
        .unwrap_or("");
    let rest: Vec<char> = key[prefix.len()..].chars().collect();
    if rest.len() > 4 {
        let last4: String = rest[rest.len() - 4..].iter().collect();
        format!("{prefix}****{last4}")
    } else {
        format!("{prefix}****")
    }
}

/// `{"error": {...}}` in Stripe's shape.
fn stripe_error(status: u16, r#type: &str, code: Option<&str>, message: &str) -> Reply {
    stripe_error_with_param(status, r#type, code, None, message)
}

fn stripe_error_with_param(
    status: u16,
    r#type: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Reply {
    let mut error = Map::new();
    error.insert("type".to_owned(), json!(r#type));
    if let Some(code) = code {
        error.insert("code".to_owned(), json!(code));
        error.insert(
            "doc_url".to_owned(),
            json!(format!(
                "https://stripe.com/docs/error-codes/{}",
                code.replace('_', "-")
            )),
        );
    }
    if let Some(param) = param {
        error.insert("param".to_owned(), json!(param));
    }
    error.insert("message".to_owned(), json!(message));
    Reply::json(status, &json!({ "error": error }))
}

fn invalid_request(code: Option<&str>, param: Option<&str>, message: &str) -> Reply {
    stripe_error_with_param(400, "invalid_request_error", code, param, message)
}

fn missing(param: &str) -> Reply {
    invalid_request(
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}

fn api_error(status: u16) -> Reply {
    stripe_error(
        status,
        "api_error",
        None,
        "An unknown error occurred while processing your request. Please retry.",
    )
    .header("Stripe-Should-Retry", "true")
}

/// Stripe's answer to an identifier it already recorded.
fn duplicate_identifier(identifier: &str) -> Reply {
    stripe_error(
        400,
        "invalid_request_error",
        Some("resource_already_exists"),
        &format!("An event already exists with identifier {identifier}."),
    )
    .header("Stripe-Should-Retry", "false")
}

fn rate_limited() -> Reply {
    stripe_error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        "Request rate limit exceeded. You can learn more about rate limits here \
         https://stripe.com/docs/rate-limits.",
    )
    .header("Stripe-Should-Retry", "true")
}

fn concurrency_limited(customer: &str) -> Reply {
    stripe_error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        &format!(
            "Too many concurrent requests: a meter event for customer {customer} is already \
             being processed. Only one concurrent meter event request per customer is allowed; \
             retry after it completes."
        ),
    )
    .header("Stripe-Should-Retry", "true")
}

fn injected_failure(status: u16) -> Reply {
    match status {
        429 => rate_limited(),
        500..=599 => api_error(status),
        _ => stripe_error(
            status,
            "invalid_request_error",
            None,
            "Request failed (injected by StripeFake::fail_next).",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    const KEY: &str = "sk_test_51FakeSecretKey00001234";

    struct Answer {
        status: u16,
        headers: HeaderMap,
        body: Value,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.expect("JSON body");
        Answer {
            status,
            headers,
            body,
        }
    }

    fn form(customer: &str, value: &str, identifier: Option<&str>) -> Vec<(String, String)> {
        let mut fields = vec![
            ("event_name".to_owned(), "llm_credits".to_owned()),
            (
                "payload[stripe_customer_id]".to_owned(),
                customer.to_owned(),
            ),
            ("payload[value]".to_owned(), value.to_owned()),
        ];
        if let Some(identifier) = identifier {
            fields.push(("identifier".to_owned(), identifier.to_owned()));
        }
        fields
    }

    async fn post(
        fake: &StripeFake,
        fields: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Answer {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/billing/meter_events", fake.base_url()))
            .bearer_auth(KEY)
            .form(fields);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        send(request).await
    }

    #[test]
    fn keys_are_masked_like_stripe() {
        assert_eq!(mask_key("sk_test_abcdef1234"), "sk_test_****1234");
        assert_eq!(mask_key("sk_live_xy"), "sk_live_****");
        assert_eq!(mask_key("whatever9876"), "****9876");
    }

    #[tokio::test]
    async fn auth_requires_the_bearer_secret_key() {
        let fake = StripeFake::start(KEY).await;
        let url = format!("{}/v1/billing/meter_events", fake.base_url());
        let client = reqwest::Client::new();
        let fields = form("cus_1", "1", None);

        let none = send(client.post(&url).form(&fields)).await;
        assert_eq!(none.status, 401);
        assert_eq!(none.body["error"]["type"], "invalid_request_error");
        assert!(
            none.body["error"]["message"]
                .as_str()
                .expect("message")
                .starts_with("You did not provide an API key")
        );

        let wrong_key = "sk_test_51WrongSecretKey0009876";
        let wrong = send(client.post(&url).bearer_auth(wrong_key).form(&fields)).await;
        assert_eq!(wrong.status, 401);
        let message = wrong.body["error"]["message"].as_str().expect("message");
        assert_eq!(message, "Invalid API Key provided: sk_test_****9876");
        assert!(!wrong.body.to_string().contains(wrong_key), "key echoed");

        let basic = send(client.post(&url).basic_auth(KEY, Some("")).form(&fields)).await;
        assert_eq!(basic.status, 401);

        let ok = send(client.post(&url).bearer_auth(KEY).form(&fields)).await;
        assert_eq!(ok.status, 200);
        assert_eq!(fake.events().len(), 1);
        let recorded = fake.requests();
        assert_eq!(
            recorded
                .iter()
                .map(|r| (r.status, r.authenticated))
                .collect::<Vec<_>>(),
            [(401, false), (401, false), (401, false), (200, true)]
        );
    }

    #[tokio::test]
    async fn meter_event_form_is_parsed_and_validated() {
        let fake = StripeFake::start(KEY).await;
        let now = Utc::now().timestamp();
        let mut fields = form("cus_123", "25", Some("trace-1:r1"));
        fields.push(("timestamp".to_owned(), (now - 60).to_string()));
        let ok = post(&fake, &fields, None).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        let created = ok.body["created"].as_i64().expect("created");
        assert!((now - 5..=now + 5).contains(&created));
        assert_eq!(
            ok.body,
            json!({
                "object": "billing.meter_event",
                "created": created,
                "event_name": "llm_credits",
                "identifier": "trace-1:r1",
                "livemode": false,
                "payload": {"stripe_customer_id": "cus_123", "value": "25"},
                "timestamp": now - 60,
            })
        );
        assert!(
            ok.header("request-id")
                .is_some_and(|id| id.starts_with("req_"))
        );
        assert_eq!(
            fake.events(),
            [RecordedMeterEvent {
                identifier: "trace-1:r1".to_owned(),
                event_name: "llm_credits".to_owned(),
                customer: "cus_123".to_owned(),
                value: 25,
                timestamp: now - 60,
                idempotency_key: None,
            }]
        );
        let recorded = &fake.requests()[0];
        assert_eq!(
            recorded.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert!(
            recorded
                .form()
                .contains(&("payload[value]".to_owned(), "25".to_owned()))
        );

        // Identifier generated when absent; timestamp defaults to now.
        let generated = post(&fake, &form("cus_123", "5", None), None).await;
        assert_eq!(generated.status, 200);
        assert!(
            !generated.body["identifier"]
                .as_str()
                .expect("id")
                .is_empty()
        );
        assert_eq!(
            fake.totals_by_customer(),
            BTreeMap::from([("cus_123".to_owned(), 30)])
        );

        // JSON is not accepted.
        let json_body = send(
            reqwest::Client::new()
                .post(format!("{}/v1/billing/meter_events", fake.base_url()))
                .bearer_auth(KEY)
                .json(&json!({"event_name": "llm_credits"})),
        )
        .await;
        assert_eq!(json_body.status, 400);
        assert_eq!(json_body.body["error"]["type"], "invalid_request_error");

        let too_long = "x".repeat(101);
        let mut unknown = form("cus_123", "1", None);
        unknown.push(("customer".to_owned(), "cus_123".to_owned()));
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (form("cus_123", "1", None)[1..].to_vec(), "event_name"),
            (
                vec![
                    ("event_name".to_owned(), "llm_credits".to_owned()),
                    ("payload[value]".to_owned(), "1".to_owned()),
                ],
                "payload[stripe_customer_id]",
            ),
            (form("cus_123", "1", None)[..2].to_vec(), "payload[value]"),
            (form("cus_123", "1.5", None), "payload[value]"),
            (form("cus_123", "-3", None), "payload[value]"),
            (form("cus_123", "ten", None), "payload[value]"),
            (form("cus_123", "", None), "payload[value]"),
            (form("cus_123", "1", Some(&too_long)), "identifier"),
            (unknown, "customer"),
        ];
        for (fields, param) in cases {
            let bad = post(&fake, &fields, None).await;
            assert_eq!(bad.status, 400, "{fields:?} → {}", bad.body);
            assert_eq!(bad.body["error"]["type"], "invalid_request_error");
            assert_eq!(bad.body["error"]["param"], param, "{}", bad.body);
        }
        assert_eq!(fake.events().len(), 2, "rejected requests record nothing");
        // An identifier of exactly 100 characters is fine.
        let max = post(&fake, &form("cus_123", "1", Some(&"y".repeat(100))), None).await;
        assert_eq!(max.status, 200);
    }

    #[tokio::test]
    async fn duplicate_identifier_is_rejected_and_not_recorded() {
        let fake = StripeFake::start(KEY).await;
        let first = post(&fake, &form("cus_1", "10", Some("trace-9:r1")), None).await;
        assert_eq!(first.status, 200);
        let again = post(&fake, &form("cus_1", "10", Some("trace-9:r1")), None).await;
        assert_eq!(again.status, 400);
        assert_eq!(again.header("stripe-should-retry"), Some("false"));
        assert_eq!(again.body["error"]["type"], "invalid_request_error");
        assert!(again.body["error"]["code"].is_string());
        assert_eq!(
            again.body["error"]["message"],
            "An event already exists with identifier trace-9:r1."
        );
        assert_eq!(fake.events().len(), 1);
        assert_eq!(fake.totals_by_customer()["cus_1"], 10);
    }

    #[tokio::test]
    async fn identifiers_and_idempotency_keys_are_forgotten_after_the_dedup_window() {
        let fake = StripeFake::start(KEY).await;
        let fields = form("cus_1", "10", Some("trace-9:r1"));
        assert_eq!(post(&fake, &fields, Some("trace-9:r1")).await.status, 200);
        fake.advance(DEDUP_WINDOW - chrono::Duration::minutes(1));
        let within = post(&fake, &fields, None).await;
        assert_eq!(within.status, 400, "still remembered");
        let replay = post(&fake, &fields, Some("trace-9:r1")).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(fake.events().len(), 1);
        fake.advance(chrono::Duration::minutes(2));
        let after = post(&fake, &fields, Some("trace-9:r1")).await;
        assert_eq!(after.status, 200, "forgotten: a new event");
        assert_eq!(after.header("idempotent-replayed"), None);
        assert_eq!(fake.events().len(), 2);
        assert_eq!(fake.totals_by_customer()["cus_1"], 20);
    }

    #[tokio::test]
    async fn idempotency_key_replays_the_first_response() {
        let fake = StripeFake::start(KEY).await;
        let fields = form("cus_1", "7", Some("trace-1:r1"));
        let first = post(&fake, &fields, Some("key-1")).await;
        assert_eq!(first.status, 200);
        assert!(first.header("idempotent-replayed").is_none());

        let replay = post(&fake, &fields, Some("key-1")).await;
        assert_eq!(replay.status, 200);
        assert_eq!(replay.body, first.body);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(fake.events().len(), 1);
        assert_eq!(fake.events()[0].idempotency_key.as_deref(), Some("key-1"));

        let different = post(
            &fake,
            &form("cus_1", "8", Some("trace-1:r1")),
            Some("key-1"),
        )
        .await;
        assert_eq!(different.status, 400);
        assert_eq!(different.body["error"]["type"], "idempotency_error");

        let too_long = "k".repeat(256);
        let long = post(&fake, &form("cus_1", "1", None), Some(&too_long)).await;
        assert_eq!(long.status, 400);
        let max = post(&fake, &form("cus_1", "1", None), Some(&"k".repeat(255))).await;
        assert_eq!(max.status, 200);

        // A failure before execution (validation) is not saved: the key stays usable.
        let invalid = post(&fake, &form("cus_2", "x", None), Some("key-2")).await;
        assert_eq!(invalid.status, 400);
        let valid = post(&fake, &form("cus_2", "1", None), Some("key-2")).await;
        assert_eq!(valid.status, 200);
        assert!(valid.header("idempotent-replayed").is_none());
        assert_eq!(fake.events().len(), 3);
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_customer_get_429() {
        let fake = StripeFake::start(KEY).await;
        fake.set_latency(Duration::from_millis(300));
        let (form_a, form_b) = (form("cus_1", "1", Some("a")), form("cus_1", "1", Some("b")));
        let (a, b) = tokio::join!(post(&fake, &form_a, None), post(&fake, &form_b, None));
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 429]);
        let limited = if a.status == 429 { &a } else { &b };
        assert_eq!(limited.header("stripe-should-retry"), Some("true"));
        assert_eq!(limited.body["error"]["type"], "invalid_request_error");
        assert_eq!(limited.body["error"]["code"], "rate_limit");
        assert!(
            limited.body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("concurrent")
        );
        assert_eq!(fake.concurrency_violations(), 1);
        assert_eq!(fake.events().len(), 1);

        // Different customers in parallel are fine, and the slot is released afterwards.
        let (form_c, form_d) = (form("cus_2", "1", Some("c")), form("cus_3", "1", Some("d")));
        let (c, d) = tokio::join!(post(&fake, &form_c, None), post(&fake, &form_d, None));
        assert_eq!((c.status, d.status), (200, 200));
        let e = post(&fake, &form("cus_1", "1", Some("e")), None).await;
        assert_eq!(e.status, 200);
        assert_eq!(fake.concurrency_violations(), 1);
    }

    #[tokio::test]
    async fn timestamp_must_be_within_35_days_and_5_minutes() {
        let fake = StripeFake::start(KEY).await;
        let now = Utc::now().timestamp();
        let day = 24 * 60 * 60;
        for (offset, expected) in [
            (-36 * day, 400),
            (-34 * day, 200),
            (10 * 60, 400),
            (4 * 60, 200),
        ] {
            let mut fields = form("cus_1", "1", None);
            fields.push(("timestamp".to_owned(), (now + offset).to_string()));
            let answer = post(&fake, &fields, None).await;
            assert_eq!(answer.status, expected, "offset {offset}: {}", answer.body);
            if expected == 400 {
                assert_eq!(answer.body["error"]["type"], "invalid_request_error");
                assert_eq!(answer.body["error"]["param"], "timestamp");
                assert!(
                    answer.body["error"]["message"]
                        .as_str()
                        .expect("message")
                        .contains("timestamp")
                );
            }
        }
        let mut fields = form("cus_1", "1", None);
        fields.push(("timestamp".to_owned(), "yesterday".to_owned()));
        assert_eq!(post(&fake, &fields, None).await.status, 400);
        assert_eq!(fake.events().len(), 2);
    }

    #[tokio::test]
    async fn fail_next_and_fail_after_record() {
        let fake = StripeFake::start(KEY).await;
        fake.fail_next(2, 500);
        for _ in 0..2 {
            let failed = post(&fake, &form("cus_1", "3", Some("t1:r1")), Some("k1")).await;
            assert_eq!(failed.status, 500);
            assert_eq!(failed.header("stripe-should-retry"), Some("true"));
            assert_eq!(failed.body["error"]["type"], "api_error");
        }
        assert!(
            fake.events().is_empty(),
            "nothing recorded before the failure"
        );
        let ok = post(&fake, &form("cus_1", "3", Some("t1:r1")), Some("k1")).await;
        assert_eq!(ok.status, 200);
        assert!(ok.header("idempotent-replayed").is_none());

        fake.fail_next(1, 429);
        let limited = post(&fake, &form("cus_1", "1", None), None).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("stripe-should-retry"), Some("true"));

        // The response is lost after the event was recorded.
        fake.fail_after_record_next(1);
        let lost = post(&fake, &form("cus_1", "4", Some("t2:r1")), Some("k2")).await;
        assert_eq!(lost.status, 500);
        assert_eq!(fake.events().len(), 2, "the event exists anyway");
        // Retrying with the same key replays the success; without it, the identifier dedups.
        let retried = post(&fake, &form("cus_1", "4", Some("t2:r1")), Some("k2")).await;
        assert_eq!(retried.status, 200);
        assert_eq!(retried.header("idempotent-replayed"), Some("true"));
        assert_eq!(retried.body["identifier"], "t2:r1");
        let fresh = post(&fake, &form("cus_1", "4", Some("t2:r1")), Some("k3")).await;
        assert_eq!(fresh.status, 400);
        assert_eq!(fake.events().len(), 2);
        assert_eq!(fake.totals_by_customer()["cus_1"], 7);
    }

    #[tokio::test]
    async fn global_rate_limit_and_unknown_routes() {
        let fake = StripeFake::start(KEY).await;
        fake.set_rate_limit(Some(2));
        let mut statuses = Vec::new();
        for i in 0..3 {
            let answer = post(&fake, &form(&format!("cus_{i}"), "1", None), None).await;
            if answer.status == 429 {
                assert_eq!(answer.header("stripe-should-retry"), Some("true"));
                assert_eq!(answer.body["error"]["code"], "rate_limit");
            }
            statuses.push(answer.status);
        }
        assert_eq!(statuses, [200, 200, 429]);
        fake.set_rate_limit(None);

        let unknown = send(
            reqwest::Client::new()
                .get(format!("{}/v1/billing/meter_events", fake.base_url()))
                .bearer_auth(KEY),
        )
        .await;
        assert_eq!(unknown.status, 404);
        assert!(
            unknown.body["error"]["message"]
                .as_str()
                .expect("message")
                .starts_with("Unrecognized request URL (GET: /v1/billing/meter_events)")
        );

        let base = fake.base_url();
        fake.shutdown_and_wait().await;
        let after = reqwest::Client::new()
            .post(format!("{base}/v1/billing/meter_events"))
            .send()
            .await;
        assert!(after.is_err(), "server still serving after shutdown");
    }
    async fn new_session(fake: &StripeFake) -> Answer {
        send(
            reqwest::Client::new()
                .post(format!(
                    "{}/v2/billing/meter_event_session",
                    fake.base_url()
                ))
                .bearer_auth(KEY)
                .json(&json!({})),
        )
        .await
    }

    async fn stream(fake: &StripeFake, token: &str, events: Value) -> Answer {
        send(
            reqwest::Client::new()
                .post(format!("{}/v2/billing/meter_event_stream", fake.base_url()))
                .bearer_auth(token)
                .json(&json!({ "events": events })),
        )
        .await
    }

    fn stream_event(identifier: &str, customer: &str, value: &str) -> Value {
        json!({
            "event_name": "llm_credits",
            "identifier": identifier,
            "timestamp": rfc3339(Utc::now() - chrono::Duration::minutes(1)),
            "payload": {"stripe_customer_id": customer, "value": value},
        })
    }

    #[tokio::test]
    async fn v2_sessions_expire_and_the_stream_needs_their_token() {
        let fake = StripeFake::start(KEY).await;
        let session = new_session(&fake).await;
        assert_eq!(session.status, 200, "{}", session.body);
        assert_eq!(session.body["object"], "v2.billing.meter_event_session");
        let token = session.body["authentication_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let created = chrono::DateTime::parse_from_rfc3339(
            session.body["created"].as_str().expect("created"),
        )
        .expect("rfc3339");
        let expires = chrono::DateTime::parse_from_rfc3339(
            session.body["expires_at"].as_str().expect("expires_at"),
        )
        .expect("rfc3339");
        assert_eq!(expires - created, chrono::Duration::minutes(15));

        // The secret key is not a session token; no key at all is not either.
        let with_key = stream(&fake, KEY, json!([stream_event("a", "cus_1", "1")])).await;
        assert_eq!(with_key.status, 401);
        let unauthenticated = send(
            reqwest::Client::new()
                .post(format!(
                    "{}/v2/billing/meter_event_session",
                    fake.base_url()
                ))
                .json(&json!({})),
        )
        .await;
        assert_eq!(unauthenticated.status, 401);

        let ok = stream(&fake, &token, json!([stream_event("a", "cus_1", "1")])).await;
        assert_eq!((ok.status, ok.body.clone()), (200, json!({})));
        fake.expire_sessions();
        let expired = stream(&fake, &token, json!([stream_event("b", "cus_1", "1")])).await;
        assert_eq!(expired.status, 401);
        assert_eq!(
            expired.body["error"]["code"],
            "billing_meter_event_session_expired"
        );
        assert_eq!(fake.events().len(), 1);
        assert_eq!(fake.sessions_created(), 1);
    }

    #[tokio::test]
    async fn v2_stream_limits_dedups_and_validates_asynchronously() {
        let fake = StripeFake::start(KEY).await;
        let token = new_session(&fake).await.body["authentication_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let many: Vec<Value> = (0..101)
            .map(|i| stream_event(&format!("e{i}"), "cus_1", "1"))
            .collect();
        let too_many = stream(&fake, &token, json!(many)).await;
        assert_eq!(too_many.status, 400);
        assert_eq!(too_many.body["error"]["param"], "events");
        let empty = stream(&fake, &token, json!([])).await;
        assert_eq!(empty.status, 400);
        assert!(fake.events().is_empty());

        let hundred = stream(&fake, &token, json!(many[..100].to_vec())).await;
        assert_eq!(hundred.status, 200);
        assert_eq!(fake.events().len(), 100);
        // A repeat identifier and an invalid value: accepted, dropped, reported.
        let mixed = stream(
            &fake,
            &token,
            json!([
                stream_event("e0", "cus_1", "1"),
                stream_event("x1", "cus_1", "1.5"),
                stream_event("x2", "cus_2", "7"),
            ]),
        )
        .await;
        assert_eq!(mixed.status, 200);
        assert_eq!(fake.events().len(), 101);
        assert_eq!(fake.stream_errors().len(), 2, "{:?}", fake.stream_errors());
        assert_eq!(fake.stream_batches(), vec![100, 3]);
        assert_eq!(fake.totals_by_customer()["cus_2"], 7);

        // Many requests of one customer at once: no per-customer limit on the stream.
        fake.set_latency(Duration::from_millis(100));
        let (a, b) = tokio::join!(
            stream(&fake, &token, json!([stream_event("c1", "cus_1", "1")])),
            stream(&fake, &token, json!([stream_event("c2", "cus_1", "1")])),
        );
        assert_eq!((a.status, b.status), (200, 200));
        assert_eq!(fake.concurrency_violations(), 0);

        fake.set_rate_limit(Some(0));
        let limited = stream(&fake, &token, json!([stream_event("r1", "cus_1", "1")])).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("stripe-should-retry"), Some("true"));
    }
}
