//! A page's traces to the meter queue: repeats of this run skipped, traces the ledger already
//! covers skipped, the rest sent ten to a `SendMessageBatch`, failed entries retried.

use crate::{Deps, IngestSummary, SEND_CONCURRENCY};
use futures::StreamExt;
use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tracemeter::Error;
use tracemeter::domain::ingest::{self as rules, Skip};
use tracemeter::domain::message::{MeterMessage, OutgoingMessage, SendFailure};
use tracemeter::domain::scan::ListedTrace;
use tracemeter::ports::QueueSender;
use tracing::{error, warn};

/// A bounded set of recently handled ids (oldest forgotten first).
pub struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Recent {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Recent {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Filters a page's traces through the ledger and sends the rest. Returns how many entries
/// could not be sent after all tries.
pub async fn enqueue(
    deps: &Deps<'_>,
    traces: Vec<ListedTrace>,
    recent: &mut Recent,
    summary: &mut IngestSummary,
) -> Result<u64, Error> {
    let fresh = skip_repeats(traces, recent, summary);
    if fresh.is_empty() {
        return Ok(0);
    }
    let to_send = skip_covered(deps, fresh, recent, summary).await?;
    Ok(send(deps, to_send, recent, summary).await)
}

/// The traces not handled earlier in this run.
fn skip_repeats(
    traces: Vec<ListedTrace>,
    recent: &Recent,
    summary: &mut IngestSummary,
) -> Vec<ListedTrace> {
    let mut fresh = Vec::with_capacity(traces.len());
    for t in traces {
        if recent.contains(&t.trace_id) {
            summary.skipped_repeat += 1;
        } else {
            fresh.push(t);
        }
    }
    fresh
}

/// The messages of the traces whose usage the ledger does not cover yet (and that are not
/// left for an operator), each with the newest usage time seen.
async fn skip_covered(
    deps: &Deps<'_>,
    fresh: Vec<ListedTrace>,
    recent: &mut Recent,
    summary: &mut IngestSummary,
) -> Result<Vec<MeterMessage>, Error> {
    let ids: Vec<String> = fresh.iter().map(|t| t.trace_id.clone()).collect();
    let coverage = deps.store.coverage(&ids).await?;
    let mut to_send = Vec::with_capacity(fresh.len());
    for t in fresh {
        match rules::skip(coverage.get(&t.trace_id), &t.seen) {
            Some(Skip::Covered) => {
                summary.skipped_covered += 1;
                recent.insert(&t.trace_id);
            }
            Some(Skip::LeftForOperator) => {
                summary.skipped_operator += 1;
                recent.insert(&t.trace_id);
            }
            None => to_send.push(MeterMessage {
                newest_observation: rules::newest_observation(&t.seen),
                no_ledger_entry: !coverage.contains_key(&t.trace_id),
                ..MeterMessage::new(t.trace_id)
            }),
        }
    }
    Ok(to_send)
}

/// Sends the messages, [`SEND_CONCURRENCY`] batches at once; returns how many could not be
/// sent after all tries (each logged).
async fn send(
    deps: &Deps<'_>,
    to_send: Vec<MeterMessage>,
    recent: &mut Recent,
    summary: &mut IngestSummary,
) -> u64 {
    let attempts = deps.config.send_attempts.max(1);
    let results: Vec<SendResult> = futures::stream::iter(to_send.chunks(10).map(|c| c.to_vec()))
        .map(|chunk| send_with_retries(deps.queue, chunk, attempts))
        .buffer_unordered(SEND_CONCURRENCY)
        .collect()
        .await;
    let mut failed_total = 0u64;
    for (sent, failed, retries) in results {
        summary.enqueued += sent.len() as u64;
        summary.send_retries += retries;
        for id in &sent {
            recent.insert(id);
        }
        for (trace_id, why) in &failed {
            error!(
                trace_id,
                error = %why,
                attempts,
                "could not enqueue trace after all tries; the page will be read again by the next run"
            );
        }
        failed_total += failed.len() as u64;
    }
    summary.send_failed += failed_total;
    failed_total
}

/// Trace ids sent, trace ids not sent with the last reason, and how many entry sends were
/// retried.
type SendResult = (Vec<String>, Vec<(String, String)>, u64);

/// Sends up to 10 messages, retrying failed entries.
async fn send_with_retries(
    queue: &dyn QueueSender,
    messages: Vec<MeterMessage>,
    attempts: u32,
) -> SendResult {
    // (entry id, message)
    let mut pending: Vec<(String, MeterMessage)> = messages
        .into_iter()
        .enumerate()
        .map(|(i, id)| (format!("e{i}"), id))
        .collect();
    let mut sent = Vec::new();
    let mut retries = 0u64;
    let mut last_error: Vec<(String, String)> = Vec::new();
    for attempt in 1..=attempts {
        let failures = send_once(queue, &pending).await;
        let failed_entries: HashSet<&str> = failures.iter().map(|(e, _)| e.as_str()).collect();
        let (ok, still): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(entry, _)| !failed_entries.contains(entry.as_str()));
        sent.extend(ok.into_iter().map(|(_, m)| m.trace_id));
        last_error = reasons(&still, &failures);
        pending = still;
        if pending.is_empty() {
            break;
        }
        if attempt < attempts {
            retries += pending.len() as u64;
            warn!(
                entries = pending.len(),
                attempt,
                first_error = %last_error.first().map(|(_, w)| w.as_str()).unwrap_or(""),
                "SendMessageBatch entries failed; retrying them"
            );
            tokio::time::sleep(Duration::from_millis(100u64 << attempt.min(6))).await;
        }
    }
    let failed = if pending.is_empty() {
        Vec::new()
    } else {
        last_error
    };
    (sent, failed, retries)
}

/// One `SendMessageBatch` of the pending (entry id, message) pairs: the entries that failed,
/// each with why (all of them when the call itself failed).
async fn send_once(
    queue: &dyn QueueSender,
    pending: &[(String, MeterMessage)],
) -> Vec<(String, String)> {
    let messages: Vec<OutgoingMessage> = pending
        .iter()
        .map(|(entry, m)| OutgoingMessage {
            id: entry.clone(),
            body: m.to_body(),
        })
        .collect();
    match queue.send_batch(&messages).await {
        Ok(failures) => failures
            .into_iter()
            .map(|f| (f.id.clone(), describe(&f)))
            .collect(),
        Err(e) => pending
            .iter()
            .map(|(entry, _)| (entry.clone(), e.to_string()))
            .collect(),
    }
}

/// Why an entry failed, as SQS said.
fn describe(f: &SendFailure) -> String {
    let fault = if f.sender_fault {
        " (sender fault)"
    } else {
        ""
    };
    format!("{}: {}{fault}", f.code, f.message)
}

/// Each still-pending (entry id, message) as (trace id, why its entry failed).
fn reasons(
    still: &[(String, MeterMessage)],
    failures: &[(String, String)],
) -> Vec<(String, String)> {
    still
        .iter()
        .map(|(entry, m)| {
            let why = failures
                .iter()
                .find(|(e, _)| e == entry)
                .map(|(_, w)| w.clone())
                .unwrap_or_default();
            (m.trace_id.clone(), why)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = Recent::new(2);
        r.insert("a");
        r.insert("b");
        r.insert("a");
        assert!(r.contains("a") && r.contains("b"));
        r.insert("c");
        assert!(!r.contains("a"), "oldest forgotten");
        assert!(r.contains("b") && r.contains("c"));
        assert_eq!(r.order.len(), 2);
    }
}
