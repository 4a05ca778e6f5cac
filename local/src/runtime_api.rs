//! A minimal AWS Lambda Runtime API on loopback, so the real function binaries (the
//! `bootstrap` Lambda would run) can be invoked locally: the binary polls
//! `/2018-06-01/runtime/invocation/next`, gets the event with its request id and deadline,
//! and posts the response or error back, exactly as in Lambda.

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Reply = std::result::Result<Value, String>;

#[derive(Default)]
struct Shared {
    waiting: HashMap<String, oneshot::Sender<Reply>>,
    init_error: Option<String>,
    /// When the function first asked for an invocation: the end of its init (cold start).
    first_next: Option<std::time::Instant>,
}

#[derive(Clone)]
struct AppState {
    events: Arc<tokio::sync::Mutex<mpsc::Receiver<(String, Value, i64)>>>,
    shared: Arc<Mutex<Shared>>,
}

/// The emulated Runtime API.
pub struct RuntimeApi {
    addr: SocketAddr,
    sender: mpsc::Sender<(String, Value, i64)>,
    shared: Arc<Mutex<Shared>>,
    next_id: std::sync::atomic::AtomicU64,
    shutdown: Option<oneshot::Sender<()>>,
}

impl RuntimeApi {
    /// Starts on a free loopback port.
    pub async fn start() -> Result<RuntimeApi> {
        let (sender, receiver) = mpsc::channel(64);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = AppState {
            events: Arc::new(tokio::sync::Mutex::new(receiver)),
            shared: shared.clone(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(RuntimeApi {
            addr,
            sender,
            shared,
            next_id: std::sync::atomic::AtomicU64::new(1),
            shutdown: Some(tx),
        })
    }

    /// When the function first polled `/invocation/next`, i.e. finished its init.
    pub fn first_poll(&self) -> Option<std::time::Instant> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_next
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Invokes the function with `event` and a deadline `timeout` from now; waits for its
    /// answer. `Err` carries the function's error payload (or the init error).
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Result<Reply> {
        let id = format!(
            "req-{:08}",
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .insert(id.clone(), tx);
        let deadline = chrono::Utc::now().timestamp_millis() + timeout.as_millis() as i64;
        self.sender
            .send((id, event, deadline))
            .await
            .context("runtime api closed")?;
        let wait = tokio::time::timeout(timeout + Duration::from_secs(5), rx);
        match wait.await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                let init = self
                    .shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .init_error
                    .clone();
                anyhow::bail!(
                    "no answer from the function within {timeout:?} (init error: {init:?})"
                )
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn next(State(state): State<AppState>) -> Response {
    state
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first_next
        .get_or_insert_with(std::time::Instant::now);
    let mut events = state.events.lock().await;
    let Some((id, event, deadline)) = events.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let put = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(&mut headers, "lambda-runtime-aws-request-id", id);
    put(
        &mut headers,
        "lambda-runtime-deadline-ms",
        deadline.to_string(),
    );
    put(
        &mut headers,
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:local".to_string(),
    );
    put(
        &mut headers,
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".to_string(),
    );
    (StatusCode::OK, headers, event.to_string()).into_response()
}

fn answer(state: &AppState, id: &str, reply: Reply) -> StatusCode {
    let sender = state
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .waiting
        .remove(id);
    match sender {
        Some(tx) => {
            let _ = tx.send(reply);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn response(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    answer(&state, &id, Ok(value))
}

async fn error(State(state): State<AppState>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&state, &id, Err(String::from_utf8_lossy(&body).to_string()))
}

async fn init_error(State(state): State<AppState>, body: Bytes) -> StatusCode {
    state
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .init_error = Some(String::from_utf8_lossy(&body).to_string());
    StatusCode::ACCEPTED
}
