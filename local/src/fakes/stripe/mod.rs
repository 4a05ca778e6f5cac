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
//! Identifiers and idempotency keys are remembered for [`DEDUP_WINDOW`] (24 hours, as on
//! Stripe) of the fake's own clock, which [`StripeFake::advance`] moves forward.
//!
//! `GET /v1/billing/meters/{id}` serves the fake's one billing meter (see `meters`).
//!
//! `GET /v1/billing/meters/{id}/event_summaries` sums what was recorded (see `summaries`).
//!
//! An event for a customer planted unknown ([`StripeFake::plant_unknown_customer`]) is
//! accepted and then dropped by the asynchronous validation, and reported through
//! `GET /v2/core/events` as Stripe's error reports are (see `reports`), in both modes.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::faults::Chaos;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Map, Value, json};

mod errors;
mod meters;
mod reports;
mod stream;
mod summaries;
#[cfg(test)]
mod tests;
mod v1;

pub use meters::{FAKE_METER_EVENT_NAME, FAKE_METER_ID, FakeMeter};
pub use stream::MAX_STREAM_EVENTS;
pub use v1::STRIPE_KINDS;

use errors::*;
use stream::{create_session, meter_event_stream};
use summaries::event_summaries;
use v1::{IdempotencyEntry, create_meter_event};

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
    /// Identifiers of recorded events Stripe's asynchronous validation dropped.
    dropped: HashSet<String>,
    /// Unknown customers and meters, and the error reports (see `reports`).
    validation: reports::Validation,
    /// The billing meter `GET /v1/billing/meters/{id}` serves (see `meters`).
    meter: FakeMeter,
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
            dropped: HashSet::new(),
            validation: reports::Validation::default(),
            meter: FakeMeter::default(),
        }));
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = Arc::new(ServerHandle::spawn(router).await?);
        Ok(Self { state, server })
    }

    /// Makes a recorded event one Stripe's asynchronous validation dropped: it stays in
    /// [`StripeFake::events`] (it was accepted) but no longer counts in the meter event
    /// summaries. False when no such event was recorded.
    pub fn drop_event(&self, identifier: &str) -> bool {
        let mut st = lock(&self.state);
        let known = st.events.iter().any(|e| e.identifier == identifier);
        if known {
            st.dropped.insert(identifier.to_string());
        }
        known
    }

    server_handle_methods!();

    /// Rolls the secret key: from now on only `secret_key` is accepted, and a request with
    /// the old one gets Stripe's 401 `Invalid API Key provided` (sessions already issued
    /// stay valid until they expire).
    pub fn rotate_secret_key(&self, secret_key: &str) {
        lock(&self.state).secret_key = secret_key.to_owned();
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

    /// Takes `customer`'s one concurrent slot, as another caller's request in flight would:
    /// every v1 meter event for the customer is answered 429 until
    /// [`StripeFake::release_customer`].
    pub fn hold_customer(&self, customer: &str) {
        lock(&self.state)
            .in_flight_customers
            .insert(customer.to_string());
    }

    /// Gives back the slot [`StripeFake::hold_customer`] took.
    pub fn release_customer(&self, customer: &str) {
        lock(&self.state).in_flight_customers.remove(customer);
    }

    /// How long a valid meter event request holds its customer's in-flight slot before being
    /// answered (Duration::ZERO: no wait, the default).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Rate-based faults on `POST /v1/billing/meter_events` and on the v2 stream (None:
    /// off; the stream's own mapping is on `stream::meter_event_stream`), see
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
        Some(Route::EventSummaries) => event_summaries(&state, &incoming),
        Some(Route::Events) => reports::events(&state, &incoming),
        Some(Route::Meter) => meters::retrieve(&state, &incoming),
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
    /// `GET /v1/billing/meters/{id}/event_summaries`.
    EventSummaries,
    /// `GET /v2/core/events` and `GET /v2/core/events/{id}` (error reports).
    Events,
    /// `GET /v1/billing/meters/{id}`.
    Meter,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        match (method, path) {
            (&Method::POST, "/v1/billing/meter_events") => Some(Self::CreateMeterEvent),
            (&Method::POST, "/v2/billing/meter_event_session") => {
                Some(Self::CreateMeterEventSession)
            }
            (&Method::POST, "/v2/billing/meter_event_stream") => Some(Self::MeterEventStream),
            (&Method::GET, p)
                if p.starts_with("/v1/billing/meters/") && p.ends_with("/event_summaries") =>
            {
                Some(Self::EventSummaries)
            }
            (&Method::GET, p)
                if p.strip_prefix("/v1/billing/meters/")
                    .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
            {
                Some(Self::Meter)
            }
            (&Method::GET, p) if p == "/v2/core/events" || p.starts_with("/v2/core/events/") => {
                Some(Self::Events)
            }
            _ => None,
        }
    }
}

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
}
