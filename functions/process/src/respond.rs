//! The answer to SQS: the messages to retry as batch item failures, each with a visibility
//! timeout from `domain::retry` (so it comes back after a backoff, not at once), and one
//! summary log line with the invocation's tally.

use crate::{Deps, Outcome, Tally};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use std::time::Instant;
use tracemeter::domain::deadline::UNREACHED_VISIBILITY_SECONDS;
use tracemeter::domain::retry::Backoff;
use tracing::{info, warn};

pub(crate) async fn respond(
    deps: &Deps<'_>,
    records: &[SqsMessage],
    outcomes: &[Outcome],
    started: Instant,
) -> (SqsBatchResponse, Tally) {
    let tuning = &deps.config.process;
    let backoff = Backoff {
        base_seconds: tuning.retry_base_seconds,
        max_seconds: tuning.retry_max_seconds,
    };
    let mut response = SqsBatchResponse::default();
    let mut delays = Vec::new();
    for (record, outcome) in records.iter().zip(outcomes) {
        let message_id = record.message_id.clone().unwrap_or_default();
        let delay = match outcome {
            Outcome::Retry { after, .. } => {
                let receives: u32 = record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                backoff.visibility_seconds(&message_id, receives, *after)
            }
            Outcome::Unreached => UNREACHED_VISIBILITY_SECONDS,
            _ => continue,
        };
        if let Some(receipt) = record.receipt_handle.clone() {
            delays.push((receipt, delay));
        }
        response.add_failure(message_id);
    }
    if !delays.is_empty()
        && let Err(e) = deps.redelivery.delay(&delays).await
    {
        // The messages still come back, after the queue's own visibility timeout.
        warn!(error = %e, "could not extend the visibility of failed messages");
    }
    let tally = Tally::of(outcomes);
    log_summary(&tally, started);
    (response, tally)
}

fn log_summary(t: &Tally, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    info!(
        messages = t.messages,
        metered = t.metered,
        capped = t.capped,
        already_billed = t.already_billed,
        permanent_failures = t.permanent_failures(),
        ambiguous = t.ambiguous,
        retries = t.retries,
        unreached = t.unreached,
        credits_billed = t.credits_billed,
        duration_ms = (secs * 1000.0) as u64,
        messages_per_second = if secs > 0.0 {
            t.messages as f64 / secs
        } else {
            0.0
        },
        "batch processed"
    );
}
