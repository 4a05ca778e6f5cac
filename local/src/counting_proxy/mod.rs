//! A counting HTTP proxy between the AWS SDK and moto, on 127.0.0.1: it forwards every
//! request unchanged and counts the calls per operation (`X-Amz-Target`), and for DynamoDB
//! the capacity units the requests consume by DynamoDB's rules, so the benchmark reports
//! observed calls rather than assumed ones.
//!
//! Capacity units, per item up to 1 KB written / 4 KB read (the benchmark checks the item
//! sizes): a standard write is 1 WCU; every item written in `TransactWriteItems` is 2 WCU and
//! every `ConditionCheck` in it 2 RCU; a strongly consistent read is 1 RCU, an eventually
//! consistent one 0.5; transactional reads 2. Conditional writes that fail still consume
//! their units, as on DynamoDB.

mod capacity;
mod grants;

pub use capacity::capacity;
pub use grants::{prefix as item_family, table_grants};

use crate::faults::Chaos;
use anyhow::Result;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Counts of one operation.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct OpCount {
    /// Requests.
    pub calls: u64,
    /// Write capacity units (DynamoDB).
    pub wcu: f64,
    /// Read capacity units (DynamoDB).
    pub rcu: f64,
    /// ReceiveMessage calls that returned no message (SQS).
    pub empty: u64,
    /// Messages in SendMessageBatch calls (SQS).
    pub messages: u64,
}

/// What the proxy saw, by operation (`DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessageBatch`).
pub type Counts = BTreeMap<String, OpCount>;

/// IAM grants calls needed: `(dynamodb:Action, item family)`.
pub type Grants = std::collections::BTreeSet<(String, String)>;

/// The fault kinds of [`CountingProxy::start_with`]: `throttle` (DynamoDB's
/// `ProvisionedThroughputExceededException` or `ThrottlingException`, SQS's
/// `ThrottlingException`, 400), `500` (`InternalServerError`), `reset_before` (the
/// connection closed without an answer, the request never reaching moto) and `reset_after`
/// (moto carried the request out, then the connection closed: the answer is lost).
pub const AWS_KINDS: &[&str] = &["throttle", "500", "reset_before", "reset_after"];

#[derive(Clone)]
struct ProxyState {
    client: reqwest::Client,
    target: String,
    counts: Arc<Mutex<Counts>>,
    families: Arc<Mutex<Counts>>,
    grants: Arc<Mutex<Grants>>,
    chaos: Option<Arc<Chaos>>,
    /// Answer SendMessageBatch here, every entry successful, instead of forwarding it.
    absorb_sends: bool,
}

/// A running proxy.
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    families: Arc<Mutex<Counts>>,
    grants: Arc<Mutex<Grants>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl CountingProxy {
    /// Starts a proxy on a free loopback port forwarding to `target` (`http://127.0.0.1:port`).
    pub async fn start(target: &str) -> Result<CountingProxy> {
        CountingProxy::start_with(target, None).await
    }

    /// Like [`CountingProxy::start`], injecting the faults of [`AWS_KINDS`] on a share of
    /// calls as `chaos` decides.
    pub async fn start_with(target: &str, chaos: Option<Arc<Chaos>>) -> Result<CountingProxy> {
        CountingProxy::serve(target, chaos, false).await
    }

    /// Like [`CountingProxy::start`], but `SendMessageBatch` never reaches moto: the proxy
    /// answers it, every entry sent, and counts the messages. For a sender measured alone
    /// (moto's SQS slows down with the depth of the queue).
    pub async fn start_absorbing_sends(target: &str) -> Result<CountingProxy> {
        CountingProxy::serve(target, None, true).await
    }

    async fn serve(
        target: &str,
        chaos: Option<Arc<Chaos>>,
        absorb_sends: bool,
    ) -> Result<CountingProxy> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let families = Arc::new(Mutex::new(Counts::new()));
        let grants = Arc::new(Mutex::new(Grants::new()));
        let state = ProxyState {
            client: reqwest::Client::builder().no_proxy().build()?,
            target: target.trim_end_matches('/').to_string(),
            counts: counts.clone(),
            families: families.clone(),
            grants: grants.clone(),
            chaos,
            absorb_sends,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        // Plain hyper rather than axum: a service error closes the connection without an
        // answer, which is how a reset is injected.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = state.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                forward(state.clone(), request)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
        });
        Ok(CountingProxy {
            addr,
            counts,
            families,
            grants,
            shutdown: Some(tx),
        })
    }

    /// The proxy's URL, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// DynamoDB's counts by operation and the item families it touched
    /// (`GetItem BUDGET#`, `TransactWriteItems COUNTER# TRACE#`): where the calls go.
    pub fn by_family(&self) -> Counts {
        self.families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The IAM grants the DynamoDB calls that reached moto needed: `(action, item family)`
    /// (see [`table_grants`]).
    pub fn grants(&self) -> Grants {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the counts and the grants.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The error that makes hyper drop the connection: an injected reset.
fn reset(when: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        format!("connection reset {when} (injected)"),
    )
}

/// An AWS JSON-protocol error answer, as DynamoDB and SQS send them.
fn aws_error(op: &str, status: u16, code: &str, message: &str) -> Response {
    let sqs = op.starts_with("AmazonSQS.");
    let namespace = if sqs {
        "com.amazonaws.sqs"
    } else if code == "ThrottlingException" {
        "com.amazon.coral.availability"
    } else {
        "com.amazonaws.dynamodb.v20120810"
    };
    let body = serde_json::json!({"__type": format!("{namespace}#{code}"), "message": message});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if sqs && let Ok(v) = HeaderValue::from_str(&format!("{code};Sender")) {
        headers.insert("x-amzn-query-error", v);
    }
    response
}

/// The injected answer of a fault that stops the request before moto.
fn refuse(
    chaos: &Chaos,
    kind: &str,
    op: &str,
) -> Option<std::result::Result<Response, std::io::Error>> {
    match kind {
        "throttle" => {
            let code = if op.starts_with("DynamoDB_") && chaos.below(2) == 0 {
                "ProvisionedThroughputExceededException"
            } else {
                "ThrottlingException"
            };
            Some(Ok(aws_error(
                op,
                400,
                code,
                "Rate of requests exceeds the allowed throughput (injected).",
            )))
        }
        "500" => Some(Ok(aws_error(
            op,
            500,
            if op.starts_with("AmazonSQS.") {
                "InternalError"
            } else {
                "InternalServerError"
            },
            "Internal server error (injected).",
        ))),
        "reset_before" => Some(Err(reset("before the request reached moto"))),
        _ => None,
    }
}

async fn forward(
    state: ProxyState,
    request: Request<hyper::body::Incoming>,
) -> std::result::Result<Response, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let headers = parts.headers;
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let fault = state
        .chaos
        .as_ref()
        .and_then(|c| c.draw().map(|kind| (c, kind)));
    if let Some(answer) = fault.and_then(|(chaos, kind)| refuse(chaos, kind, &op)) {
        return answer;
    }
    let (wcu, rcu) = if op.starts_with("DynamoDB_") {
        state.record_grants(&op, &body);
        let units = capacity(&op, &body);
        state.count_family(&op, &body, units);
        units
    } else {
        (0.0, 0.0)
    };
    let sent = if op == "AmazonSQS.SendMessageBatch" {
        batch_entries(&body)
    } else {
        Vec::new()
    };
    if state.absorb_sends && !sent.is_empty() {
        state.count(op, (0.0, 0.0), false, sent.len());
        return Ok(all_sent(&sent));
    }
    let url = format!(
        "{}{}",
        state.target,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut request = state.client.request(parts.method, url).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let mut response = Response::new(Body::from(e.to_string()));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(response);
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let empty_receive = op.ends_with(".ReceiveMessage")
        && status.is_success()
        && !String::from_utf8_lossy(&bytes).contains("\"Messages\"");
    state.count(op, (wcu, rcu), empty_receive, sent.len());
    if fault.is_some_and(|(_, kind)| kind == "reset_after") {
        return Err(reset("after moto carried the request out"));
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

impl ProxyState {
    fn record_grants(&self, op: &str, body: &[u8]) {
        let needed = table_grants(op, body);
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.extend(needed);
    }

    /// Counts a DynamoDB call under its operation and the families it touched.
    fn count_family(&self, op: &str, body: &[u8], (wcu, rcu): (f64, f64)) {
        let families: std::collections::BTreeSet<String> =
            table_grants(op, body).into_iter().map(|(_, f)| f).collect();
        let short = op.trim_start_matches("DynamoDB_20120810.");
        let key = format!(
            "{short} {}",
            families.into_iter().collect::<Vec<_>>().join(" ")
        );
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let c = families.entry(key).or_default();
        c.calls += 1;
        c.wcu += wcu;
        c.rcu += rcu;
    }

    fn count(&self, op: String, (wcu, rcu): (f64, f64), empty_receive: bool, messages: usize) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(op).or_default();
        c.calls += 1;
        c.wcu += wcu;
        c.rcu += rcu;
        c.empty += u64::from(empty_receive);
        c.messages += messages as u64;
    }
}

/// The `Id` of every entry of a `SendMessageBatch` request.
fn batch_entries(body: &[u8]) -> Vec<String> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    json.get("Entries")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e.get("Id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// SQS's answer to a `SendMessageBatch` whose every entry was sent.
fn all_sent(ids: &[String]) -> Response {
    let successful: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "Id": id,
                "MessageId": format!("absorbed-{}-{i}", crate::fakes::next_sequence()),
                "MD5OfMessageBody": "",
            })
        })
        .collect();
    let body = serde_json::json!({"Successful": successful, "Failed": []});
    let mut response = Response::new(Body::from(body.to_string()));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_and_counts() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { r#"{"Messages":[]}"# });
        tokio::spawn(async move {
            let _ = axum::serve(upstream, app).await;
        });
        let proxy = CountingProxy::start(&format!("http://{up_addr}"))
            .await
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let body = client
            .post(proxy.url())
            .header("x-amz-target", "DynamoDB_20120810.PutItem")
            .body("{}")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, r#"{"Messages":[]}"#);
        let counts = proxy.counts();
        assert_eq!(counts["DynamoDB_20120810.PutItem"].calls, 1);
        assert_eq!(counts["DynamoDB_20120810.PutItem"].wcu, 1.0);
    }

    #[tokio::test]
    async fn injects_throttles_errors_and_resets() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { "{}" });
        tokio::spawn(async move {
            let _ = axum::serve(upstream, app).await;
        });
        let chaos = Chaos::new("aws", AWS_KINDS, 1.0, 3);
        let proxy = CountingProxy::start_with(&format!("http://{up_addr}"), Some(chaos.clone()))
            .await
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let (mut throttled, mut errors, mut resets) = (0, 0, 0);
        for _ in 0..40 {
            let sent = client
                .post(proxy.url())
                .header("x-amz-target", "DynamoDB_20120810.PutItem")
                .body("{}")
                .send()
                .await;
            match sent {
                Err(_) => resets += 1,
                Ok(r) if r.status() == 400 => {
                    let body = r.text().await.unwrap();
                    assert!(
                        body.contains("Throughput") || body.contains("Throttling"),
                        "{body}"
                    );
                    throttled += 1;
                }
                Ok(r) => {
                    assert_eq!(r.status(), 500);
                    errors += 1;
                }
            }
        }
        let counts = chaos.counts();
        assert_eq!(throttled, counts["throttle"]);
        assert_eq!(errors, counts["500"]);
        assert_eq!(resets, counts["reset_before"] + counts["reset_after"]);
        // Only the requests reset after forwarding reached the upstream.
        assert_eq!(
            proxy.counts()["DynamoDB_20120810.PutItem"].calls,
            counts["reset_after"]
        );
    }
}
