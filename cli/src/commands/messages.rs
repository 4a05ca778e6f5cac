//! Malformed messages: a body that named no usable trace is recorded by its SQS message id
//! (reason `malformed_message`) and acknowledged. There is no trace to replay, so the
//! operator reads the record (`failures list --reason malformed_message`: the body escaped,
//! the reason, what was wrong, the time) and deletes it (`failures ack`).

use super::time;
use crate::Ctx;
use crate::args::AckArgs;
use crate::error::{CliError, CliResult};
use crate::output::{escape, table};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracemeter::FailureReason;
use tracemeter::domain::attention::MessageFailure;

/// What to do with malformed messages, said where they are shown.
const HINT: &str = "malformed messages name no trace and cannot be replayed: once read, delete their records with `tracemeter failures ack --reason malformed_message` (or --message ID)";

/// The records as JSON objects (the body as stored: JSON escapes it).
pub(super) fn json(messages: &[MessageFailure]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            json!({"message_id": m.message_id, "trace_id": null, "reason": m.reason,
                "detail": m.detail, "body": m.body, "updated_at": time(m.updated_at)})
        })
        .collect()
}

/// The records as a table (every cell escaped by [`table`]), their count and the hint.
pub(super) fn human(messages: &[MessageFailure]) -> String {
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            vec![
                m.message_id.clone(),
                m.reason.clone(),
                time(m.updated_at),
                m.detail.clone(),
                m.body.clone(),
            ]
        })
        .collect();
    let t = table(&["message", "reason", "updated", "detail", "body"], &rows);
    format!("{t}{} malformed message(s)\n({HINT})\n", messages.len())
}

/// `failures list --reason malformed_message`.
pub(super) async fn list(ctx: &mut Ctx<'_, '_>, since: Option<DateTime<Utc>>) -> CliResult {
    let messages = ctx.deps.ledger.failed_messages(since).await?;
    ctx.out
        .report(&Value::from(json(&messages)), || human(&messages))
}

/// `replay --reason malformed_message`: nothing can be sent; says why, and what to do.
pub(super) async fn not_replayable(ctx: &mut Ctx<'_, '_>) -> CliResult {
    let count = ctx.deps.ledger.failed_messages(None).await?.len();
    Err(CliError::Invalid(format!(
        "--reason malformed_message: nothing sent: {count} malformed message(s) recorded; {HINT}; see them with `tracemeter failures list --reason malformed_message`"
    )))
}

/// `failures ack`: deletes the named records, or every one with `--reason malformed_message`.
pub(super) async fn ack(ctx: &mut Ctx<'_, '_>, args: &AckArgs) -> CliResult {
    let ledger = ctx.deps.ledger;
    let ids: Vec<String> = match args.reason {
        Some(FailureReason::MalformedMessage) => ledger
            .failed_messages(None)
            .await?
            .into_iter()
            .map(|m| m.message_id)
            .collect(),
        Some(other) => {
            return Err(CliError::Invalid(format!(
                "--reason {}: only malformed_message records are acknowledged; a failed trace is billed with `tracemeter replay --reason {}` once its cause is fixed",
                other.as_str(),
                other.as_str()
            )));
        }
        None => args.message.clone(),
    };
    let mut forgotten = Vec::new();
    let mut missing = Vec::new();
    if !ids.is_empty() {
        ctx.approve(&format!(
            "will delete the record(s) of {} malformed message(s): {}",
            ids.len(),
            super::failures::preview(&ids)
        ))?;
        for id in ids {
            match ledger.forget_message(&id).await? {
                true => forgotten.push(id),
                false => missing.push(id),
            }
        }
    }
    let value = json!({"deleted": forgotten, "not_found": missing});
    ctx.out.report(&value, || {
        let mut text = format!("deleted {} malformed message record(s)\n", forgotten.len());
        if !missing.is_empty() {
            text.push_str(&format!("no record for: {}\n", escape(&missing.join(", "))));
        }
        text
    })?;
    match missing.is_empty() || args.message.is_empty() {
        true => Ok(()),
        false => Err(CliError::NotFound(format!(
            "no malformed message recorded as {}",
            missing.join(", ")
        ))),
    }
}
