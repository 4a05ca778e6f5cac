//! The SQS message body: one trace id per message, and (from v2 ingest) the newest
//! observation time ingest saw, so a ledger entry that already covers it settles the
//! message without a Langfuse read. Bodies without it (older ingests) still parse.

use crate::error::{Error, FailureReason, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The largest body accepted, in bytes. tracemeter's own messages are ~100 bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The longest trace id accepted.
pub const MAX_TRACE_ID_LEN: usize = 512;

/// The one rule for a trace id (in a message, or given to the operator's command): the id
/// without surrounding spaces, or what is wrong with it.
pub fn check_trace_id(raw: &str) -> std::result::Result<&str, String> {
    let id = raw.trim();
    if id.is_empty() {
        return Err("is empty".to_string());
    }
    if id.len() > MAX_TRACE_ID_LEN {
        return Err(format!(
            "is {} characters, more than {MAX_TRACE_ID_LEN}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("contains control characters".to_string());
    }
    Ok(id)
}

/// The body ingest sends for each trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterMessage {
    /// The Langfuse trace id.
    pub trace_id: String,
    /// The newest observation start time ingest saw for the trace (v2), as Langfuse sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_observation: Option<DateTime<Utc>>,
    /// Ingest's coverage read found no ledger entry for the trace: on its first delivery the
    /// processor claims it as new without reading the ledger again (the claim's condition,
    /// `attribute_not_exists`, still refuses if an entry appeared since).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_ledger_entry: bool,
}

impl MeterMessage {
    /// Parses and validates a body; the error says exactly what is wrong.
    pub fn parse(body: &str) -> Result<MeterMessage> {
        if body.len() > MAX_BODY_BYTES {
            return Err(malformed(format!(
                "body is {} bytes, more than the {MAX_BODY_BYTES} accepted",
                body.len()
            )));
        }
        let msg: MeterMessage = serde_json::from_str(body).map_err(|e| {
            malformed(format!(
                "body is not a JSON object with a string traceId: {e}"
            ))
        })?;
        let id =
            check_trace_id(&msg.trace_id).map_err(|why| malformed(format!("traceId {why}")))?;
        Ok(MeterMessage {
            trace_id: id.to_string(),
            ..msg
        })
    }

    /// A message naming only the trace.
    pub fn new(trace_id: impl Into<String>) -> MeterMessage {
        MeterMessage {
            trace_id: trace_id.into(),
            newest_observation: None,
            no_ledger_entry: false,
        }
    }

    /// The body for this message.
    pub fn to_body(&self) -> String {
        let mut body = serde_json::json!({ "traceId": self.trace_id });
        if let Some(at) = self.newest_observation {
            body["newestObservation"] = at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into();
        }
        if self.no_ledger_entry {
            body["noLedgerEntry"] = true.into();
        }
        body.to_string()
    }
}

fn malformed(detail: String) -> Error {
    Error::permanent(FailureReason::MalformedMessage, detail)
}

/// A message for `QueueSender::send_batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Entry id, unique within the batch.
    pub id: String,
    /// Body.
    pub body: String,
}

/// A message put back on the queue with a delay, for lack of request budget (or a 429),
/// instead of returning as a failure: its receive count starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// The original message's id (entry id and log reference).
    pub message_id: String,
    /// The original body, unchanged.
    pub body: String,
    /// How long SQS hides it, seconds (at most 900).
    pub delay_seconds: i32,
    /// How many times this message has now been deferred (the `deferrals` attribute).
    pub deferrals: u32,
}

/// The message attribute counting a message's deferrals.
pub const DEFERRALS_ATTRIBUTE: &str = "deferrals";

/// A batch entry that was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The entry id.
    pub id: String,
    /// Error code.
    pub code: String,
    /// Error message.
    pub message: String,
    /// True when the request itself was at fault (retrying will not help).
    pub sender_fault: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_bodies() {
        assert_eq!(
            MeterMessage::parse(r#"{"traceId":"abc"}"#)
                .expect("ok")
                .trace_id,
            "abc"
        );
        assert_eq!(
            MeterMessage::parse(&MeterMessage::new("x y").to_body())
                .expect("round trip")
                .trace_id,
            "x y"
        );
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"traceId":5}"#,
            r#"{"traceId":"  "}"#,
            r#"{"traceId":"a","newestObservation":"yesterday"}"#,
            "traceId=abc",
        ] {
            let err = MeterMessage::parse(bad).expect_err(bad);
            assert!(
                matches!(
                    err,
                    Error::Permanent {
                        reason: FailureReason::MalformedMessage,
                        ..
                    }
                ),
                "{bad}"
            );
        }
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456Z")
            .expect("time")
            .with_timezone(&Utc);
        let m = MeterMessage {
            newest_observation: Some(at),
            ..MeterMessage::new("t")
        };
        assert!(m.to_body().contains("10:00:00.123456Z"), "{}", m.to_body());
        assert_eq!(MeterMessage::parse(&m.to_body()).expect("round trip"), m);
        assert!(!m.to_body().contains("noLedgerEntry"), "{}", m.to_body());
        let new = MeterMessage {
            no_ledger_entry: true,
            ..m
        };
        assert!(
            new.to_body().contains(r#""noLedgerEntry":true"#),
            "{}",
            new.to_body()
        );
        assert_eq!(
            MeterMessage::parse(&new.to_body()).expect("round trip"),
            new
        );
        assert!(MeterMessage::parse(r#"{"traceId":"a","noLedgerEntry":"yes"}"#).is_err());
        assert_eq!(
            MeterMessage::parse(r#"{"traceId":"old"}"#).expect("old body"),
            MeterMessage::new("old")
        );
        let long = format!(r#"{{"traceId":"{}"}}"#, "a".repeat(600));
        assert!(MeterMessage::parse(&long).is_err());
        let huge = "x".repeat(MAX_BODY_BYTES + 1);
        assert!(
            MeterMessage::parse(&huge)
                .expect_err("huge")
                .to_string()
                .contains("bytes")
        );
    }
}
