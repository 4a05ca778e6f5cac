//! Langfuse answers into data: JSON errors classified, and the cost and latency rules both
//! API generations share.

use super::SERVICE;
use crate::domain::usage::decimal_from_f64;
use crate::error::{Error, FailureReason, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

/// Parses an answer: malformed JSON is transient, well-formed JSON that breaks the schema
/// is permanent.
pub fn parse<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            // Well-formed JSON that breaks the schema (a missing or mistyped field): the
            // stored data is wrong, and asking again returns the same answer.
            Error::permanent(
                FailureReason::InvalidUsage,
                format!("GET {path}: the answer does not match Langfuse's schema: {e}"),
            )
        } else {
            // Cut short or not JSON at all: a transport or proxy problem, worth a retry.
            Error::transient(
                SERVICE,
                format!("GET {path}: response is not the expected JSON: {e}"),
            )
        }
    })
}

/// Names the trace in a permanent error's detail (what the ledger records).
pub(super) fn about(trace_id: &str, error: Error) -> Error {
    match error {
        Error::Permanent { reason, detail } => Error::Permanent {
            reason,
            detail: format!("trace {trace_id}: {detail}"),
        },
        other => other,
    }
}

/// Percent-encodes a path segment.
pub fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn object(value: Option<Value>) -> BTreeMap<String, Value> {
    match value {
        Some(Value::Object(map)) => map.into_iter().collect(),
        // Metadata can arrive as a JSON string (v2 truncates long values).
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        },
        _ => BTreeMap::new(),
    }
}

pub(super) fn amount(trace_id: &str, what: &str, value: f64) -> Result<Decimal> {
    decimal_from_f64(value).ok_or_else(|| {
        Error::permanent(
            FailureReason::InvalidUsage,
            format!("trace {trace_id}: {what} {value} is not a number"),
        )
    })
}

/// One observation's cost: a number, never negative (a negative cost would silently lower
/// the trace's total).
pub(super) fn cost(trace_id: &str, value: f64) -> Result<Decimal> {
    let usd = amount(trace_id, "cost", value)?;
    if usd < Decimal::ZERO {
        return Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!("trace {trace_id}: an observation has a negative cost of {value} USD"),
        ));
    }
    Ok(usd)
}

/// An observation's cost: `totalCost`, else `costDetails.total`, else the sum of the
/// details; a `null` or missing cost is zero (Langfuse could not price the model).
pub(super) fn cost_of(
    trace_id: &str,
    total: Option<f64>,
    details: &Option<BTreeMap<String, Option<f64>>>,
) -> Result<Decimal> {
    if let Some(total) = total {
        return cost(trace_id, total);
    }
    let Some(details) = details else {
        return Ok(Decimal::ZERO);
    };
    if let Some(Some(total)) = details.get("total") {
        return cost(trace_id, *total);
    }
    let mut sum = Decimal::ZERO;
    for v in details.values().flatten() {
        sum += cost(trace_id, *v)?;
    }
    Ok(sum)
}

pub(super) fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
    let ms = (to - from).num_milliseconds().max(0);
    Decimal::new(ms, 3)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::adapters::langfuse::ObservationsV2Page;

    #[test]
    fn broken_json_is_transient_and_a_broken_schema_permanent() {
        let path = "/api/public/v2/observations";
        let full = br#"{"data":[{"id":"o1","startTime":"2026-11-23T10:00:00Z"}],"meta":{}}"#;
        assert!(parse::<ObservationsV2Page>(path, full).is_ok());
        let truncated = &full[..full.len() / 2];
        let e = parse::<ObservationsV2Page>(path, truncated).unwrap_err();
        assert!(e.is_transient(), "{e}");
        let html = b"<html>502 Bad Gateway</html>";
        assert!(
            parse::<ObservationsV2Page>(path, html)
                .unwrap_err()
                .is_transient()
        );
        let missing = br#"{"data":[{"id":"o1"}],"meta":{}}"#;
        let e = about(
            "t-1",
            parse::<ObservationsV2Page>(path, missing).unwrap_err(),
        );
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(text.contains("t-1") && text.contains("startTime"), "{text}");
        let mistyped = br#"{"data":[{"id":"o1","startTime":"x","totalCost":"free"}],"meta":{}}"#;
        assert!(
            !parse::<ObservationsV2Page>(path, mistyped)
                .unwrap_err()
                .is_transient()
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path("abc-1_2.3"), "abc-1_2.3");
    }
}
