//! Phase 1, read: where does each trace stand in the ledger? An interrupted claim is taken
//! over once its lease expired (or left for an operator once it outlived Stripe's dedup
//! window); an entry that already covers the usage ingest saw settles the message without
//! Langfuse; the rest is read from Langfuse in ONE batch read and priced.

use crate::claim::Claimed;
use crate::invocation::Invocation;
use crate::price::{self, Candidate};
use crate::{Deps, Outcome, budget, failure};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use tracemeter::domain::ingest::covers;
use tracemeter::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use tracemeter::domain::usage::TraceUsage;
use tracemeter::ports::UsageByTrace;
use tracemeter::{Error, FailureReason, Result};
use tracing::{error, info, warn};

/// Where a message stands after reading its ledger entry and pricing it.
pub(crate) enum Stage {
    /// Settled (or failed) without a new claim.
    Done(Outcome),
    /// To be claimed with its customer's batch.
    Claim(Box<Candidate>),
    /// An interrupted claim taken over: to be sent with the batch's claims.
    Send(Box<Claimed>),
    /// The entry changed under us: read it again.
    Again,
}

/// A message of the round: its trace and the newest usage time ingest saw.
pub(crate) struct Wanted<'a> {
    pub(crate) index: usize,
    pub(crate) trace_id: &'a str,
    pub(crate) newest: Option<DateTime<Utc>>,
    /// Known to have no ledger entry (ingest saw none, first delivery): left out of the
    /// batch read and claimed as new.
    pub(crate) new: bool,
}

/// What the ledger alone says of a trace.
enum Look {
    /// Settled by the ledger.
    Staged(Stage),
    /// Its usage must be read and priced against this entry.
    Price(Option<Box<LedgerEntry>>),
}

/// Langfuse answers kept across the ledger rounds of an invocation (by message index).
pub(crate) type Usages = HashMap<usize, Option<TraceUsage>>;

/// Where a round's entries come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entries {
    /// ONE batch read for the round (possibly stale; see [`look_ledger`]): a slice's first
    /// round.
    Batch,
    /// A strong read per trace: a trace read again because its entry changed under a claim.
    Strong,
}

/// One round: the ledger entries (one batch read, or strong reads `concurrency` at a time),
/// ONE batch usage read for the traces to price whose usage is not known yet, then the
/// prices.
pub(crate) async fn read_round(
    deps: &Deps<'_>,
    inv: &Invocation,
    wanted: Vec<Wanted<'_>>,
    usages: &mut Usages,
    entries: Entries,
) -> Vec<(usize, Stage)> {
    let batch = match entries {
        Entries::Batch => batch_entries(deps, &wanted).await,
        Entries::Strong => None,
    };
    let batch = batch.as_ref();
    let looked: Vec<(Wanted<'_>, Look)> = futures::stream::iter(wanted)
        .map(|w| async move {
            let look = look(deps, inv, &w, batch).await;
            (w, look)
        })
        .buffer_unordered(deps.concurrency())
        .collect()
        .await;
    let mut staged = Vec::new();
    let mut to_price = Vec::new();
    for (w, look) in looked {
        match look {
            Look::Staged(stage) => staged.push((w.index, stage)),
            Look::Price(entry) => to_price.push((w, entry)),
        }
    }
    let unread: Vec<String> = to_price
        .iter()
        .filter(|(w, _)| !usages.contains_key(&w.index))
        .map(|(w, _)| w.trace_id.to_string())
        .collect();
    let answers = read_usage(deps, inv, &unread).await;
    let with_usage: Vec<_> = to_price
        .into_iter()
        .map(|(w, entry)| {
            let usage = match usages.get(&w.index) {
                Some(known) => Ok(known.clone()),
                None => answer_for(&answers, w.trace_id),
            };
            if let Ok(u) = &usage {
                usages.insert(w.index, u.clone());
            }
            (w, entry, usage)
        })
        .collect();
    let known: Vec<&TraceUsage> = with_usage
        .iter()
        .filter_map(|(_, _, usage)| usage.as_ref().ok()?.as_ref())
        .collect();
    inv.look_up(deps, &known).await;
    let priced: Vec<(usize, Stage)> = futures::stream::iter(with_usage)
        .map(|(w, entry, usage)| async move {
            let stage = price_read(deps, inv, &w, entry.as_deref(), usage).await;
            (w.index, stage)
        })
        .buffer_unordered(deps.concurrency())
        .collect()
        .await;
    staged.extend(priced);
    staged
}

/// The batch usage read (none when every usage is known). A short wait for Langfuse (the
/// shared request budget spent until the next slot, or a 429 asking for seconds) is waited
/// out when the deadline allows: cheaper than deferring the whole batch, and it keeps the
/// instances in step with the budget. A longer one is the error (the batch is deferred).
async fn read_usage(
    deps: &Deps<'_>,
    inv: &Invocation,
    trace_ids: &[String],
) -> Result<UsageByTrace> {
    if trace_ids.is_empty() {
        return Ok(UsageByTrace::new());
    }
    loop {
        let answer = deps.usage.traces_usage(trace_ids).await;
        let wait = match &answer {
            Err(
                e @ tracemeter::Error::Transient {
                    service: "langfuse",
                    ..
                },
            ) => e.retry_after(),
            _ => None,
        };
        match wait {
            Some(wait) if wait <= MAX_READ_WAIT && inv.can_start(deps, wait + READ_ESTIMATE) => {
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    traces = trace_ids.len(),
                    "waiting for Langfuse (request budget or 429)"
                );
                tokio::time::sleep(wait).await;
            }
            _ => return answer,
        }
    }
}

/// The longest wait for Langfuse a batch read sits out (two budget slots, or a short 429);
/// longer waits defer.
const MAX_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Time a batch read and the rest of its slice are expected to need after a wait.
const READ_ESTIMATE: std::time::Duration = std::time::Duration::from_secs(5);

/// One trace's part of the batch answer: its usage, `None` when Langfuse does not know it,
/// or the error of the read.
fn answer_for(answers: &Result<UsageByTrace>, trace_id: &str) -> Result<Option<TraceUsage>> {
    match answers {
        Err(e) => Err(e.clone()),
        Ok(map) => match map.get(trace_id) {
            Some(Ok(usage)) => Ok(Some(usage.clone())),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(None),
        },
    }
}

/// The round's entries in one batch read, leaving out the traces known to be new (absent
/// from the answer, they are claimed as new); `None` when it failed (each trace is then read
/// strongly on its own, and a real outage fails there with its trace named).
async fn batch_entries(deps: &Deps<'_>, wanted: &[Wanted<'_>]) -> Option<BatchEntries> {
    let ids: Vec<String> = wanted
        .iter()
        .filter(|w| !w.new)
        .map(|w| w.trace_id.to_string())
        .collect();
    if ids.is_empty() {
        return Some(BatchEntries::new());
    }
    match deps.ledger.entries(&ids).await {
        Ok(entries) => Some(entries),
        Err(e) => {
            warn!(error = %e, traces = ids.len(), "batch read of ledger entries failed; reading each");
            None
        }
    }
}

/// A round's entries from one batch read, by trace id (absent: no entry).
type BatchEntries = HashMap<String, LedgerEntry>;

/// What the ledger alone says: an interrupted claim, an ambiguous entry, or an entry that
/// covers what ingest saw settle the message; anything else is priced.
async fn look(
    deps: &Deps<'_>,
    inv: &Invocation,
    w: &Wanted<'_>,
    batch: Option<&BatchEntries>,
) -> Look {
    let looked = match batch {
        Some(entries) => look_batch(deps, inv, w, entries).await,
        None => look_ledger(deps, inv, w, deps.ledger.entry(w.trace_id).await).await,
    };
    match looked {
        Ok(look) => look,
        Err(e) => Look::Staged(Stage::Done(failure::outcome(deps, w.trace_id, e).await)),
    }
}

/// From the batch read, which may be stale. Pricing and claiming are guarded by the claim's
/// condition (the version or absence it read), resuming a claim by the take-over's (the
/// claim pinned, its receipt checked); but acknowledging a message without any write (an
/// ambiguous entry, or one that already covers the usage) has no condition to catch a stale
/// read, so that decision is taken on a strong read only.
async fn look_batch(
    deps: &Deps<'_>,
    inv: &Invocation,
    w: &Wanted<'_>,
    entries: &BatchEntries,
) -> Result<Look> {
    let e = entries.get(w.trace_id).cloned();
    let acknowledges = e.as_ref().is_some_and(|e| {
        e.state == LedgerState::Ambiguous
            || matches!(e.state, LedgerState::Metered | LedgerState::Capped)
                && ledger_covers(e, w.newest)
    });
    let e = if acknowledges {
        deps.ledger.entry(w.trace_id).await
    } else {
        Ok(e)
    };
    look_ledger(deps, inv, w, e).await
}

async fn look_ledger(
    deps: &Deps<'_>,
    inv: &Invocation,
    w: &Wanted<'_>,
    entry: Result<Option<LedgerEntry>>,
) -> Result<Look> {
    let now = deps.clock.now();
    let trace_id = w.trace_id;
    let Some(e) = entry? else {
        return Ok(Look::Price(None));
    };
    let stage = match e.state {
        LedgerState::Claimed => resume_claim(deps, inv, w.index, &e, now)
            .await?
            .unwrap_or(Stage::Again),
        LedgerState::Ambiguous => {
            warn!(
                trace_id,
                "ledger entry is ambiguous: an operator must settle it; not billed"
            );
            Stage::Done(Outcome::Ambiguous)
        }
        LedgerState::Metered | LedgerState::Capped if ledger_covers(&e, w.newest) => {
            already_covered(deps, inv, &e).await?
        }
        _ => return Ok(Look::Price(Some(Box::new(e)))),
    };
    Ok(Look::Staged(stage))
}

/// True when the entry's billed usage includes the newest observation ingest saw.
fn ledger_covers(entry: &LedgerEntry, newest: Option<DateTime<Utc>>) -> bool {
    match (entry.last_observation_at, newest) {
        (Some(billed), Some(seen)) => covers(billed, seen),
        _ => false,
    }
}

/// Settled without Langfuse. The budget alerts are checked again (idempotent: a redelivery
/// after a failed check runs it; once per customer and period in an invocation), for the
/// period of the newest billed observation.
async fn already_covered(deps: &Deps<'_>, inv: &Invocation, e: &LedgerEntry) -> Result<Stage> {
    if let (Some(cus), Some(at)) = (e.customer_id.as_deref(), e.last_observation_at) {
        let policy = inv.policy(deps, cus).await?;
        budget::recheck(deps, inv, cus, &policy.period.key(at), &policy).await?;
    }
    Ok(Stage::Done(Outcome::AlreadyBilled))
}

/// Prices a trace read from Langfuse; a trace Langfuse does not know is `trace_not_found`.
async fn price_read(
    deps: &Deps<'_>,
    inv: &Invocation,
    w: &Wanted<'_>,
    entry: Option<&LedgerEntry>,
    usage: Result<Option<TraceUsage>>,
) -> Stage {
    let priced = match usage {
        Ok(Some(trace)) => price::price(deps, inv, w.index, &trace, entry, deps.clock.now()).await,
        Ok(None) => Err(Error::permanent(
            FailureReason::TraceNotFound,
            format!(
                "trace {} not found in Langfuse ({:?} API at {})",
                w.trace_id, deps.config.langfuse.api, deps.config.langfuse.base_url
            ),
        )),
        Err(e) => Err(e),
    };
    match priced {
        Ok(stage) => stage,
        Err(e) => Stage::Done(failure::outcome(deps, w.trace_id, e).await),
    }
}

/// A claimed revision found in the ledger: taken over when its lease expired, to be sent
/// with the batch. `None`: the entry changed, read it again.
async fn resume_claim(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    entry: &LedgerEntry,
    now: DateTime<Utc>,
) -> Result<Option<Stage>> {
    let trace_id = entry.trace_id.as_str();
    let Some(p) = entry.pending.clone() else {
        return Err(Error::transient(
            "dynamodb",
            format!("ledger entry of trace {trace_id} is claimed without a pending revision"),
        ));
    };
    if now - p.claimed_at > deps.config.process.stripe_dedup_window {
        return settle_as_ambiguous(deps, trace_id, &p, now).await;
    }
    if p.lease_until > now {
        let wait = (p.lease_until - now).to_std().unwrap_or_default();
        return Ok(Some(Stage::Done(Outcome::Retry {
            detail: format!(
                "trace {trace_id} revision {} is being processed by another invocation until {}",
                p.revision, p.lease_until
            ),
            after: Some(wait),
            service: None,
        })));
    }
    let lease_until = inv.lease_until(deps);
    if !deps
        .ledger
        .take_over(trace_id, &p, now, lease_until)
        .await?
    {
        return Ok(None);
    }
    info!(trace_id, revision = p.revision, identifier = %p.identifier, "resuming an interrupted claim");
    let policy = inv.policy(deps, &p.customer_id).await?;
    Ok(Some(Stage::Send(Box::new(Claimed {
        index,
        trace_id: trace_id.to_string(),
        pending: PendingClaim { lease_until, ..p },
        policy,
        resumed: true,
    }))))
}

/// A claim that outlived Stripe's dedup window is never resent blindly: Stripe may or may
/// not have its event, and would no longer recognise the identifier.
async fn settle_as_ambiguous(
    deps: &Deps<'_>,
    trace_id: &str,
    p: &PendingClaim,
    now: DateTime<Utc>,
) -> Result<Option<Stage>> {
    if !deps.ledger.mark_ambiguous(trace_id, p, now).await? {
        return Ok(None);
    }
    error!(
        trace_id,
        identifier = %p.identifier,
        customer = %p.customer_id,
        credits = p.billable,
        claimed_at = %p.claimed_at,
        "claim outlived Stripe's dedup window without being marked: recorded as ambiguous, not resent"
    );
    Ok(Some(Stage::Done(Outcome::Ambiguous)))
}
