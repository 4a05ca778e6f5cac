//! `failures list` and `replay`: failed entries, and sending them back to the meter queue.
//! A replay bills once: the processor claims a failed entry at its version, so however many
//! times a trace is sent, one claim wins and the rest find it billed.

use super::time;
use crate::Ctx;
use crate::args::{FailureFilter, ReplayArgs};
use crate::error::{CliError, CliResult};
use crate::output::{or_dash, table};
use serde_json::{Value, json};
use tracemeter::FailureReason;
use tracemeter::domain::attention::{AttentionEntry, AttentionQuery};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::message::{MeterMessage, OutgoingMessage};

/// Lists failed entries, oldest write first, then the malformed messages' records (with
/// `--reason malformed_message`, only those).
pub(super) async fn list(ctx: &mut Ctx<'_, '_>, filter: &FailureFilter) -> CliResult {
    let since = filter.since.map(|w| w.resolve(ctx.deps.clock.now()));
    if filter.reason == Some(FailureReason::MalformedMessage) {
        return super::messages::list(ctx, since).await;
    }
    let found = failed(ctx, filter).await?;
    let messages = match filter.reason {
        Some(_) => Vec::new(),
        None => ctx.deps.ledger.failed_messages(since).await?,
    };
    let mut listed: Vec<Value> = found
        .iter()
        .map(|f| {
            json!({
                "trace_id": f.entry.trace_id, "reason": f.entry.reason, "detail": f.entry.detail,
                "customer_id": f.entry.customer_id, "updated_at": time(f.updated_at),
            })
        })
        .collect();
    listed.extend(super::messages::json(&messages));
    let value = Value::from(listed);
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|f| {
            vec![
                f.entry.trace_id.clone(),
                or_dash(f.entry.reason.clone()),
                or_dash(f.entry.customer_id.clone()),
                time(f.updated_at),
                or_dash(f.entry.detail.clone()),
            ]
        })
        .collect();
    let count = found.len();
    ctx.out.report(&value, || {
        let t = table(&["trace", "reason", "customer", "updated", "detail"], &rows);
        let mut text = format!("{t}{count} failed entries\n");
        if !messages.is_empty() {
            text.push_str(&format!("\n{}", super::messages::human(&messages)));
        }
        text
    })
}

/// Sends failed traces back to the meter queue.
pub(super) async fn replay(ctx: &mut Ctx<'_, '_>, args: &ReplayArgs) -> CliResult {
    if args.reason == Some(FailureReason::MalformedMessage) {
        return super::messages::not_replayable(ctx).await;
    }
    let (targets, skipped) = if args.trace.is_empty() {
        let filter = FailureFilter {
            reason: args.reason,
            since: None,
        };
        let found = failed(ctx, &filter).await?;
        (
            found.into_iter().map(|f| f.entry.trace_id).collect(),
            Vec::new(),
        )
    } else {
        named_failures(ctx, &args.trace).await?
    };
    for (id, why) in &skipped {
        ctx.out.say(&format!("skipped {id}: {why}"))?;
    }
    let mut sent = 0;
    if !targets.is_empty() {
        let plan = format!(
            "will send {} failed trace(s) to the meter queue: {}",
            targets.len(),
            preview(&targets)
        );
        ctx.approve(&plan)?;
        sent = send(ctx, &targets).await?;
    }
    let value = json!({"sent": sent, "traces": targets, "skipped": skipped.iter().map(|(id, why)| json!({"trace_id": id, "why": why})).collect::<Vec<_>>()});
    ctx.out.report(&value, || {
        format!("sent {sent} trace(s) to the meter queue\n")
    })
}

/// The named traces that are failed; the others with why they are skipped.
async fn named_failures(
    ctx: &Ctx<'_, '_>,
    ids: &[String],
) -> CliResult<(Vec<String>, Vec<(String, String)>)> {
    let (mut targets, mut skipped) = (Vec::new(), Vec::new());
    for id in ids {
        match ctx.deps.ledger.entry(id).await? {
            Some(e) if e.state == LedgerState::Failed => targets.push(id.clone()),
            Some(e) => skipped.push((id.clone(), format!("{}, not failed", e.state.as_str()))),
            None => skipped.push((id.clone(), "no ledger entry".to_string())),
        }
    }
    Ok((targets, skipped))
}

/// Failed trace entries matching the filter.
async fn failed(ctx: &Ctx<'_, '_>, filter: &FailureFilter) -> CliResult<Vec<AttentionEntry>> {
    let query = AttentionQuery {
        since: filter.since.map(|w| w.resolve(ctx.deps.clock.now())),
        reason: filter.reason.map(|r| r.as_str().to_string()),
        ..AttentionQuery::all(LedgerState::Failed)
    };
    Ok(ctx.deps.ledger.needing_attention(&query).await?)
}

/// Sends the traces, 10 per request; how many were sent (a partial failure is an error).
async fn send(ctx: &Ctx<'_, '_>, traces: &[String]) -> CliResult<usize> {
    let mut failed = Vec::new();
    for chunk in traces.chunks(10) {
        let messages: Vec<OutgoingMessage> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| OutgoingMessage {
                id: format!("m{i}"),
                body: MeterMessage::new(id.as_str()).to_body(),
            })
            .collect();
        for f in ctx.deps.queue.send_batch(&messages).await? {
            let index = f.id.trim_start_matches('m').parse::<usize>().ok();
            let id = index.and_then(|i| chunk.get(i)).cloned().unwrap_or(f.id);
            failed.push(format!("{id} ({}: {})", f.code, f.message));
        }
    }
    if failed.is_empty() {
        Ok(traces.len())
    } else {
        Err(CliError::Partial(format!(
            "sent {} of {} traces; not sent: {}",
            traces.len() - failed.len(),
            traces.len(),
            failed.join(", ")
        )))
    }
}

/// The first few ids.
pub(super) fn preview(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    match ids.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}
