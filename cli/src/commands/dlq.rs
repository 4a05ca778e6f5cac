//! `dlq show` / `dlq redrive`: the dead-letter queue's depth and bodies, and moving its
//! messages back to the meter queue (safe: the ledger makes every message idempotent).

use crate::Ctx;
use crate::args::DlqCommand;
use crate::error::CliResult;
use crate::output::escape;
use serde_json::json;
use tracemeter::domain::message::MeterMessage;
use tracemeter::ports::DeadLetters;

/// Runs a `dlq` verb.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, command: &DlqCommand) -> CliResult {
    let dlq = ctx.deps.dead_letters.ok_or_else(|| {
        tracemeter::Error::Config(
            "DLQ_URL is not set; the dlq commands need the dead-letter queue's URL".into(),
        )
    })?;
    match command {
        DlqCommand::Show { samples } => show(ctx, dlq, *samples).await,
        DlqCommand::Redrive { max } => redrive(ctx, dlq, *max).await,
    }
}

async fn show(ctx: &mut Ctx<'_, '_>, dlq: &dyn DeadLetters, samples: usize) -> CliResult {
    let (visible, in_flight) = dlq.depth().await?;
    let bodies = if samples > 0 {
        dlq.peek(samples).await?
    } else {
        Vec::new()
    };
    let traces: Vec<Option<String>> = bodies
        .iter()
        .map(|b| MeterMessage::parse(b).ok().map(|m| m.trace_id))
        .collect();
    let value = json!({"visible": visible, "in_flight": in_flight, "samples": bodies, "sample_traces": traces});
    ctx.out.report(&value, || {
        let mut text = format!("dead-letter queue: {visible} visible, {in_flight} in flight\n");
        for body in &bodies {
            text.push_str(&format!("  {}\n", escape(body)));
        }
        text
    })
}

async fn redrive(ctx: &mut Ctx<'_, '_>, dlq: &dyn DeadLetters, max: usize) -> CliResult {
    let (visible, _) = dlq.depth().await?;
    let mut moved = 0;
    if visible > 0 {
        ctx.approve(&format!(
            "will move up to {max} of {visible} dead-letter message(s) back to the meter queue"
        ))?;
        moved = dlq.redrive(max).await?;
    }
    let value = json!({"moved": moved});
    ctx.out.report(&value, || {
        format!("moved {moved} message(s) to the meter queue\n")
    })
}
