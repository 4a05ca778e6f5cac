//! The SQS message body: one trace id per message.

use crate::error::{Error, FailureReason, Result};
use serde::{Deserialize, Serialize};

/// The largest body accepted, in bytes. tracemeter's own messages are ~100 bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The longest trace id accepted.
pub const MAX_TRACE_ID_LEN: usize = 512;

/// The body ingest sends for each trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterMessage {
    /// The Langfuse trace id.
    pub trace_id: String,
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
        let id = msg.trace_id.trim();
        if id.is_empty() {
            return Err(malformed("traceId is empty".to_string()));
        }
        if id.len() > MAX_TRACE_ID_LEN {
            return Err(malformed(format!(
                "traceId is {} characters, more than {MAX_TRACE_ID_LEN}",
                id.len()
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(malformed("traceId contains control characters".to_string()));
        }
        Ok(MeterMessage {
            trace_id: id.to_string(),
        })
    }

    /// The body for this message.
    pub fn to_body(&self) -> String {
        serde_json::json!({ "traceId": self.trace_id }).to_string()
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
            MeterMessage::parse(
                &MeterMessage {
                    trace_id: "x y".into()
                }
                .to_body()
            )
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
