//! HTTP plumbing shared by the Langfuse and Stripe clients.

use crate::error::{Error, Result};
use std::time::Duration;

/// Builds a client: rustls, timeouts, no proxies from the environment, no redirects.
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!("tracemeter/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

/// Reads a response body, refusing more than `max` bytes.
pub async fn read_limited(
    service: &'static str,
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>> {
    if let Some(len) = response.content_length()
        && len > max as u64
    {
        return Err(Error::transient(
            service,
            format!("response of {len} bytes is over the {max} byte limit"),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(service, e))? {
        if body.len() + chunk.len() > max {
            return Err(Error::transient(
                service,
                format!("response is over the {max} byte limit"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport failure (timeout, connection reset) as a transient error, without the URL's
/// query string (it can hold ids but never secrets; secrets travel in headers).
pub fn transport(service: &'static str, e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let path = e.url().map(|u| u.path().to_string()).unwrap_or_default();
    Error::transient(service, format!("{what} ({path}): {}", e.without_url()))
}

/// The wait a 429 asks for: `Retry-After` (seconds), else `X-RateLimit-Reset` (Unix seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap, now_unix: i64) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .map(str::to_string)
    };
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<f64>().ok())
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(3600.0)));
    }
    header("x-ratelimit-reset")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|reset| Duration::from_secs(reset.saturating_sub(now_unix).clamp(0, 3600) as u64))
}

/// A short, single-line excerpt of a body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    line
}
