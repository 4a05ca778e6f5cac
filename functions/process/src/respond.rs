//! The answer to SQS. A message a service asked to wait for (a 429, or the shared Langfuse
//! request budget spent) is deferred: sent again as a new message with a delay, and the
//! original acknowledged, so its receive count never grows and no backlog, however long,
//! ends in the dead-letter queue. Other failed messages are batch item failures, each with a
//! visibility timeout from `domain::retry` (a backoff, not at once). Then one summary log
//! line with the invocation's tally.

use crate::{Deps, Outcome, Tally};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;
use tracemeter::config::LangfuseApi;
use tracemeter::domain::deadline::UNREACHED_VISIBILITY_SECONDS;
use tracemeter::domain::message::{DEFERRALS_ATTRIBUTE, Deferral};
use tracemeter::domain::quota::RequestLimit;
use tracemeter::domain::retry::{self, Backoff};
use tracing::{info, warn};

pub(crate) async fn respond(
    deps: &Deps<'_>,
    records: &[SqsMessage],
    outcomes: &[Outcome],
    unpriced: usize,
    started: Instant,
) -> (SqsBatchResponse, Tally) {
    let tuning = &deps.config.process;
    let backoff = Backoff {
        base_seconds: tuning.retry_base_seconds,
        max_seconds: tuning.retry_max_seconds,
    };
    let deferred = defer(deps, &backoff, records, outcomes).await;
    let mut response = SqsBatchResponse::default();
    let mut delays = Vec::new();
    for (record, outcome) in records.iter().zip(outcomes) {
        let message_id = record.message_id.clone().unwrap_or_default();
        let delay = match outcome {
            Outcome::Retry { .. } if deferred.contains(&message_id) => continue,
            Outcome::Retry { after, .. } => {
                backoff.visibility_seconds(&message_id, receives(record), *after)
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
    let mut tally = Tally::of(outcomes);
    tally.deferred = deferred.len();
    tally.unpriced += unpriced;
    log_summary(&tally, started);
    (response, tally)
}

/// Sends the messages an outside service asked to wait for (a 429, or the shared request
/// budget spent) back to the queue with a delay; the ids of those now deferred (the rest
/// return as failures). A wait of our own (another invocation's lease) is not a deferral.
async fn defer(
    deps: &Deps<'_>,
    backoff: &Backoff,
    records: &[SqsMessage],
    outcomes: &[Outcome],
) -> HashSet<String> {
    let asked: Vec<(&SqsMessage, Duration, &str)> = records
        .iter()
        .zip(outcomes)
        .filter_map(|(record, outcome)| match outcome {
            Outcome::Retry {
                after: Some(asked),
                service: Some(service),
                ..
            } => Some((record, *asked, *service)),
            _ => None,
        })
        .collect();
    if asked.is_empty() {
        return HashSet::new();
    }
    let delays = delays(deps, backoff, &asked).await;
    let deferrals: Vec<Deferral> = asked
        .iter()
        .zip(delays)
        .filter_map(|((record, _, _), delay_seconds)| {
            Some(Deferral {
                delay_seconds,
                body: record.body.clone()?,
                message_id: record.message_id.clone()?,
                deferrals: deferred_before(record).saturating_add(1),
            })
        })
        .collect();
    let not_sent: HashSet<String> = match deps.redelivery.defer(&deferrals).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            warn!(error = %e, "could not defer messages; they return as failures");
            deferrals.iter().map(|d| d.message_id.clone()).collect()
        }
    };
    deferrals
        .into_iter()
        .map(|d| d.message_id)
        .filter(|id| !not_sent.contains(id))
        .collect()
}

/// Each deferral's delay. Under a Langfuse request budget they are booked on the budget's
/// return schedule, shared by every instance (`domain::returns`: bunches of a window's
/// budget, one window apart, behind the bunches already booked), so that each comes back
/// once, when it can be read; without the schedule (it failed) they are spread behind the
/// messages already waiting (`retry::budget_delays`, from the queue's approximate count).
/// Otherwise (a 429 of a service without a budget here) the backoff schedule by deferral
/// count.
async fn delays(
    deps: &Deps<'_>,
    backoff: &Backoff,
    asked: &[(&SqsMessage, Duration, &str)],
) -> Vec<i32> {
    let per_message = match deps.config.langfuse.api {
        // One trace read per message.
        LangfuseApi::Legacy => 1.0,
        // One batch read per slice of messages.
        LangfuseApi::V2 => 1.0 / crate::batch::SLICE as f64,
    };
    let budget = match deps.config.langfuse.requests {
        RequestLimit::PerMinute(n) if asked.iter().all(|(_, _, s)| *s == "langfuse") => Some(n),
        _ => None,
    };
    let Some(per_minute) = budget else {
        return asked
            .iter()
            .map(|(record, wait, _)| {
                let id = record.message_id.as_deref().unwrap_or_default();
                backoff.deferral_seconds(id, deferred_before(record), *wait)
            })
            .collect();
    };
    // A second past what was asked, as for a retry: a slot boundary read on another
    // instance's clock may lie a little later.
    let wait = asked.iter().map(|(_, w, _)| *w).max().unwrap_or_default();
    let now = deps.clock.now();
    let earliest =
        now + chrono::Duration::from_std(wait).unwrap_or_default() + chrono::Duration::seconds(1);
    let latest = now + chrono::Duration::seconds(i64::from(retry::MAX_DELAY_SECONDS));
    let booked = deps
        .usage
        .book_returns(earliest, latest, asked.len(), per_message)
        .await;
    match booked {
        Ok(Some(returns)) => return returns.iter().map(|r| until(now, *r)).collect(),
        Ok(None) => {}
        Err(e) => {
            warn!(error = %e, "could not book the returns; spreading them behind those waiting")
        }
    }
    let ahead = deps.redelivery.waiting().await.unwrap_or_else(|e| {
        warn!(error = %e, "could not read how many messages wait; deferring from now");
        0
    });
    retry::budget_delays(asked.len(), ahead, wait, per_minute, per_message)
}

/// The delay until a booked return (whole seconds, rounded up, within SQS's 1..=900); SQS's
/// longest when not booked.
fn until(now: chrono::DateTime<chrono::Utc>, at: Option<chrono::DateTime<chrono::Utc>>) -> i32 {
    let Some(at) = at else {
        return retry::MAX_DELAY_SECONDS;
    };
    let ms = (at - now).num_milliseconds();
    let secs = (ms + 999).div_euclid(1000);
    secs.clamp(1, i64::from(retry::MAX_DELAY_SECONDS)) as i32
}

/// The record's receive count (1 when SQS did not say).
fn receives(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// How many times the message was deferred before (its `deferrals` attribute).
fn deferred_before(record: &SqsMessage) -> u32 {
    record
        .message_attributes
        .get(DEFERRALS_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
        deferred = t.deferred,
        unreached = t.unreached,
        credits_billed = t.credits_billed,
        unpriced = t.unpriced,
        duration_ms = (secs * 1000.0) as u64,
        messages_per_second = if secs > 0.0 {
            t.messages as f64 / secs
        } else {
            0.0
        },
        "batch processed"
    );
}
