//! A fake of the Langfuse public API, following `local/specs/langfuse-openapi.yml` (Langfuse's
//! published OpenAPI document, kept in the repository).
//!
//! Served endpoints:
//! * `GET /api/public/v2/observations` (Langfuse v4 / Cloud): cursor pagination, `fields` groups,
//!   filters `traceId`, `type`, `userId`, `sessionId`, `name`, `fromStartTime` (inclusive),
//!   `toStartTime` (exclusive), or the JSON `filter` (`filter.rs`: Langfuse's column types and
//!   operators, 400 for what Langfuse refuses; it takes precedence); newest first. A request
//!   target over [`LangfuseFake::set_max_url_bytes`] (8 KiB by default) answers 414.
//! * `GET /api/public/traces` and `GET /api/public/traces/{traceId}` (legacy v3): page
//!   pagination, `fields` groups `core,io,scores,observations,metrics`.
//! * `POST /api/public/scores`: score upsert by `id`.
//!
//! Every request passes, in order: routing (unknown path 404, wrong method 405), an injected
//! failure from [`LangfuseFake::fail_next`], HTTP Basic auth (401), the optional per-minute rate
//! limit (429), then the endpoint. [`LangfuseFake::set_latency`] delays every answer.

use std::collections::{BTreeMap, BTreeSet};
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
mod json;
mod model;
mod params;
mod routes;
#[cfg(test)]
mod tests;

pub use model::{FakeObservation, FakeTrace};

use params::{error, injected_failure};

use super::{
    FailPlan, FixedWindow, Incoming, RateDecision, RecordedRequest, Reply, ServerHandle, fake_uuid,
    percent_decode_path,
};

/// The longest request target the fake answers by default (8 KiB).
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;

/// The project id the fake reports on every object (`projectId`, `htmlPath`).
pub const PROJECT_ID: &str = "tracemeter-fake-project";

/// Field groups of `GET /api/public/v2/observations`.
pub(super) const V2_GROUPS: &[&str] = &[
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
pub(super) const V2_DEFAULT_GROUPS: &[&str] = &["core", "basic"];
/// Field groups of the legacy trace endpoints (all returned by default).
pub(super) const LEGACY_GROUPS: &[&str] = &["core", "io", "scores", "observations", "metrics"];

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

    server_handle_methods!();

    /// Rotates the accepted key pair: from now on only `public_key:secret_key` is accepted;
    /// a request with the old pair gets Langfuse's 401.
    pub fn rotate_keys(&self, public_key: &str, secret_key: &str) {
        let mut state = lock(&self.state);
        state.public_key = public_key.to_owned();
        state.secret_key = secret_key.to_owned();
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
