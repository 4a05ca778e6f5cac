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

use anyhow::Result;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
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
}

/// What the proxy saw, by operation (`DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessageBatch`).
pub type Counts = BTreeMap<String, OpCount>;

#[derive(Clone)]
struct ProxyState {
    client: reqwest::Client,
    target: String,
    counts: Arc<Mutex<Counts>>,
}

/// A running proxy.
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl CountingProxy {
    /// Starts a proxy on a free loopback port forwarding to `target` (`http://127.0.0.1:port`).
    pub async fn start(target: &str) -> Result<CountingProxy> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let state = ProxyState {
            client: reqwest::Client::builder().no_proxy().build()?,
            target: target.trim_end_matches('/').to_string(),
            counts: counts.clone(),
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(CountingProxy {
            addr,
            counts,
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

    /// Forgets the counts.
    pub fn reset(&self) {
        self.counts
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

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let (wcu, rcu) = if op.starts_with("DynamoDB_") {
        capacity(&op, &body)
    } else {
        (0.0, 0.0)
    };
    let url = format!(
        "{}{}",
        state.target,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = state.client.request(method, url).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let empty_receive = op.ends_with(".ReceiveMessage")
        && status.is_success()
        && !String::from_utf8_lossy(&bytes).contains("\"Messages\"");
    {
        let mut counts = state.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(op).or_default();
        c.calls += 1;
        c.wcu += wcu;
        c.rcu += rcu;
        if empty_receive {
            c.empty += 1;
        }
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// Capacity units a DynamoDB request consumes (items assumed within 1 KB / 4 KB).
pub fn capacity(op: &str, body: &[u8]) -> (f64, f64) {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let consistent = |v: &Value| v.get("ConsistentRead").and_then(Value::as_bool) == Some(true);
    let read = |v: &Value| if consistent(v) { 1.0 } else { 0.5 };
    match op.rsplit('.').next().unwrap_or_default() {
        "PutItem" | "UpdateItem" | "DeleteItem" => (1.0, 0.0),
        "BatchWriteItem" => {
            let items = json
                .get("RequestItems")
                .and_then(Value::as_object)
                .map(|tables| {
                    tables
                        .values()
                        .filter_map(Value::as_array)
                        .map(Vec::len)
                        .sum::<usize>()
                })
                .unwrap_or(0);
            (items as f64, 0.0)
        }
        "TransactWriteItems" => {
            let items = json
                .get("TransactItems")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let checks = items
                .iter()
                .filter(|i| i.get("ConditionCheck").is_some())
                .count();
            let writes = items.len() - checks;
            (2.0 * writes as f64, 2.0 * checks as f64)
        }
        "GetItem" | "Query" => (0.0, read(&json)),
        "BatchGetItem" => {
            let units = json
                .get("RequestItems")
                .and_then(Value::as_object)
                .map(|tables| {
                    tables
                        .values()
                        .map(|t| {
                            let keys = t.get("Keys").and_then(Value::as_array).map_or(0, Vec::len);
                            keys as f64 * read(t)
                        })
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (0.0, units)
        }
        "TransactGetItems" => {
            let items = json
                .get("TransactItems")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            (0.0, 2.0 * items as f64)
        }
        _ => (0.0, 0.0),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn capacity_follows_dynamodb_rules() {
        let tx = br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}}]}"#;
        assert_eq!(
            capacity("DynamoDB_20120810.TransactWriteItems", tx),
            (4.0, 2.0)
        );
        assert_eq!(capacity("DynamoDB_20120810.UpdateItem", b"{}"), (1.0, 0.0));
        assert_eq!(
            capacity("DynamoDB_20120810.GetItem", br#"{"ConsistentRead":true}"#),
            (0.0, 1.0)
        );
        let batch = br#"{"RequestItems":{"t":{"Keys":[{},{},{}]}}}"#;
        assert_eq!(
            capacity("DynamoDB_20120810.BatchGetItem", batch),
            (0.0, 1.5)
        );
        let bw = br#"{"RequestItems":{"t":[{"PutRequest":{}},{"PutRequest":{}}]}}"#;
        assert_eq!(capacity("DynamoDB_20120810.BatchWriteItem", bw), (2.0, 0.0));
    }

    #[tokio::test]
    async fn forwards_and_counts() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let app = Router::new().fallback(|| async { r#"{"Messages":[]}"# });
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
}
