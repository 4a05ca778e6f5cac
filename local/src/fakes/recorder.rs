//! A recording HTTP server for the golden request comparison (docs/conformance.md).
//!
//! [`Recorder`] answers every request as `tests/goldens/answers.json` says (the same answers
//! `dev/goldens.py` gives the official SDKs) and keeps each request as the golden files hold
//! it: method, path, raw query, raw body, and the headers that carry meaning (the
//! `Authorization` scheme only, never its credentials). [`normalise`] turns such a record
//! into what is compared: the query as sorted decoded pairs (a JSON-valued parameter such as
//! Langfuse's `filter` as its JSON value), the body as sorted form pairs or a JSON value.
//!
//! With [`Recorder::forward`] it is a recording proxy instead: each request goes on to a
//! fake and the exchange (request and answer) is kept, for validating both against an API
//! description.

use super::{Incoming, Reply, ServerHandle, parse_urlencoded};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// The request headers the golden files keep.
pub const GOLDEN_HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "stripe-version",
];

#[derive(Debug)]
struct Recording {
    answers: Vec<Value>,
    forward: Option<(reqwest::Client, String)>,
    requests: Vec<Value>,
}

type Shared = Arc<Mutex<Recording>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Recording> {
    state.lock().expect("Recorder state mutex poisoned")
}

/// A running recorder on `127.0.0.1:<free port>`; stops when dropped.
#[derive(Debug)]
pub struct Recorder {
    state: Shared,
    server: ServerHandle,
}

impl Recorder {
    /// Answers as `answers` (the `answers` array of `tests/goldens/answers.json`) says.
    pub async fn start(answers: Vec<Value>) -> std::io::Result<Recorder> {
        Self::spawn(answers, None).await
    }

    /// Forwards every request to `base_url` and records the exchange (the answer under
    /// `response`: `status` and `body` as JSON).
    pub async fn forward(base_url: &str) -> std::io::Result<Recorder> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        Self::spawn(Vec::new(), Some((client, base_url.to_string()))).await
    }

    async fn spawn(
        answers: Vec<Value>,
        forward: Option<(reqwest::Client, String)>,
    ) -> std::io::Result<Recorder> {
        let state: Shared = Arc::new(Mutex::new(Recording {
            answers,
            forward,
            requests: Vec::new(),
        }));
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = ServerHandle::spawn(router).await?;
        Ok(Recorder { state, server })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The requests recorded since the last call, in arrival order.
    pub fn take(&self) -> Vec<Value> {
        std::mem::take(&mut lock(&self.state).requests)
    }
}

async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let Ok(incoming) = Incoming::read(request).await else {
        return Reply::json(413, &json!({"error": "body too large"})).into_response();
    };
    let mut record = recorded(&incoming);
    let forward = lock(&state).forward.clone();
    let reply = match forward {
        Some((client, base)) => forwarded(&client, &base, &incoming).await,
        None => answer(&lock(&state).answers, &incoming),
    };
    if lock(&state).forward.is_some() {
        let body: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        record["response"] = json!({"status": reply.status, "body": body});
    }
    lock(&state).requests.push(record);
    reply.into_response()
}

/// A request as the golden files hold it.
fn recorded(incoming: &Incoming) -> Value {
    let mut headers = serde_json::Map::new();
    for name in GOLDEN_HEADERS {
        if let Some(v) = incoming.header(name) {
            let v = match name {
                "authorization" => v.split(' ').next().unwrap_or_default(),
                _ => v,
            };
            headers.insert(name.to_string(), json!(v));
        }
    }
    json!({
        "method": incoming.method.as_str(),
        "path": incoming.path,
        "query": incoming.query.clone().unwrap_or_default(),
        "headers": headers,
        "body": String::from_utf8_lossy(&incoming.body),
    })
}

/// The first answer matching the request (see `tests/goldens/answers.json`).
fn answer(answers: &[Value], incoming: &Incoming) -> Reply {
    let query = incoming.query.as_deref().unwrap_or_default();
    let found = answers.iter().find(|a| {
        let has = a["query_has"].as_str();
        a["method"] == incoming.method.as_str()
            && path_matches(a["path"].as_str().unwrap_or_default(), &incoming.path)
            && has.is_none_or(|h| {
                query.contains(&format!("{h}=")) == a["present"].as_bool().unwrap_or(true)
            })
    });
    match found {
        Some(a) => Reply::json(
            a["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            &a["body"],
        ),
        None => Reply::json(404, &json!({"error": {"message": "no answer"}})),
    }
}

/// A path pattern of literal segments and `{id}` (any one segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == s.len()
        && p.iter()
            .zip(&s)
            .all(|(p, s)| p == s || (*p == "{id}" && !s.is_empty()))
}

async fn forwarded(client: &reqwest::Client, base: &str, incoming: &Incoming) -> Reply {
    let url = match &incoming.query {
        Some(q) => format!("{base}{}?{q}", incoming.path),
        None => format!("{base}{}", incoming.path),
    };
    let mut request = client.request(incoming.method.clone(), url);
    for (name, value) in &incoming.headers {
        if name != "host" {
            request = request.header(name, value);
        }
    }
    match request.body(incoming.body.clone()).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            Reply {
                status,
                headers: Vec::new(),
                body,
            }
        }
        Err(e) => Reply::json(502, &json!({"error": e.to_string()})),
    }
}

/// What the comparison looks at: method, path, the query as sorted decoded pairs, the body
/// as sorted form pairs (`{"form": ..}`) or a JSON value (`{"json": ..}`), the headers.
pub fn normalise(request: &Value) -> Result<Value, String> {
    let text = |k: &str| request[k].as_str().unwrap_or_default().to_string();
    let mut query = parse_urlencoded(&text("query"))?
        .into_iter()
        .map(|(k, v)| json!([k, json_or_text(&v)]))
        .collect::<Vec<_>>();
    query.sort_by_key(Value::to_string);
    let headers = request["headers"].clone();
    let content_type = headers["content-type"].as_str().unwrap_or_default();
    let raw = text("body");
    let body = if raw.is_empty() {
        Value::Null
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut pairs = parse_urlencoded(&raw)?
            .into_iter()
            .map(|(k, v)| json!([k, v]))
            .collect::<Vec<_>>();
        pairs.sort_by_key(Value::to_string);
        json!({ "form": pairs })
    } else {
        let value: Value = serde_json::from_str(&raw).map_err(|e| format!("body: {e}"))?;
        json!({ "json": numbers_as_f64(value) })
    };
    Ok(json!({
        "method": request["method"], "path": request["path"], "query": query,
        "body": body, "headers": headers,
    }))
}

/// A query value holding JSON (`[..]` or `{..}`) as its value, else as text.
fn json_or_text(v: &str) -> Value {
    match v.starts_with(['[', '{']) {
        true => serde_json::from_str(v).map_or_else(|_| json!(v), numbers_as_f64),
        false => json!(v),
    }
}

/// JSON numbers compare by value: 292 and 292.0 are the same number.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Number(n), |f| json!(f)),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_requests_ignore_order_and_json_spelling_but_not_values() {
        let a = json!({"method": "GET", "path": "/p", "query": "b=2&a%5B0%5D=1&f=%7B%22x%22%3A1%2C%22y%22%3A2%7D",
            "headers": {}, "body": ""});
        let b = json!({"method": "GET", "path": "/p", "query": "a[0]=1&f={\"y\":2.0,\"x\":1}&b=2",
            "headers": {}, "body": ""});
        assert_eq!(normalise(&a), normalise(&b));
        let c = json!({"method": "GET", "path": "/p", "query": "a=1&b=2&f={\"x\":1,\"y\":2}",
            "headers": {}, "body": ""});
        assert_ne!(normalise(&a), normalise(&c), "types[0] is not types");
        assert!(path_matches(
            "/v1/billing/meters/{id}",
            "/v1/billing/meters/mtr_1"
        ));
        assert!(!path_matches(
            "/v1/billing/meters/{id}",
            "/v1/billing/meters/m/event_summaries"
        ));
    }
}
