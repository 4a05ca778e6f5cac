//! A fake of the Langfuse public API, following `shared/specs/langfuse-openapi.yml`.
//!
//! Served endpoints:
//! * `GET /api/public/v2/observations` (Langfuse v4 / Cloud): cursor pagination, `fields` groups,
//!   filters `traceId`, `type`, `userId`, `sessionId`, `name`, `fromStartTime` (inclusive),
//!   `toStartTime` (exclusive), or the JSON `filter` (`langfuse/filter.rs`: Langfuse's column
//!   types and operators, 400 for what Langfuse refuses; it takes precedence); newest first.
//!   A request target over [`LangfuseFake::set_max_url_bytes`] (8 KiB by default) answers 414.
//! * `GET /api/public/traces` and `GET /api/public/traces/{traceId}` (legacy v3): page
//!   pagination, `fields` groups `core,io,scores,observations,metrics`.
//! * `POST /api/public/scores`: score upsert by `id`.
//!
//! Every request passes, in order: routing (unknown path 404, wrong method 405), an injected
//! failure from [`LangfuseFake::fail_next`], HTTP Basic auth (401), the optional per-minute rate
//! limit (429), then the endpoint. [`LangfuseFake::set_latency`] delays every answer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::faults::Chaos;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

mod filter;

use super::{
    FailPlan, FixedWindow, Incoming, RateDecision, RecordedRequest, Reply, ServerHandle, fake_uuid,
    percent_decode_path,
};

/// The longest request target the fake answers by default (8 KiB).
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;

/// The project id the fake reports on every object (`projectId`, `htmlPath`).
pub const PROJECT_ID: &str = "tracemeter-fake-project";

/// Field groups of `GET /api/public/v2/observations`.
const V2_GROUPS: &[&str] = &[
    "core",
    "basic",
    "time",
    "io",
    "metadata",
    "model",
    "usage",
    "prompt",
    "metrics",
    "trace_context",
];
/// Groups returned by `GET /api/public/v2/observations` without `fields`.
const V2_DEFAULT_GROUPS: &[&str] = &["core", "basic"];
/// Field groups of the legacy trace endpoints (all returned by default).
const LEGACY_GROUPS: &[&str] = &["core", "io", "scores", "observations", "metrics"];

/// A trace as stored in the fake, with its observations.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTrace {
    /// Trace id.
    pub id: String,
    /// Trace timestamp (what the legacy `fromTimestamp`/`toTimestamp` filters and ordering use).
    pub timestamp: DateTime<Utc>,
    /// Trace name (`name`, and `traceName` on v2 observations).
    pub name: Option<String>,
    /// Trace user id (inherited by observations without their own).
    pub user_id: Option<String>,
    /// Trace session id (reported as the observations' `sessionId`).
    pub session_id: Option<String>,
    /// Trace metadata, a JSON object. v2 observations report it merged into their own
    /// `metadata` (the observation's keys win), as Langfuse v4 SDKs propagate trace attributes.
    pub metadata: Value,
    /// Trace tags.
    pub tags: Vec<String>,
    /// Observations of this trace; their `trace_id` equals `id`.
    pub observations: Vec<FakeObservation>,
}

impl FakeTrace {
    /// A trace with no name, user, session, metadata, tags or observations.
    pub fn new(id: impl Into<String>, timestamp: DateTime<Utc>) -> Self {
        Self {
            id: id.into(),
            timestamp,
            name: None,
            user_id: None,
            session_id: None,
            metadata: Value::Object(Map::new()),
            tags: Vec::new(),
            observations: Vec::new(),
        }
    }

    /// Sets the trace name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the trace user id.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the trace session id.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets one metadata key, e.g. `.meta("stripeCustomerId", "cus_123")`.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        insert_meta(&mut self.metadata, key.into(), value.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds an observation; its `trace_id` is set to this trace's id.
    pub fn observation(mut self, mut observation: FakeObservation) -> Self {
        observation.trace_id.clone_from(&self.id);
        self.observations.push(observation);
        self
    }

    /// The trace's cost in USD as Langfuse reports it (`totalCost`): the sum of
    /// [`FakeObservation::cost_usd`].
    pub fn total_cost_usd(&self) -> f64 {
        self.observations
            .iter()
            .map(FakeObservation::cost_usd)
            .sum()
    }

    /// The trace's latency in seconds as Langfuse reports it: latest observation end (or start,
    /// if it has no end) minus earliest observation start; 0 without observations.
    pub fn latency_seconds(&self) -> f64 {
        let start = self.observations.iter().map(|o| o.start_time).min();
        let end = self
            .observations
            .iter()
            .map(|o| o.end_time.unwrap_or(o.start_time))
            .max();
        match (start, end) {
            (Some(start), Some(end)) => seconds_between(start, end),
            _ => 0.0,
        }
    }
}

/// An observation (span, generation, event, ...) as stored in the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeObservation {
    /// Observation id.
    pub id: String,
    /// Id of the trace it belongs to.
    pub trace_id: String,
    /// Observation type, e.g. `GENERATION`, `SPAN`, `EVENT`.
    pub r#type: String,
    /// Observation name.
    pub name: Option<String>,
    /// Start time (v2 ordering, cursor and `fromStartTime`/`toStartTime` filters use it).
    pub start_time: DateTime<Utc>,
    /// End time, if the observation has ended.
    pub end_time: Option<DateTime<Utc>>,
    /// Model name as provided (`providedModelName` / legacy `model`).
    pub model: Option<String>,
    /// Usage by type, e.g. `input`, `output`, `total` (tokens).
    pub usage_details: BTreeMap<String, i64>,
    /// Cost by usage type in USD, e.g. `input`, `output`, `total`.
    pub cost_details: BTreeMap<String, f64>,
    /// Total cost in USD (`totalCost` / legacy `calculatedTotalCost`).
    pub total_cost: Option<f64>,
    /// Observation metadata (a JSON object).
    pub metadata: Value,
    /// The observation's own user id; when None the trace's is reported.
    pub user_id: Option<String>,
    /// Raw JSON fields applied after rendering, for data Langfuse should never send (a
    /// `null` cost, a missing `startTime`): `Some(value)` replaces the field, `None` removes it.
    pub raw: Vec<(String, Option<Value>)>,
}

impl FakeObservation {
    /// An observation of the given type with no end, model, usage, cost or metadata.
    pub fn new(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        r#type: impl Into<String>,
        start_time: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.into(),
            trace_id: trace_id.into(),
            r#type: r#type.into(),
            name: None,
            start_time,
            end_time: None,
            model: None,
            usage_details: BTreeMap::new(),
            cost_details: BTreeMap::new(),
            total_cost: None,
            metadata: Value::Object(Map::new()),
            user_id: None,
            raw: Vec::new(),
        }
    }

    /// A finished `GENERATION` with token usage (`input`, `output`, `total`) and a cost in USD;
    /// `costDetails` splits the cost over input and output in proportion to the tokens and
    /// carries the whole as `total`, and `totalCost` is `cost_usd`.
    #[allow(clippy::too_many_arguments)]
    pub fn generation(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        start_time: DateTime<Utc>,
        end_time: DateTime<Utc>,
        model: impl Into<String>,
        input_tokens: i64,
        output_tokens: i64,
        cost_usd: f64,
    ) -> Self {
        let total_tokens = input_tokens + output_tokens;
        let input_cost = if total_tokens > 0 {
            cost_usd * input_tokens as f64 / total_tokens as f64
        } else {
            0.0
        };
        let mut observation = Self::new(id, trace_id, "GENERATION", start_time);
        observation.end_time = Some(end_time);
        observation.model = Some(model.into());
        observation.usage_details = BTreeMap::from([
            ("input".to_owned(), input_tokens),
            ("output".to_owned(), output_tokens),
            ("total".to_owned(), total_tokens),
        ]);
        observation.cost_details = BTreeMap::from([
            ("input".to_owned(), input_cost),
            ("output".to_owned(), cost_usd - input_cost),
            ("total".to_owned(), cost_usd),
        ]);
        observation.total_cost = Some(cost_usd);
        observation
    }

    /// A finished `SPAN` without usage or cost.
    pub fn span(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        start_time: DateTime<Utc>,
        end_time: DateTime<Utc>,
    ) -> Self {
        let mut observation = Self::new(id, trace_id, "SPAN", start_time);
        observation.end_time = Some(end_time);
        observation
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the observation's own user id.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets one metadata key.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        insert_meta(&mut self.metadata, key.into(), value.into());
        self
    }

    /// Sets (or clears) the end time.
    pub fn with_end_time(mut self, end_time: Option<DateTime<Utc>>) -> Self {
        self.end_time = end_time;
        self
    }

    /// Sets one usage type, e.g. `.usage("input", 120)`.
    pub fn usage(mut self, usage_type: impl Into<String>, units: i64) -> Self {
        self.usage_details.insert(usage_type.into(), units);
        self
    }

    /// Sets the cost in USD of one usage type, e.g. `.cost("total", 0.003)`.
    pub fn cost(mut self, usage_type: impl Into<String>, usd: f64) -> Self {
        self.cost_details.insert(usage_type.into(), usd);
        self
    }

    /// Serves the JSON field `key` as `value` (or without it, for `None`) whatever the
    /// observation holds: malformed data for the reliability suite.
    pub fn raw_field(mut self, key: impl Into<String>, value: Option<Value>) -> Self {
        self.raw.push((key.into(), value));
        self
    }

    /// Sets (or clears) `totalCost`.
    pub fn with_total_cost(mut self, usd: Option<f64>) -> Self {
        self.total_cost = usd;
        self
    }

    /// The observation's cost in USD: `total_cost`, else `cost_details["total"]`, else the sum of
    /// `cost_details`.
    pub fn cost_usd(&self) -> f64 {
        self.total_cost
            .or_else(|| self.cost_details.get("total").copied())
            .unwrap_or_else(|| self.cost_details.values().sum())
    }

    /// End minus start in seconds, None while the observation has no end.
    pub fn latency_seconds(&self) -> Option<f64> {
        self.end_time
            .map(|end| seconds_between(self.start_time, end))
    }
}

fn insert_meta(metadata: &mut Value, key: String, value: Value) {
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    if let Value::Object(map) = metadata {
        map.insert(key, value);
    }
}

fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    let delta = end - start;
    match delta.num_microseconds() {
        Some(micros) => micros as f64 / 1_000_000.0,
        None => delta.num_milliseconds() as f64 / 1_000.0,
    }
}

/// A score received on `POST /api/public/scores`.
#[derive(Debug, Clone)]
struct StoredScore {
    /// The request body, with `id` filled in.
    body: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug)]
struct LangfuseState {
    public_key: String,
    secret_key: String,
    traces: BTreeMap<String, FakeTrace>,
    scores: Vec<StoredScore>,
    requests: Vec<RecordedRequest>,
    rate: FixedWindow,
    fail: FailPlan,
    latency: Duration,
    /// Longest request target (path and query) answered; longer ones get a 414.
    max_url_bytes: Option<usize>,
    /// Rate-based faults and how long a `slow` answer takes.
    chaos: Option<(Arc<Chaos>, Duration)>,
}

type Shared = Arc<Mutex<LangfuseState>>;

fn lock(state: &Shared) -> MutexGuard<'_, LangfuseState> {
    state.lock().expect("LangfuseFake state mutex poisoned")
}

/// A running fake Langfuse server. Cheap to clone; the server stops when the last clone is
/// dropped or on [`LangfuseFake::shutdown`].
#[derive(Debug, Clone)]
pub struct LangfuseFake {
    state: Shared,
    server: Arc<ServerHandle>,
}

impl LangfuseFake {
    /// Starts a fake on `127.0.0.1:<free port>` accepting HTTP Basic `public_key:secret_key`.
    ///
    /// # Panics
    /// If no loopback port can be bound (see [`LangfuseFake::try_start`]).
    pub async fn start(public_key: &str, secret_key: &str) -> Self {
        Self::try_start(public_key, secret_key)
            .await
            .expect("LangfuseFake: bind 127.0.0.1:0")
    }

    /// Like [`LangfuseFake::start`], returning the bind error instead of panicking.
    pub async fn try_start(public_key: &str, secret_key: &str) -> std::io::Result<Self> {
        let state: Shared = Arc::new(Mutex::new(LangfuseState {
            public_key: public_key.to_owned(),
            secret_key: secret_key.to_owned(),
            traces: BTreeMap::new(),
            scores: Vec::new(),
            requests: Vec::new(),
            rate: FixedWindow::new(Duration::from_secs(60)),
            fail: FailPlan::default(),
            latency: Duration::ZERO,
            max_url_bytes: Some(DEFAULT_MAX_URL_BYTES),
            chaos: None,
        }));
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = Arc::new(ServerHandle::spawn(router).await?);
        Ok(Self { state, server })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
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

    /// Adds a trace, replacing any trace with the same id. Its observations get its id as
    /// `trace_id`.
    pub fn add_trace(&self, mut trace: FakeTrace) {
        for observation in &mut trace.observations {
            observation.trace_id.clone_from(&trace.id);
        }
        lock(&self.state).traces.insert(trace.id.clone(), trace);
    }

    /// Adds an observation to its trace (`observation.trace_id`), replacing one with the same
    /// id: a late observation. If the trace does not exist yet it is created with the
    /// observation's start time as timestamp, as Langfuse does on ingestion.
    pub fn add_observation(&self, observation: FakeObservation) {
        let mut state = lock(&self.state);
        let trace = state
            .traces
            .entry(observation.trace_id.clone())
            .or_insert_with(|| {
                FakeTrace::new(observation.trace_id.clone(), observation.start_time)
            });
        match trace
            .observations
            .iter_mut()
            .find(|o| o.id == observation.id)
        {
            Some(existing) => *existing = observation,
            None => trace.observations.push(observation),
        }
    }

    /// Removes a trace and its observations; false if there was none.
    pub fn remove_trace(&self, id: &str) -> bool {
        lock(&self.state).traces.remove(id).is_some()
    }

    /// All stored traces, by id.
    pub fn traces(&self) -> Vec<FakeTrace> {
        lock(&self.state).traces.values().cloned().collect()
    }

    /// Limits authenticated API requests per fixed 60-second window (None: unlimited, the
    /// default). Setting it starts a fresh window.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        lock(&self.state).rate.set_limit(per_minute);
    }

    /// Limits authenticated API requests to `limit` per fixed `window` (shorter than a minute
    /// keeps rate-limit tests fast; `Retry-After` and `X-RateLimit-Reset` follow the window).
    pub fn set_rate_limit_window(&self, limit: Option<u32>, window: Duration) {
        lock(&self.state).rate.set_limit_per(limit, window);
    }

    /// The next `n` requests to a known route are answered with `status` and a JSON error body
    /// (before auth and rate limiting; a 429 carries `Retry-After: 1`).
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.state).fail = FailPlan::new(n, status);
    }

    /// Refuses request targets (path and query) longer than `max` bytes with a 414, as the
    /// proxies in front of Langfuse Cloud do (None: no cap; default 8 KiB).
    pub fn set_max_url_bytes(&self, max: Option<usize>) {
        lock(&self.state).max_url_bytes = max;
    }

    /// Delay before answering every request (Duration::ZERO: none, the default).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Rate-based faults on every request to a known route (None: off): `429` (with
    /// `Retry-After: 1`), `500`, `502`, `503`, `slow` (answered after `slow`, past the
    /// client's timeout), `truncated` (half the body) and `malformed` (not JSON) — see
    /// [`LANGFUSE_KINDS`].
    pub fn set_chaos(&self, chaos: Option<Arc<Chaos>>, slow: Duration) {
        lock(&self.state).chaos = chaos.map(|c| (c, slow));
    }

    /// Every request answered so far, in completion order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Number of requests answered so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state).requests.len()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// Scores received (request bodies with `id` filled in), one per id, in first-seen order.
    pub fn scores(&self) -> Vec<Value> {
        lock(&self.state)
            .scores
            .iter()
            .map(|s| s.body.clone())
            .collect()
    }
}

async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let incoming = match Incoming::read(request).await {
        Ok(incoming) => incoming,
        Err(_) => return error(413, "Request body too large", "PayloadTooLarge").into_response(),
    };
    // A task of its own, so a client giving up does not cancel recording.
    match tokio::spawn(process(state, incoming)).await {
        Ok(reply) => reply.into_response(),
        Err(_) => error(500, "LangfuseFake handler failed", "InternalServerError").into_response(),
    }
}

/// The fault kinds of [`LangfuseFake::set_chaos`].
pub const LANGFUSE_KINDS: &[&str] = &["429", "500", "502", "503", "slow", "truncated", "malformed"];

async fn process(state: Shared, incoming: Incoming) -> Reply {
    let (latency, chaos) = {
        let st = lock(&state);
        (st.latency, st.chaos.clone())
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let known = Route::parse(&incoming.method, &incoming.path).is_ok();
    let fault = match &chaos {
        Some((chaos, slow)) if known => chaos.draw().map(|kind| (kind, *slow)),
        _ => None,
    };
    let status = fault.and_then(|(kind, _)| kind.parse::<u16>().ok());
    if let Some((_, slow)) = fault.filter(|(kind, _)| *kind == "slow") {
        tokio::time::sleep(slow).await;
    }
    let mut state = lock(&state);
    let (mut reply, authenticated) = match status {
        Some(status) => (injected_failure(status), false),
        None => state.respond(&incoming),
    };
    match fault.map(|(kind, _)| kind) {
        Some("truncated") => {
            let mut cut = reply.body.len() / 2;
            while !reply.body.is_char_boundary(cut) {
                cut -= 1;
            }
            reply.body.truncate(cut);
        }
        Some("malformed") => {
            reply.body = format!("<html><body>upstream error</body></html>{}", reply.body);
        }
        _ => {}
    }
    let record = incoming.record(reply.status, authenticated);
    state.requests.push(record);
    reply
}

/// The endpoints the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    ObservationsV2,
    Traces,
    Trace(String),
    Scores,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Result<Self, Reply> {
        let (route, allowed) = match path {
            "/api/public/v2/observations" => (Self::ObservationsV2, Method::GET),
            "/api/public/traces" => (Self::Traces, Method::GET),
            "/api/public/scores" => (Self::Scores, Method::POST),
            other => match other.strip_prefix("/api/public/traces/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    let id = percent_decode_path(id).unwrap_or_else(|_| id.to_owned());
                    (Self::Trace(id), Method::GET)
                }
                _ => {
                    return Err(error(
                        404,
                        &format!("Route {method} {path} not found"),
                        "NotFoundError",
                    ));
                }
            },
        };
        if *method == allowed {
            Ok(route)
        } else {
            Err(error(
                405,
                &format!("Method {method} not allowed on {path}"),
                "MethodNotAllowedError",
            )
            .header(header::ALLOW.as_str(), allowed))
        }
    }
}

impl LangfuseState {
    /// Answers one request; also says whether it was authenticated.
    fn respond(&mut self, incoming: &Incoming) -> (Reply, bool) {
        if let Some(max) = self.max_url_bytes
            && incoming.path.len() + incoming.query.as_ref().map_or(0, |q| q.len() + 1) > max
        {
            let message = format!("URI Too Long: request targets over {max} bytes are refused");
            return (error(414, &message, "URITooLong"), false);
        }
        let route = match Route::parse(&incoming.method, &incoming.path) {
            Ok(route) => route,
            Err(reply) => return (reply, false),
        };
        if let Some(status) = self.fail.take() {
            return (injected_failure(status), false);
        }
        if !self.authorized(incoming) {
            return (
                Reply::json(401, &json!({"message": "Invalid authorization header"})).header(
                    header::WWW_AUTHENTICATE.as_str(),
                    "Basic realm=\"Langfuse\"",
                ),
                false,
            );
        }
        let decision = self.rate.check();
        if let RateDecision::Limited {
            limit,
            retry_after_secs,
            reset_unix,
        } = decision
        {
            let reply = error(
                429,
                "Rate limit exceeded, please retry after the time in the Retry-After header",
                "TooManyRequests",
            )
            .header("Retry-After", retry_after_secs)
            .header("X-RateLimit-Limit", limit)
            .header("X-RateLimit-Remaining", 0)
            .header("X-RateLimit-Reset", reset_unix);
            return (reply, true);
        }
        let mut reply = match incoming.query_params() {
            Err(message) => bad_request(&message),
            Ok(params) => {
                let params = Params(params);
                let result = match route {
                    Route::ObservationsV2 => self.observations_v2(&params),
                    Route::Traces => self.list_traces(&params),
                    Route::Trace(id) => self.get_trace(&id, &params),
                    Route::Scores => Ok(self.create_score(incoming)),
                };
                result.unwrap_or_else(|reply| reply)
            }
        };
        if let RateDecision::Allowed {
            limit,
            remaining,
            reset_unix,
        } = decision
        {
            reply.set_header("X-RateLimit-Limit", limit);
            reply.set_header("X-RateLimit-Remaining", remaining);
            reply.set_header("X-RateLimit-Reset", reset_unix);
        }
        (reply, true)
    }

    fn authorized(&self, incoming: &Incoming) -> bool {
        let Some((scheme, credentials)) = incoming
            .header(header::AUTHORIZATION)
            .and_then(|value| value.trim().split_once(' '))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = STANDARD.decode(credentials.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        decoded.split_once(':') == Some((self.public_key.as_str(), self.secret_key.as_str()))
    }

    /// `GET /api/public/v2/observations`.
    fn observations_v2(&self, params: &Params) -> Result<Reply, Reply> {
        // A JSON `filter` takes precedence over the plain query filters.
        let filter = params
            .get("filter")
            .map(filter::parse)
            .transpose()
            .map_err(|message| bad_request(&message))?;
        if params.get("parseIoAsJson") == Some("true") {
            return Err(bad_request(
                "parseIoAsJson is deprecated: input/output are always returned as raw strings",
            ));
        }
        let groups = parse_groups(params.get("fields"), V2_GROUPS, V2_DEFAULT_GROUPS)?;
        let limit = params.bounded_int("limit", 50, 1, 1000)?;
        let cursor = params.get("cursor").map(Cursor::decode).transpose()?;
        let from = params.datetime("fromStartTime")?;
        let to = params.datetime("toStartTime")?;
        let trace_id = params.get("traceId");
        let r#type = params.get("type");
        let user_id = params.get("userId");
        let session_id = params.get("sessionId");
        let name = params.get("name");

        let mut rows: Vec<(&FakeTrace, &FakeObservation)> = self
            .traces
            .values()
            .flat_map(|trace| trace.observations.iter().map(move |o| (trace, o)))
            .filter(|(trace, o)| {
                let selected = match &filter {
                    Some(conditions) => filter::matches(conditions, trace, o),
                    None => {
                        trace_id.is_none_or(|id| o.trace_id == id)
                            && r#type.is_none_or(|t| o.r#type == t)
                            && user_id.is_none_or(|u| effective_user(trace, o) == Some(u))
                            && session_id.is_none_or(|s| trace.session_id.as_deref() == Some(s))
                            && name.is_none_or(|n| o.name.as_deref() == Some(n))
                            && from.is_none_or(|from| o.start_time >= from)
                            && to.is_none_or(|to| o.start_time < to)
                    }
                };
                selected && cursor.as_ref().is_none_or(|c| c.is_before(o))
            })
            .collect();
        // Newest first; ties by id (descending) so the order is total and stable.
        rows.sort_by(|(_, a), (_, b)| {
            b.start_time
                .cmp(&a.start_time)
                .then_with(|| b.id.cmp(&a.id))
        });
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|(_, o)| Cursor::after(o).encode())
        } else {
            None
        };
        let data: Vec<Value> = rows
            .iter()
            .map(|(trace, o)| observation_v2_json(trace, o, &groups))
            .collect();
        let meta = match next_cursor {
            Some(cursor) => json!({ "cursor": cursor }),
            None => json!({}),
        };
        Ok(Reply::json(200, &json!({ "data": data, "meta": meta })))
    }

    /// `GET /api/public/traces`.
    fn list_traces(&self, params: &Params) -> Result<Reply, Reply> {
        if params.get("filter").is_some() {
            return Err(bad_request(
                "LangfuseFake does not support the JSON `filter` parameter; use the query \
                 parameter filters (userId, name, sessionId, tags, fromTimestamp, toTimestamp)",
            ));
        }
        let page = params.bounded_int("page", 1, 1, i64::from(u32::MAX))?;
        let limit = params.bounded_int("limit", 50, 1, 100)?;
        let groups = parse_groups(params.get("fields"), LEGACY_GROUPS, LEGACY_GROUPS)?;
        let from = params.datetime("fromTimestamp")?;
        let to = params.datetime("toTimestamp")?;
        let order = TraceOrder::parse(params.get("orderBy"))?;
        let user_id = params.get("userId");
        let session_id = params.get("sessionId");
        let name = params.get("name");
        let tags = params.all("tags");

        let mut traces: Vec<&FakeTrace> = self
            .traces
            .values()
            .filter(|t| {
                user_id.is_none_or(|u| t.user_id.as_deref() == Some(u))
                    && session_id.is_none_or(|s| t.session_id.as_deref() == Some(s))
                    && name.is_none_or(|n| t.name.as_deref() == Some(n))
                    && from.is_none_or(|from| t.timestamp >= from)
                    && to.is_none_or(|to| t.timestamp < to)
                    && tags.iter().all(|tag| t.tags.iter().any(|have| have == tag))
            })
            .collect();
        traces.sort_by(|a, b| order.compare(a, b));
        let total_items = traces.len();
        let total_pages = total_items.div_ceil(limit);
        let data: Vec<Value> = traces
            .into_iter()
            .skip((page - 1).saturating_mul(limit))
            .take(limit)
            .map(|t| self.trace_json(t, &groups, false))
            .collect();
        Ok(Reply::json(
            200,
            &json!({
                "data": data,
                "meta": {
                    "page": page,
                    "limit": limit,
                    "totalItems": total_items,
                    "totalPages": total_pages,
                },
            }),
        ))
    }

    /// `GET /api/public/traces/{traceId}`.
    fn get_trace(&self, id: &str, params: &Params) -> Result<Reply, Reply> {
        let groups = parse_groups(params.get("fields"), LEGACY_GROUPS, LEGACY_GROUPS)?;
        let Some(trace) = self.traces.get(id) else {
            return Err(error(
                404,
                &format!("Trace {id} not found within authorized project"),
                "LangfuseNotFoundError",
            ));
        };
        Ok(Reply::json(200, &self.trace_json(trace, &groups, true)))
    }

    /// `POST /api/public/scores`.
    fn create_score(&mut self, incoming: &Incoming) -> Reply {
        let body: Value = match serde_json::from_slice(&incoming.body) {
            Ok(body) => body,
            Err(e) => return bad_request(&format!("Invalid JSON body: {e}")),
        };
        let Value::Object(mut score) = body else {
            return invalid_request_data(vec![issue_invalid_type(&[], "object", "other")]);
        };
        let mut issues = Vec::new();
        match score.get("name") {
            Some(Value::String(name)) if !name.is_empty() => {}
            None | Some(Value::Null) => issues.push(issue_required("name", "string")),
            Some(_) => issues.push(issue_invalid_type(&["name"], "string", "other")),
        }
        match score.get("value") {
            Some(Value::Number(_) | Value::String(_)) => {}
            None | Some(Value::Null) => issues.push(issue_required("value", "number | string")),
            Some(_) => issues.push(issue_invalid_type(&["value"], "number | string", "other")),
        }
        for key in [
            "id",
            "traceId",
            "sessionId",
            "observationId",
            "datasetRunId",
            "comment",
            "dataType",
            "configId",
        ] {
            if let Some(value) = score.get(key)
                && !(value.is_string() || value.is_null())
            {
                issues.push(issue_invalid_type(&[key], "string", "other"));
            }
        }
        if !issues.is_empty() {
            return invalid_request_data(issues);
        }
        let id = match score.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => fake_uuid(),
        };
        score.insert("id".to_owned(), Value::String(id.clone()));
        let now = Utc::now();
        match self
            .scores
            .iter_mut()
            .find(|s| s.body.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            Some(existing) => {
                existing.body = Value::Object(score);
                existing.updated_at = now;
            }
            None => self.scores.push(StoredScore {
                body: Value::Object(score),
                created_at: now,
                updated_at: now,
            }),
        }
        Reply::json(200, &json!({ "id": id }))
    }

    fn trace_scores<'a>(&'a self, trace_id: &'a str) -> impl Iterator<Item = &'a StoredScore> {
        self.scores
            .iter()
            .filter(move |s| s.body.get("traceId").and_then(Value::as_str) == Some(trace_id))
    }

    /// TraceWithDetails (`full == false`) or TraceWithFullDetails (`full == true`).
    fn trace_json(&self, trace: &FakeTrace, groups: &BTreeSet<String>, full: bool) -> Value {
        let io = groups.contains("io");
        let metrics = groups.contains("metrics");
        let observations: Vec<Value> = if groups.contains("observations") {
            let mut sorted: Vec<&FakeObservation> = trace.observations.iter().collect();
            sorted.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.id.cmp(&b.id)));
            sorted
                .into_iter()
                .map(|o| {
                    if full {
                        observation_view_json(o)
                    } else {
                        Value::String(o.id.clone())
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let scores: Vec<Value> = if groups.contains("scores") {
            self.trace_scores(&trace.id)
                .map(|s| {
                    if full {
                        score_v1_json(s)
                    } else {
                        s.body.get("id").cloned().unwrap_or(Value::Null)
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "id": trace.id,
            "timestamp": iso(&trace.timestamp),
            "name": trace.name,
            "input": Value::Null,
            "output": Value::Null,
            "sessionId": trace.session_id,
            "release": Value::Null,
            "version": Value::Null,
            "userId": trace.user_id,
            "metadata": if io { trace.metadata.clone() } else { Value::Null },
            "tags": trace.tags,
            "public": false,
            "environment": "default",
            "htmlPath": format!("/project/{PROJECT_ID}/traces/{}", trace.id),
            "latency": if metrics { trace.latency_seconds() } else { -1.0 },
            "totalCost": if metrics { trace.total_cost_usd() } else { -1.0 },
            "observations": observations,
            "scores": scores,
        })
    }
}

fn effective_user<'a>(trace: &'a FakeTrace, observation: &'a FakeObservation) -> Option<&'a str> {
    observation.user_id.as_deref().or(trace.user_id.as_deref())
}

fn internal_model_id(observation: &FakeObservation) -> Option<String> {
    observation
        .model
        .as_ref()
        .map(|model| format!("fake-model-{model}"))
}

/// An ObservationV2 with only the requested field groups.
fn observation_v2_json(trace: &FakeTrace, o: &FakeObservation, groups: &BTreeSet<String>) -> Value {
    let has = |group: &str| groups.contains(group);
    let mut m = Map::new();
    let mut put = |key: &str, value: Value| {
        m.insert(key.to_owned(), value);
    };
    // core (always)
    put("id", json!(o.id));
    put("traceId", json!(o.trace_id));
    put("startTime", json!(iso(&o.start_time)));
    put("endTime", json!(o.end_time.as_ref().map(iso)));
    put("projectId", json!(PROJECT_ID));
    put("parentObservationId", Value::Null);
    put("type", json!(o.r#type));
    // Required (nullable) by the spec in every object; null unless `model` is requested.
    put(
        "modelId",
        if has("model") {
            json!(internal_model_id(o))
        } else {
            Value::Null
        },
    );
    put("inputPrice", Value::Null);
    put("outputPrice", Value::Null);
    put("totalPrice", Value::Null);
    if has("basic") {
        put("name", json!(o.name));
        put("level", json!("DEFAULT"));
        put("statusMessage", Value::Null);
        put("version", Value::Null);
        put("environment", json!("default"));
        put("bookmarked", json!(false));
        put("public", json!(false));
        put("userId", json!(effective_user(trace, o)));
        put("sessionId", json!(trace.session_id));
        put("isRootObservation", json!(true));
    }
    if has("time") {
        put("completionStartTime", Value::Null);
        put("createdAt", json!(iso(&o.start_time)));
        put("updatedAt", json!(iso(&o.end_time.unwrap_or(o.start_time))));
    }
    if has("io") {
        put("input", Value::Null);
        put("output", Value::Null);
    }
    if has("metadata") {
        // Langfuse v4 SDKs propagate trace-level attributes (metadata included) to every
        // observation; the observation's own keys win.
        let mut merged = trace.metadata.clone();
        if let (Value::Object(into), Value::Object(own)) = (&mut merged, &o.metadata) {
            for (k, v) in own {
                into.insert(k.clone(), v.clone());
            }
        } else if !o.metadata.is_null() {
            merged = o.metadata.clone();
        }
        put("metadata", merged);
    }
    if has("model") {
        put("providedModelName", json!(o.model));
        put("internalModelId", json!(internal_model_id(o)));
        put("modelParameters", json!({}));
    }
    if has("usage") {
        put("usageDetails", json!(o.usage_details));
        put("costDetails", json!(o.cost_details));
        put("totalCost", json!(o.total_cost));
        put("usagePricingTierName", Value::Null);
    }
    if has("prompt") {
        put("promptId", Value::Null);
        put("promptName", Value::Null);
        put("promptVersion", Value::Null);
    }
    if has("metrics") {
        put("latency", json!(o.latency_seconds()));
        put("timeToFirstToken", Value::Null);
    }
    if has("trace_context") {
        put("tags", json!(trace.tags));
        put("release", Value::Null);
        put("traceName", json!(trace.name));
    }
    apply_raw(&mut m, o);
    Value::Object(m)
}

/// Applies an observation's raw field overrides to its rendered JSON.
fn apply_raw(m: &mut Map<String, Value>, o: &FakeObservation) {
    for (key, value) in &o.raw {
        match value {
            Some(v) => {
                m.insert(key.clone(), v.clone());
            }
            None => {
                m.remove(key);
            }
        }
    }
}

/// An ObservationsView (legacy full trace).
fn observation_view_json(o: &FakeObservation) -> Value {
    let usage = |key: &str| o.usage_details.get(key).copied();
    let input = usage("input").unwrap_or(0);
    let output = usage("output").unwrap_or(0);
    let cost = |key: &str| o.cost_details.get(key).copied();
    let total_cost = o.total_cost.or_else(|| cost("total"));
    let mut view = json!({
        "id": o.id,
        "traceId": o.trace_id,
        "type": o.r#type,
        "name": o.name,
        "startTime": iso(&o.start_time),
        "endTime": o.end_time.as_ref().map(iso),
        "completionStartTime": Value::Null,
        "model": o.model,
        "modelParameters": {},
        "input": Value::Null,
        "version": Value::Null,
        "metadata": o.metadata,
        "output": Value::Null,
        "usage": {
            "input": input,
            "output": output,
            "total": usage("total").unwrap_or(input + output),
            "unit": "TOKENS",
            "inputCost": cost("input"),
            "outputCost": cost("output"),
            "totalCost": total_cost,
        },
        "level": "DEFAULT",
        "statusMessage": Value::Null,
        "parentObservationId": Value::Null,
        "promptId": Value::Null,
        "usageDetails": o.usage_details,
        "costDetails": o.cost_details,
        "environment": "default",
        "promptName": Value::Null,
        "promptVersion": Value::Null,
        "modelId": internal_model_id(o),
        "inputPrice": Value::Null,
        "outputPrice": Value::Null,
        "totalPrice": Value::Null,
        "calculatedInputCost": cost("input"),
        "calculatedOutputCost": cost("output"),
        "calculatedTotalCost": total_cost,
        "latency": o.latency_seconds(),
        "timeToFirstToken": Value::Null,
    });
    if let Value::Object(m) = &mut view {
        apply_raw(m, o);
    }
    view
}

/// A ScoreV1 built from a received CreateScoreRequest.
fn score_v1_json(score: &StoredScore) -> Value {
    let body = &score.body;
    let field = |key: &str| body.get(key).cloned().unwrap_or(Value::Null);
    let (value, string_value, default_type) = match body.get("value") {
        Some(Value::String(text)) => (json!(0), Some(text.clone()), "CATEGORICAL"),
        Some(number) => (number.clone(), None, "NUMERIC"),
        None => (Value::Null, None, "NUMERIC"),
    };
    let data_type = body
        .get("dataType")
        .and_then(Value::as_str)
        .unwrap_or(default_type);
    let mut json = json!({
        "id": field("id"),
        "traceId": field("traceId"),
        "name": field("name"),
        "source": "API",
        "observationId": field("observationId"),
        "timestamp": iso(&score.created_at),
        "createdAt": iso(&score.created_at),
        "updatedAt": iso(&score.updated_at),
        "authorUserId": Value::Null,
        "comment": field("comment"),
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "configId": field("configId"),
        "queueId": field("queueId"),
        "environment": body.get("environment").cloned().unwrap_or_else(|| json!("default")),
        "dataType": data_type,
        "value": value,
    });
    if let (Some(string_value), Value::Object(map)) = (string_value, &mut json) {
        map.insert("stringValue".to_owned(), Value::String(string_value));
    }
    json
}

/// ISO 8601 with milliseconds and `Z`, as Langfuse writes timestamps.
fn iso(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The position after which the next page starts (newest-first order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "lastStartTime")]
    start_time: DateTime<Utc>,
    #[serde(rename = "lastId")]
    id: String,
}

impl Cursor {
    fn after(observation: &FakeObservation) -> Self {
        Self {
            start_time: observation.start_time,
            id: observation.id.clone(),
        }
    }

    fn encode(&self) -> String {
        let json = json!({
            "lastStartTime": self.start_time.to_rfc3339_opts(SecondsFormat::Nanos, true),
            "lastId": self.id,
        });
        STANDARD.encode(json.to_string())
    }

    fn decode(raw: &str) -> Result<Self, Reply> {
        STANDARD
            .decode(raw.trim())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| bad_request(&format!("Invalid cursor: {raw}")))
    }

    /// Whether `o` comes after this position in newest-first order.
    fn is_before(&self, o: &FakeObservation) -> bool {
        (o.start_time, o.id.as_str()) < (self.start_time, self.id.as_str())
    }
}

/// `orderBy` of the legacy trace list.
#[derive(Debug, Clone, Copy)]
struct TraceOrder {
    by_id: bool,
    ascending: bool,
}

impl TraceOrder {
    fn parse(raw: Option<&str>) -> Result<Self, Reply> {
        let Some(raw) = raw else {
            return Ok(Self {
                by_id: false,
                ascending: false,
            });
        };
        let (field, direction) = raw.split_once('.').unwrap_or((raw, ""));
        let ascending = match direction {
            "asc" => true,
            "desc" => false,
            _ => {
                return Err(bad_request(&format!(
                    "Invalid orderBy '{raw}': expected [field].[asc|desc]"
                )));
            }
        };
        let by_id = match field {
            "timestamp" => false,
            "id" => true,
            _ => {
                return Err(bad_request(&format!(
                    "orderBy field '{field}' is not supported by LangfuseFake (timestamp, id)"
                )));
            }
        };
        Ok(Self { by_id, ascending })
    }

    fn compare(self, a: &FakeTrace, b: &FakeTrace) -> std::cmp::Ordering {
        let ordering = if self.by_id {
            a.id.cmp(&b.id)
        } else {
            a.timestamp.cmp(&b.timestamp).then_with(|| a.id.cmp(&b.id))
        };
        if self.ascending {
            ordering
        } else {
            ordering.reverse()
        }
    }
}

/// Decoded query parameters.
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    /// First non-empty value of a parameter.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// All non-empty values of a repeated parameter (`tags=a&tags=b`).
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// An integer parameter within `min..=max`, `default` when absent.
    fn bounded_int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<usize, Reply> {
        let value = match self.get(name) {
            None => default,
            Some(raw) => raw.trim().parse::<i64>().map_err(|_| {
                bad_request(&format!("Invalid {name} '{raw}': expected an integer"))
            })?,
        };
        if !(min..=max).contains(&value) {
            return Err(bad_request(&format!(
                "Invalid {name} {value}: must be between {min} and {max}"
            )));
        }
        usize::try_from(value)
            .map_err(|_| bad_request(&format!("Invalid {name} {value}: out of range")))
    }

    /// An ISO 8601 date-time parameter.
    fn datetime(&self, name: &str) -> Result<Option<DateTime<Utc>>, Reply> {
        self.get(name)
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw.trim())
                    .map(|time| time.with_timezone(&Utc))
                    .map_err(|e| {
                        bad_request(&format!(
                            "Invalid {name} '{raw}': expected an ISO 8601 date-time ({e})"
                        ))
                    })
            })
            .transpose()
    }
}

/// Parses a `fields` list; `core` is always included, unknown groups are a 400.
fn parse_groups(
    raw: Option<&str>,
    allowed: &[&str],
    default: &[&str],
) -> Result<BTreeSet<String>, Reply> {
    let mut groups: BTreeSet<String> = BTreeSet::new();
    match raw {
        None => groups.extend(default.iter().map(|g| (*g).to_owned())),
        Some(raw) => {
            for group in raw.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                if !allowed.contains(&group) {
                    return Err(bad_request(&format!(
                        "Invalid field group '{group}'. Available groups: {}",
                        allowed.join(", ")
                    )));
                }
                groups.insert(group.to_owned());
            }
        }
    }
    groups.insert("core".to_owned());
    Ok(groups)
}

fn error(status: u16, message: &str, error: &str) -> Reply {
    Reply::json(status, &json!({ "message": message, "error": error }))
}

fn bad_request(message: &str) -> Reply {
    error(400, message, "InvalidRequestError")
}

fn injected_failure(status: u16) -> Reply {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let reply = error(
        status,
        &format!("{reason} (injected by LangfuseFake::fail_next)"),
        reason,
    );
    if status == 429 {
        reply.header("Retry-After", 1)
    } else {
        reply
    }
}

/// Langfuse's zod-style 400.
fn invalid_request_data(issues: Vec<Value>) -> Reply {
    Reply::json(
        400,
        &json!({ "message": "Invalid request data", "error": issues }),
    )
}

fn issue_required(field: &str, expected: &str) -> Value {
    json!({
        "code": "invalid_type",
        "expected": expected,
        "received": "undefined",
        "path": [field],
        "message": "Required",
    })
}

fn issue_invalid_type(path: &[&str], expected: &str, received: &str) -> Value {
    json!({
        "code": "invalid_type",
        "expected": expected,
        "received": received,
        "path": path,
        "message": format!("Expected {expected}, received {received}"),
    })
}

#[cfg(test)]
mod tests {
    mod filter;

    use super::*;
    use chrono::TimeZone;
    use reqwest::header::HeaderMap;
    use std::collections::HashSet;

    const PK: &str = "pk-lf-test";
    const SK: &str = "sk-lf-test";

    /// 2026-01-01T00:00:00Z plus `secs`.
    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_767_225_600 + secs, 0)
            .single()
            .expect("valid time")
    }

    async fn get(
        fake: &LangfuseFake,
        path: &str,
        query: &[(&str, &str)],
    ) -> (u16, HeaderMap, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", fake.base_url()))
            .basic_auth(PK, Some(SK))
            .query(query)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.expect("JSON body");
        (status, headers, body)
    }

    fn ids(body: &Value) -> Vec<String> {
        body["data"]
            .as_array()
            .expect("data array")
            .iter()
            .map(|o| o["id"].as_str().expect("id").to_owned())
            .collect()
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("missing header {name}"))
    }

    /// t1 (user u1, cus_1): generation o1 [0s, 2s] 100/50 tokens 0.003 USD, span o2 [1s, 5s].
    async fn seeded() -> LangfuseFake {
        let fake = LangfuseFake::start(PK, SK).await;
        fake.add_trace(
            FakeTrace::new("t1", t(0))
                .name("chat")
                .user("u1")
                .session("s1")
                .meta("stripeCustomerId", "cus_1")
                .tag("prod")
                .observation(FakeObservation::generation(
                    "o1",
                    "t1",
                    t(0),
                    t(2),
                    "gpt-4o",
                    100,
                    50,
                    0.003,
                ))
                .observation(FakeObservation::span("o2", "ignored", t(1), t(5)).name("tool")),
        );
        fake
    }

    #[tokio::test]
    async fn auth_is_http_basic_with_public_and_secret_key() {
        let fake = seeded().await;
        let url = format!("{}/api/public/v2/observations", fake.base_url());
        let client = reqwest::Client::new();
        let attempts = [
            client.get(&url),
            client.get(&url).basic_auth(PK, Some("wrong")),
            client.get(&url).bearer_auth(SK),
            client.get(&url).basic_auth(PK, Some(SK)),
        ];
        let mut statuses = Vec::new();
        for attempt in attempts {
            let response = attempt.send().await.expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON");
            if status == 401 {
                assert_eq!(body, json!({"message": "Invalid authorization header"}));
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [401, 401, 401, 200]);
        let recorded = fake.requests();
        assert_eq!(
            recorded.iter().map(|r| r.status).collect::<Vec<_>>(),
            [401, 401, 401, 200]
        );
        assert_eq!(
            recorded.iter().map(|r| r.authenticated).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        assert_eq!(recorded[3].method, "GET");
        assert_eq!(recorded[3].path, "/api/public/v2/observations");
        assert_eq!(fake.request_count(), 4);
    }

    #[tokio::test]
    async fn v2_cursor_pagination_is_stable_under_inserts() {
        let fake = LangfuseFake::start(PK, SK).await;
        // Seven observations over two traces; o2 and o3 share a start time (tie broken by id).
        for (i, secs) in [10, 20, 30, 30, 50, 60, 70].into_iter().enumerate() {
            let trace = if i % 2 == 0 { "ta" } else { "tb" };
            fake.add_observation(FakeObservation::generation(
                format!("o{i}"),
                trace,
                t(secs),
                t(secs + 1),
                "m",
                1,
                1,
                0.001,
            ));
        }
        let (status, _, page1) = get(&fake, "/api/public/v2/observations", &[("limit", "3")]).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&page1), ["o6", "o5", "o4"]);
        let mut cursor = page1["meta"]["cursor"]
            .as_str()
            .expect("cursor on a non-last page")
            .to_owned();

        // Inserted between pages: one newer than everything, one older, and two at the cursor's
        // start time (o4 @50s) on either side of its id.
        fake.add_observation(FakeObservation::span("o9-new", "ta", t(100), t(101)));
        fake.add_observation(FakeObservation::span("o0-old", "tb", t(1), t(2)));
        fake.add_observation(FakeObservation::span("o5-tie", "ta", t(50), t(51)));
        fake.add_observation(FakeObservation::span("o35-tie", "ta", t(50), t(51)));

        let mut seen = ids(&page1);
        loop {
            let (status, _, page) = get(
                &fake,
                "/api/public/v2/observations",
                &[("limit", "3"), ("cursor", &cursor)],
            )
            .await;
            assert_eq!(status, 200);
            seen.extend(ids(&page));
            match page["meta"].get("cursor").and_then(Value::as_str) {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates in {seen:?}");
        // Everything after the cursor position, nothing before it.
        assert_eq!(
            seen,
            [
                "o6", "o5", "o4", "o35-tie", "o3", "o2", "o1", "o0", "o0-old"
            ]
        );

        // A fresh scan sees the newer rows too.
        let (_, _, all) = get(&fake, "/api/public/v2/observations", &[("limit", "1000")]).await;
        assert_eq!(ids(&all).len(), 11);
        assert_eq!(ids(&all)[0], "o9-new");
        assert!(all["meta"].get("cursor").is_none_or(Value::is_null));
    }

    #[tokio::test]
    async fn v2_field_groups_select_fields() {
        let fake = seeded().await;
        fake.add_observation(
            FakeObservation::generation("o3", "t1", t(6), t(7), "gpt-4o-mini", 10, 5, 0.0001)
                .user("u-own"),
        );
        let path = "/api/public/v2/observations";

        let (_, _, default) = get(&fake, path, &[("traceId", "t1")]).await;
        let o1 = default["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|o| o["id"] == "o1")
            .expect("o1");
        for key in [
            "id",
            "traceId",
            "startTime",
            "endTime",
            "projectId",
            "parentObservationId",
            "type",
            "name",
            "level",
            "userId",
            "sessionId",
            "isRootObservation",
            "environment",
        ] {
            assert!(o1.get(key).is_some(), "default field {key} missing: {o1}");
        }
        for key in [
            "usageDetails",
            "costDetails",
            "totalCost",
            "metadata",
            "latency",
            "tags",
        ] {
            assert!(
                o1.get(key).is_none(),
                "{key} returned without its group: {o1}"
            );
        }
        assert_eq!(o1["startTime"], "2026-01-01T00:00:00.000Z");
        assert_eq!(o1["endTime"], "2026-01-01T00:00:02.000Z");
        assert_eq!(o1["type"], "GENERATION");
        assert_eq!(o1["userId"], "u1", "inherited from the trace");
        assert_eq!(o1["sessionId"], "s1");
        assert_eq!(default["data"][0]["id"], "o3");
        assert_eq!(default["data"][0]["userId"], "u-own");

        let (_, _, selected) = get(
            &fake,
            path,
            &[
                ("traceId", "t1"),
                ("type", "GENERATION"),
                ("fields", "core,usage,model,metrics,trace_context,metadata"),
            ],
        )
        .await;
        assert_eq!(ids(&selected), ["o3", "o1"]);
        let o1 = &selected["data"][1];
        assert!(o1.get("name").is_none(), "basic not requested: {o1}");
        assert_eq!(
            o1["usageDetails"],
            json!({"input": 100, "output": 50, "total": 150})
        );
        assert_eq!(o1["costDetails"]["total"], json!(0.003));
        assert_eq!(o1["totalCost"], json!(0.003));
        assert_eq!(o1["providedModelName"], "gpt-4o");
        assert_eq!(o1["latency"], json!(2.0));
        assert_eq!(o1["tags"], json!(["prod"]));
        assert_eq!(o1["traceName"], "chat");
        assert_eq!(
            o1["metadata"],
            json!({"stripeCustomerId": "cus_1"}),
            "trace metadata propagated to observations"
        );

        let (status, _, body) = get(&fake, path, &[("fields", "core,bogus")]).await;
        assert_eq!(status, 400);
        assert!(body["message"].as_str().expect("message").contains("bogus"));
    }

    #[tokio::test]
    async fn v2_validates_limit_cursor_and_filters() {
        let fake = seeded().await;
        let path = "/api/public/v2/observations";
        for bad in [
            vec![("limit", "0")],
            vec![("limit", "1001")],
            vec![("limit", "ten")],
            vec![("cursor", "not base64!")],
            vec![("cursor", "eyJub3BlIjoxfQ==")],
            vec![("fromStartTime", "yesterday")],
            vec![("toStartTime", "2026-13-01T00:00:00Z")],
        ] {
            let (status, _, body) = get(&fake, path, &bad).await;
            assert_eq!(status, 400, "{bad:?} → {body}");
            assert!(body["message"].is_string());
        }
        let (status, _, _) = get(&fake, path, &[("limit", "1000")]).await;
        assert_eq!(status, 200);

        // fromStartTime inclusive, toStartTime exclusive.
        let (_, _, body) = get(
            &fake,
            path,
            &[
                ("fromStartTime", "2026-01-01T00:00:01Z"),
                ("toStartTime", "2026-01-01T00:00:05Z"),
            ],
        )
        .await;
        assert_eq!(ids(&body), ["o2"]);
        let (_, _, body) = get(&fake, path, &[("toStartTime", "2026-01-01T00:00:01Z")]).await;
        assert_eq!(ids(&body), ["o1"]);
        let (_, _, body) = get(&fake, path, &[("type", "SPAN")]).await;
        assert_eq!(ids(&body), ["o2"]);
        let (_, _, body) = get(&fake, path, &[("userId", "u1")]).await;
        assert_eq!(ids(&body), ["o2", "o1"]);
        let (_, _, body) = get(&fake, path, &[("traceId", "nope")]).await;
        assert_eq!(ids(&body), Vec::<String>::new());
    }

    #[tokio::test]
    async fn legacy_trace_list_pages_and_metrics() {
        let fake = seeded().await;
        for i in 1..=4 {
            fake.add_trace(FakeTrace::new(format!("t{}", i + 1), t(i * 10)).user("u2"));
        }
        let path = "/api/public/traces";

        let (status, _, page1) = get(&fake, path, &[("limit", "2")]).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&page1), ["t5", "t4"]);
        assert_eq!(
            page1["meta"],
            json!({"page": 1, "limit": 2, "totalItems": 5, "totalPages": 3})
        );
        let (_, _, page3) = get(&fake, path, &[("limit", "2"), ("page", "3")]).await;
        assert_eq!(ids(&page3), ["t1"]);
        let (_, _, page4) = get(&fake, path, &[("limit", "2"), ("page", "4")]).await;
        assert_eq!(ids(&page4), Vec::<String>::new());
        let (_, _, asc) = get(&fake, path, &[("orderBy", "timestamp.asc"), ("limit", "2")]).await;
        assert_eq!(ids(&asc), ["t1", "t2"]);

        // Default: all groups.
        let t1 = &page3["data"][0];
        assert_eq!(
            t1["latency"],
            json!(5.0),
            "seconds from first start to last end"
        );
        assert_eq!(t1["totalCost"], json!(0.003));
        assert_eq!(t1["observations"], json!(["o1", "o2"]));
        assert_eq!(t1["metadata"], json!({"stripeCustomerId": "cus_1"}));
        assert_eq!(t1["userId"], "u1");
        assert_eq!(t1["timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(t1["htmlPath"], format!("/project/{PROJECT_ID}/traces/t1"));

        // Without metrics: -1; without observations / io: empty.
        let (_, _, core) = get(&fake, path, &[("fields", "core"), ("userId", "u1")]).await;
        let t1 = &core["data"][0];
        assert_eq!(t1["latency"], json!(-1.0));
        assert_eq!(t1["totalCost"], json!(-1.0));
        assert_eq!(t1["observations"], json!([]));
        assert_eq!(t1["metadata"], Value::Null);
        let (_, _, metrics) =
            get(&fake, path, &[("fields", "core,metrics"), ("userId", "u1")]).await;
        assert_eq!(metrics["data"][0]["latency"], json!(5.0));

        // Filters: fromTimestamp inclusive, toTimestamp exclusive, tags.
        let (_, _, window) = get(
            &fake,
            path,
            &[
                ("fromTimestamp", "2026-01-01T00:00:10Z"),
                ("toTimestamp", "2026-01-01T00:00:30Z"),
            ],
        )
        .await;
        assert_eq!(ids(&window), ["t3", "t2"]);
        let (_, _, tagged) = get(&fake, path, &[("tags", "prod")]).await;
        assert_eq!(ids(&tagged), ["t1"]);

        for bad in [
            vec![("page", "0")],
            vec![("page", "-1")],
            vec![("limit", "0")],
            vec![("limit", "101")],
            vec![("orderBy", "timestamp.sideways")],
            vec![("fields", "core,usage")],
            vec![("fromTimestamp", "not-a-date")],
        ] {
            let (status, _, body) = get(&fake, path, &bad).await;
            assert_eq!(status, 400, "{bad:?} → {body}");
        }
    }

    #[tokio::test]
    async fn legacy_trace_by_id_and_404() {
        let fake = seeded().await;
        let (status, _, trace) = get(&fake, "/api/public/traces/t1", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(trace["id"], "t1");
        assert_eq!(trace["latency"], json!(5.0));
        assert_eq!(trace["totalCost"], json!(0.003));
        let o1 = &trace["observations"][0];
        assert_eq!(o1["id"], "o1");
        assert_eq!(o1["traceId"], "t1");
        assert_eq!(o1["type"], "GENERATION");
        assert_eq!(o1["model"], "gpt-4o");
        assert_eq!(
            o1["usage"],
            json!({"input": 100, "output": 50, "total": 150, "unit": "TOKENS",
                   "inputCost": 0.002, "outputCost": 0.001, "totalCost": 0.003})
        );
        assert_eq!(o1["calculatedTotalCost"], json!(0.003));
        assert_eq!(o1["latency"], json!(2.0));
        assert_eq!(trace["observations"][1]["traceId"], "t1", "normalised");
        assert_eq!(trace["observations"][1]["usage"]["total"], json!(0));

        let (_, _, core) = get(&fake, "/api/public/traces/t1", &[("fields", "core")]).await;
        assert_eq!(core["totalCost"], json!(-1.0));
        assert_eq!(core["observations"], json!([]));

        let (status, _, body) = get(&fake, "/api/public/traces/missing", &[]).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"message": "Trace missing not found within authorized project",
                   "error": "LangfuseNotFoundError"})
        );

        assert!(fake.remove_trace("t1"));
        let (status, _, _) = get(&fake, "/api/public/traces/t1", &[]).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn late_observation_is_appended_to_its_trace() {
        let fake = seeded().await;
        fake.add_observation(FakeObservation::generation(
            "o-late",
            "t1",
            t(8),
            t(10),
            "gpt-4o",
            10,
            10,
            0.001,
        ));
        let (_, _, trace) = get(&fake, "/api/public/traces/t1", &[]).await;
        assert_eq!(trace["observations"].as_array().expect("array").len(), 3);
        assert_eq!(trace["latency"], json!(10.0));
        let total = trace["totalCost"].as_f64().expect("number");
        assert!((total - 0.004).abs() < 1e-12, "{total}");

        // An observation for an unknown trace creates it.
        fake.add_observation(FakeObservation::span("x1", "t-new", t(50), t(51)));
        let (status, _, created) = get(&fake, "/api/public/traces/t-new", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(created["timestamp"], "2026-01-01T00:00:50.000Z");
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_headers() {
        let fake = seeded().await;
        fake.set_rate_limit(Some(2));
        let path = "/api/public/v2/observations";
        let now = Utc::now().timestamp();

        // An unauthenticated request is not counted.
        let unauthenticated = reqwest::get(format!("{}{path}", fake.base_url()))
            .await
            .expect("request");
        assert_eq!(unauthenticated.status().as_u16(), 401);

        let (status, headers, _) = get(&fake, path, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-ratelimit-limit"), "2");
        assert_eq!(header(&headers, "x-ratelimit-remaining"), "1");
        let (status, headers, _) = get(&fake, path, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");

        let (status, headers, body) = get(&fake, "/api/public/traces", &[]).await;
        assert_eq!(status, 429);
        assert!(body["message"].is_string());
        let retry_after: u64 = header(&headers, "retry-after").parse().expect("integer");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(header(&headers, "x-ratelimit-limit"), "2");
        assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
        let reset: i64 = header(&headers, "x-ratelimit-reset")
            .parse()
            .expect("integer");
        assert!(reset > now && reset <= now + 62, "{reset} vs {now}");

        fake.set_rate_limit(None);
        let (status, headers, _) = get(&fake, path, &[]).await;
        assert_eq!(status, 200);
        assert!(headers.get("x-ratelimit-limit").is_none());
    }

    #[tokio::test]
    async fn fail_next_injects_errors_then_recovers() {
        let fake = seeded().await;
        fake.fail_next(2, 503);
        let path = "/api/public/traces/t1";
        for _ in 0..2 {
            let (status, headers, body) = get(&fake, path, &[]).await;
            assert_eq!(status, 503);
            assert!(body["message"].is_string());
            assert!(headers.get("retry-after").is_none());
        }
        let (status, _, _) = get(&fake, path, &[]).await;
        assert_eq!(status, 200);

        fake.fail_next(1, 429);
        let (status, headers, _) = get(&fake, path, &[]).await;
        assert_eq!(status, 429);
        assert_eq!(header(&headers, "retry-after"), "1");
        assert_eq!(
            fake.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
            [503, 503, 200, 429]
        );
    }

    #[tokio::test]
    async fn scores_upsert_by_id_and_validate() {
        let fake = seeded().await;
        let client = reqwest::Client::new();
        let url = format!("{}/api/public/scores", fake.base_url());
        let post = |body: Value| {
            client
                .post(&url)
                .basic_auth(PK, Some(SK))
                .json(&body)
                .send()
        };

        for value in [1, 2] {
            let response = post(json!({"id": "billed-t1", "traceId": "t1", "name": "billed",
                                       "value": value, "dataType": "NUMERIC"}))
            .await
            .expect("request");
            assert_eq!(response.status().as_u16(), 200);
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body, json!({"id": "billed-t1"}));
        }
        let response = post(json!({"traceId": "t1", "name": "status", "value": "billed"}))
            .await
            .expect("request");
        let generated: Value = response.json().await.expect("JSON");
        assert!(!generated["id"].as_str().expect("id").is_empty());

        let scores = fake.scores();
        assert_eq!(scores.len(), 2);
        assert_eq!(scores[0]["id"], "billed-t1");
        assert_eq!(scores[0]["value"], json!(2));

        for bad in [
            json!({"name": "x"}),
            json!({"value": 1}),
            json!({"name": "x", "value": [1]}),
        ] {
            let response = post(bad).await.expect("request");
            assert_eq!(response.status().as_u16(), 400);
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["message"], "Invalid request data");
        }
        assert_eq!(fake.scores().len(), 2);

        let (_, _, trace) = get(&fake, "/api/public/traces/t1", &[]).await;
        assert_eq!(trace["scores"][0]["id"], "billed-t1");
        assert_eq!(trace["scores"][0]["value"], json!(2));
        assert_eq!(trace["scores"][1]["stringValue"], "billed");
        let (_, _, list) = get(&fake, "/api/public/traces", &[("userId", "u1")]).await;
        assert_eq!(list["data"][0]["scores"][0], "billed-t1");
    }

    #[tokio::test]
    async fn unknown_routes_latency_and_shutdown() {
        let fake = seeded().await;
        let (status, _, body) = get(&fake, "/api/public/ingestion", &[]).await;
        assert_eq!(status, 404);
        assert!(body["message"].is_string());
        let response = reqwest::Client::new()
            .delete(format!("{}/api/public/v2/observations", fake.base_url()))
            .basic_auth(PK, Some(SK))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 405);

        fake.set_latency(Duration::from_millis(400));
        let slow = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()
            .expect("client")
            .get(format!("{}/api/public/traces", fake.base_url()))
            .basic_auth(PK, Some(SK))
            .send()
            .await;
        assert!(slow.expect_err("times out").is_timeout());
        fake.set_latency(Duration::ZERO);
        // The fake still answers (and records) the abandoned request.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.requests().last().map(|r| r.status), Some(200));

        let base = fake.base_url();
        fake.shutdown_and_wait().await;
        let after = reqwest::Client::new()
            .get(format!("{base}/api/public/traces"))
            .send()
            .await;
        assert!(after.is_err(), "server still serving after shutdown");
    }
}
