//! The batch runner: parses the messages, then runs the phases slice after slice of the
//! batch while the deadline allows, and gives every message its outcome, in order.

use crate::claim::{self, Claimed, CounterCheck};
use crate::invocation::Invocation;
use crate::price::Candidate;
use crate::read::{self, Entries, Stage, Usages, Wanted};
use crate::send;
use crate::{Deps, Outcome, failure, finish};
use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tracemeter::domain::claim::{FailureKey, MAX_CLAIMS_PER_BATCH};
use tracemeter::domain::message::MeterMessage;
use tracemeter::{Error, FailureReason};
use tracing::warn;

/// Traces per slice: each slice goes through every phase before the next one starts (a
/// Langfuse batch read, a v2 stream request of up to 100 events), and no slice starts that
/// the deadline would cut.
pub(crate) const SLICE: usize = 100;

/// Ledger rounds: a trace whose entry changes under a claim is read again, this many times.
const MAX_LEDGER_ROUNDS: usize = 5;

/// The batch's messages, parsed.
#[derive(Default)]
struct Parsed {
    /// The trace id of each message (empty when it names none).
    traces: Vec<String>,
    /// The newest usage time ingest saw, per message (the latest of a trace's messages on
    /// its primary).
    newest: Vec<Option<DateTime<Utc>>>,
    /// Per message (on its primary, for all of the trace's messages): ingest saw no ledger
    /// entry, and this is the message's first delivery, not deferred: the trace is claimed
    /// as new without reading the ledger (see [`is_first_sight`]).
    new: Vec<bool>,
    /// The first message of each trace.
    primary: Vec<usize>,
    /// Later messages of a trace, with their primary: a trace is metered once.
    duplicates: Vec<(usize, usize)>,
    /// Messages that name no usable trace.
    malformed: Vec<(usize, FailureKey, FailureReason, String)>,
    /// Messages that could not be read for now.
    unreadable: Vec<(usize, Outcome)>,
}

/// What the claim rounds leave for the send and finish phases.
#[derive(Default)]
struct Claims {
    to_send: Vec<Claimed>,
    capped: Vec<CounterCheck>,
}

/// The outcome of every record, in order.
pub(crate) async fn run(deps: &Deps<'_>, inv: &Invocation, records: &[SqsMessage]) -> Vec<Outcome> {
    let parsed = parse(records);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
    for (i, o) in parsed.unreadable.iter().cloned() {
        outcomes[i] = Some(o);
    }
    for (i, o) in record_malformed(deps, &parsed.malformed).await {
        outcomes[i] = Some(o);
    }
    let mut longest = Duration::ZERO;
    for (n, slice) in parsed.primary.chunks(SLICE).enumerate() {
        if !inv.can_start(deps, longest) {
            let unreached = &parsed.primary[n * SLICE..];
            warn!(
                unreached = unreached.len(),
                "the deadline is too near to start another slice: returned untried"
            );
            for &i in unreached {
                outcomes[i] = Some(Outcome::Unreached);
            }
            break;
        }
        let started = Instant::now();
        run_slice(deps, inv, &parsed, slice, &mut outcomes).await;
        longest = longest.max(started.elapsed());
    }
    for &(i, p) in &parsed.duplicates {
        outcomes[i] = Some(match &outcomes[p] {
            Some(Outcome::Metered { .. } | Outcome::Capped { .. }) => Outcome::AlreadyBilled,
            Some(o) => o.clone(),
            None => Outcome::retry("not processed"),
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::retry("not processed: the invocation stopped early")))
        .collect()
}

/// The phases for one slice of the batch's traces: read and price, claim, send, finish.
async fn run_slice(
    deps: &Deps<'_>,
    inv: &Invocation,
    parsed: &Parsed,
    slice: &[usize],
    outcomes: &mut [Option<Outcome>],
) {
    let claims = claim_rounds(deps, inv, parsed, slice, outcomes).await;
    let (mut delivered, mut given_back) = (Vec::new(), Vec::new());
    for (c, result) in send::send_claims(deps, claims.to_send).await {
        match result {
            Some(o) => {
                if matches!(o, Outcome::Permanent(_)) {
                    given_back.push(CounterCheck::of(&c));
                }
                outcomes[c.index] = Some(o);
            }
            None => delivered.push(c),
        }
    }
    let settled = finish::Settled {
        delivered,
        capped: claims.capped,
        given_back,
    };
    for (i, o) in finish::finish(deps, settled).await {
        outcomes[i] = Some(o);
    }
}

/// One primary message per trace: a transaction names an item once, and a trace is
/// metered once anyway.
fn parse(records: &[SqsMessage]) -> Parsed {
    let mut p = Parsed {
        traces: vec![String::new(); records.len()],
        newest: vec![None; records.len()],
        new: vec![false; records.len()],
        ..Parsed::default()
    };
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        match MeterMessage::parse(&body) {
            Ok(m) => {
                let new = is_first_sight(record, &m);
                match first.get(&m.trace_id) {
                    Some(&primary) => {
                        p.duplicates.push((i, primary));
                        p.newest[primary] = p.newest[primary].max(m.newest_observation);
                        p.new[primary] &= new;
                    }
                    None => {
                        first.insert(m.trace_id.clone(), i);
                        p.primary.push(i);
                        p.newest[i] = m.newest_observation;
                        p.new[i] = new;
                    }
                }
                p.traces[i] = m.trace_id;
            }
            Err(Error::Permanent { reason, detail }) => {
                let detail = format!("message {message_id}: {detail}");
                let key = FailureKey::Message { message_id, body };
                p.malformed.push((i, key, reason, detail));
            }
            Err(e) => p.unreadable.push((i, Outcome::retry(e.to_string()))),
        }
    }
    p
}

/// True when the trace can be claimed as new without a ledger read: ingest found no entry,
/// and the message comes for the first time (not redelivered after a failure or a timeout,
/// not put back by a deferral), so nothing of this pipeline has claimed it since. Should an
/// entry exist all the same (a duplicate message, a stale read), the claim's condition
/// refuses it and the trace is read strongly in the next round.
fn is_first_sight(record: &SqsMessage, m: &MeterMessage) -> bool {
    let first_receive = record
        .attributes
        .get("ApproximateReceiveCount")
        .is_some_and(|n| n == "1");
    let deferred = record
        .message_attributes
        .contains_key(tracemeter::domain::message::DEFERRALS_ATTRIBUTE);
    m.no_ledger_entry && first_receive && !deferred
}

async fn record_malformed(
    deps: &Deps<'_>,
    malformed: &[(usize, FailureKey, FailureReason, String)],
) -> Vec<(usize, Outcome)> {
    futures::stream::iter(malformed)
        .map(|(i, key, reason, detail)| async move {
            (
                *i,
                failure::record_permanent(deps, key, *reason, detail).await,
            )
        })
        .buffer_unordered(deps.concurrency())
        .collect()
        .await
}

/// Reads, prices and claims in rounds: a trace whose entry changed under a claim is read
/// again in the next round (its Langfuse usage is not read twice).
async fn claim_rounds(
    deps: &Deps<'_>,
    inv: &Invocation,
    parsed: &Parsed,
    slice: &[usize],
    outcomes: &mut [Option<Outcome>],
) -> Claims {
    let mut claims = Claims::default();
    let mut usages = Usages::new();
    let mut todo = slice.to_vec();
    for round in 0..MAX_LEDGER_ROUNDS {
        if todo.is_empty() {
            break;
        }
        let wanted = std::mem::take(&mut todo)
            .into_iter()
            .map(|index| Wanted {
                index,
                trace_id: parsed.traces[index].as_str(),
                newest: parsed.newest[index],
                new: parsed.new[index],
            })
            .collect();
        // The slice's entries in one batch read; a trace read again (its entry changed
        // under a claim) is read strongly.
        let entries = if round == 0 {
            Entries::Batch
        } else {
            Entries::Strong
        };
        let prepared = read::read_round(deps, inv, wanted, &mut usages, entries).await;
        let mut groups: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
        for (i, stage) in prepared {
            match stage {
                Stage::Done(o) => outcomes[i] = Some(o),
                Stage::Claim(c) => groups
                    .entry((c.customer_id.clone(), c.period.clone()))
                    .or_default()
                    .push(*c),
                Stage::Send(c) => claims.to_send.push(*c),
                Stage::Again => todo.push(i),
            }
        }
        for g in claim_all(deps, inv, groups).await {
            for (i, o) in g.done {
                outcomes[i] = Some(o);
            }
            todo.extend(g.again);
            claims.to_send.extend(g.claimed);
            claims.capped.extend(g.capped);
        }
    }
    for i in todo {
        let trace = &parsed.traces[i];
        outcomes[i] = Some(Outcome::retry(format!(
            "ledger entry of trace {trace} kept changing under concurrent writers"
        )));
    }
    claims
}

/// Phase 2: one transaction per customer and period, in trace id order, split to the
/// transaction size limit.
async fn claim_all(
    deps: &Deps<'_>,
    inv: &Invocation,
    groups: BTreeMap<(String, String), Vec<Candidate>>,
) -> Vec<claim::GroupClaim> {
    let mut batches = Vec::new();
    for mut group in groups.into_values() {
        group.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
        while group.len() > MAX_CLAIMS_PER_BATCH {
            let rest = group.split_off(MAX_CLAIMS_PER_BATCH);
            batches.push(group);
            group = rest;
        }
        batches.push(group);
    }
    let counted = &claim::counted_all(deps, &batches).await;
    futures::stream::iter(batches)
        .map(|group| claim::claim_group(deps, inv, group, counted))
        .buffer_unordered(deps.concurrency())
        .collect()
        .await
}
