//! In-process HTTP fakes of the outside APIs tracemeter talks to.
//!
//! * [`LangfuseFake`]: the Langfuse public API (v2 observations, the legacy trace endpoints and
//!   score creation), following `local/specs/langfuse-openapi.yml` (Langfuse's published
//!   OpenAPI document, kept in the repository).
//! * [`StripeFake`]: Stripe's `POST /v1/billing/meter_events` and the v2 meter event stream,
//!   with identifier dedup and `Idempotency-Key` replay for 24 hours of the fake's own clock,
//!   the per-customer concurrency limit and fault injection.
//!
//! Each fake binds `127.0.0.1:0`, serves with axum on the current tokio runtime and keeps its
//! state behind an `Arc<std::sync::Mutex<_>>`, so every control and inspection method is a cheap
//! synchronous `&self` call. Handles are `Clone`; the server stops when the last handle is
//! dropped or when `shutdown()` is called.
//!
//! Each request is answered by a task of its own, so a client that gives up (a timeout) does not
//! cancel the fake's work: the request is still recorded and, for Stripe, the event still lands,
//! as on the real services.

/// The methods every fake has through its `server: Arc<ServerHandle>`: its URL, address and
/// shutdown.
macro_rules! server_handle_methods {
    () => {
        /// `http://127.0.0.1:PORT` (no trailing slash), for the client's base URL.
        pub fn base_url(&self) -> String {
            self.server.base_url()
        }

        /// The bound socket address.
        pub fn addr(&self) -> std::net::SocketAddr {
            self.server.addr()
        }

        /// Stops the server (graceful: in-flight requests finish, no new connections are
        /// accepted).
        pub fn shutdown(&self) {
            self.server.shutdown();
        }

        /// Stops the server and waits until it no longer serves.
        pub async fn shutdown_and_wait(&self) {
            self.server.shutdown_and_wait().await;
        }
    };
}

pub mod langfuse;
mod limits;
pub mod recorder;
pub mod stripe;

pub(crate) use limits::{FailPlan, FixedWindow, RateDecision};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use langfuse::{FakeObservation, FakeTrace, LangfuseFake};
pub use stripe::{RecordedMeterEvent, StripeFake};

/// Largest request body the fakes accept (larger bodies get 413).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Request headers copied into [`RecordedRequest::headers`] (lower-case names). Credentials
/// (`authorization`) are deliberately not recorded.
const RECORDED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "idempotency-key",
    "stripe-account",
    "stripe-version",
    "user-agent",
    "x-langfuse-public-key",
    "x-langfuse-sdk-name",
    "x-langfuse-sdk-version",
];

/// One request as a fake received and answered it.
///
/// Requests are recorded when the fake has finished answering them, so under concurrency the
/// order of [`LangfuseFake::requests`] / [`StripeFake::requests`] is completion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request path without the query string, e.g. `/api/public/v2/observations`.
    pub path: String,
    /// Raw (still percent-encoded) query string, if any.
    pub query: Option<String>,
    /// Selected request headers (lower-case names): accept, content-type, idempotency-key,
    /// stripe-account, stripe-version, user-agent and the x-langfuse-* SDK headers.
    pub headers: BTreeMap<String, String>,
    /// Request body (lossy UTF-8), empty for requests without one.
    pub body: String,
    /// Whether the request carried valid credentials (false when auth was never checked, e.g. an
    /// unknown route or an injected failure).
    pub authenticated: bool,
    /// HTTP status the fake answered.
    pub status: u16,
    /// Wall-clock time the request arrived.
    pub received_at: DateTime<Utc>,
}

impl RecordedRequest {
    /// A recorded header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        parse_urlencoded(query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The decoded form fields of an `application/x-www-form-urlencoded` body (empty if the
    /// body is not valid form data).
    pub fn form(&self) -> Vec<(String, String)> {
        parse_urlencoded(&self.body).unwrap_or_default()
    }
}

/// A request read off the wire, with its body, ready to be handled synchronously.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) received_at: DateTime<Utc>,
}

impl Incoming {
    /// Reads the whole request; a body over [`MAX_BODY_BYTES`] is an error.
    pub(crate) async fn read(req: Request) -> Result<Self, axum::Error> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await?;
        Ok(Self {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
            received_at: Utc::now(),
        })
    }

    /// A header value as text (None if absent or not visible ASCII).
    pub(crate) fn header(&self, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Decoded query parameters, in order.
    pub(crate) fn query_params(&self) -> Result<Vec<(String, String)>, String> {
        parse_urlencoded(self.query.as_deref().unwrap_or(""))
    }

    /// The record of this request once answered with `status`.
    pub(crate) fn record(&self, status: u16, authenticated: bool) -> RecordedRequest {
        let headers = RECORDED_HEADERS
            .iter()
            .filter_map(|name| {
                self.header(*name)
                    .map(|v| ((*name).to_owned(), v.to_owned()))
            })
            .collect();
        RecordedRequest {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers,
            body: String::from_utf8_lossy(&self.body).into_owned(),
            authenticated,
            status,
            received_at: self.received_at,
        }
    }
}

/// A JSON response, cloneable so it can be stored and replayed exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// A JSON reply with the given status.
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// Adds (or replaces) a response header.
    pub(crate) fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.set_header(name, value);
        self
    }

    /// Sets (or replaces) a response header in place.
    pub(crate) fn set_header(&mut self, name: &str, value: impl ToString) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_string()));
    }

    /// The value of a response header.
    #[cfg(test)]
    pub(crate) fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Converts into an HTTP response (invalid statuses become 500, invalid headers are dropped).
    pub(crate) fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// The running axum server of a fake. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    addr: SocketAddr,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ServerHandle {
    /// Binds `127.0.0.1:0` and serves `router` on the current tokio runtime until shut down.
    pub(crate) async fn spawn(router: Router) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A dropped sender also means "stop".
                    let _ = rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, %addr, "fake server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            shutdown: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Signals a graceful shutdown: stop accepting, finish in-flight requests, close idle
    /// connections. Idempotent.
    pub(crate) fn shutdown(&self) {
        let sender = self
            .shutdown
            .lock()
            .expect("fake server shutdown mutex poisoned")
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }

    /// Signals shutdown and waits until the server task has finished.
    pub(crate) async fn shutdown_and_wait(&self) {
        self.shutdown();
        let task = self
            .task
            .lock()
            .expect("fake server task mutex poisoned")
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Decodes `application/x-www-form-urlencoded` text (also used for query strings): `+` is a
/// space, `%XX` a byte; malformed escapes are kept literally. Fails on invalid UTF-8.
pub(crate) fn parse_urlencoded(input: &str) -> Result<Vec<(String, String)>, String> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key, true)?, decode(value, true)?))
        })
        .collect()
}

/// Percent-decodes one path segment (`+` stays a plus sign).
pub(crate) fn percent_decode_path(input: &str) -> Result<String, String> {
    decode(input, false)
}

fn decode(input: &str, plus_as_space: bool) -> Result<String, String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid UTF-8 in {input:?}"))
}

/// A process-wide counter, used to make generated ids unique.
pub(crate) fn next_sequence() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(1);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// A random-looking, unique, UUID-shaped id (version 4 layout, not cryptographically random).
pub(crate) fn fake_uuid() -> String {
    let seq = next_sequence();
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let mixed = nanos ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (mixed >> 32) as u32,
        (mixed >> 16) as u16,
        (seq & 0xfff) as u16,
        (nanos & 0xfff) as u16,
        seq.wrapping_mul(0x0000_0100_0000_01B3) & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_decoding() {
        let pairs = parse_urlencoded("a=1&b=x+y&c=%2B%2F%3D&d&e=%zz&payload%5Bvalue%5D=5&f=%4")
            .expect("valid");
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "+/=".into()),
                ("d".into(), "".into()),
                ("e".into(), "%zz".into()),
                ("payload[value]".into(), "5".into()),
                ("f".into(), "%4".into()),
            ]
        );
        assert!(parse_urlencoded("a=%ff").is_err());
    }

    #[test]
    fn uuids_are_unique_and_shaped() {
        let a = fake_uuid();
        let b = fake_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn reply_headers_replace() {
        let reply = Reply::json(200, &serde_json::json!({}))
            .header("X-A", 1)
            .header("x-a", 2);
        assert_eq!(reply.get_header("X-A"), Some("2"));
        assert_eq!(reply.headers.len(), 1);
    }
}
