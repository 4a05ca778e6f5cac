//! Phase 1, read: where does each trace stand in the ledger? An interrupted claim is taken
//! over once its lease expired (or left for an operator once it outlived Stripe's dedup
//! window); anything else is read from Langfuse and priced.

use crate::claim::Claimed;
use crate::invocation::Invocation;
use crate::price::{self, Candidate};
use crate::{Deps, Outcome, failure};
use chrono::{DateTime, Utc};
use tracemeter::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use tracemeter::domain::usage::TraceUsage;
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

/// Reads and prices one trace. `usage` caches the Langfuse answer across ledger rounds.
pub(crate) async fn prepare(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    trace_id: &str,
    usage: &mut Option<Option<TraceUsage>>,
) -> Stage {
    match read_and_price(deps, inv, index, trace_id, usage).await {
        Ok(stage) => stage,
        Err(e) => Stage::Done(failure::outcome(deps, trace_id, e).await),
    }
}

async fn read_and_price(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    trace_id: &str,
    usage: &mut Option<Option<TraceUsage>>,
) -> Result<Stage> {
    let now = deps.clock.now();
    let entry = deps.ledger.entry(trace_id).await?;
    if let Some(e) = &entry {
        match e.state {
            LedgerState::Claimed => {
                return Ok(resume_claim(deps, inv, index, e, now)
                    .await?
                    .unwrap_or(Stage::Again));
            }
            LedgerState::Ambiguous => {
                warn!(
                    trace_id,
                    "ledger entry is ambiguous: an operator must settle it; not billed"
                );
                return Ok(Stage::Done(Outcome::Ambiguous));
            }
            _ => {}
        }
    }
    if usage.is_none() {
        *usage = Some(deps.usage.trace_usage(trace_id).await?);
    }
    let Some(Some(trace)) = usage.as_ref() else {
        return Err(Error::permanent(
            FailureReason::TraceNotFound,
            format!(
                "trace {trace_id} not found in Langfuse ({:?} API at {})",
                deps.config.langfuse.api, deps.config.langfuse.base_url
            ),
        ));
    };
    price::price(deps, inv, index, trace, entry.as_ref(), now).await
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
        .take_over(trace_id, p.revision, now, lease_until)
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
    if !deps
        .ledger
        .mark_ambiguous(trace_id, p.revision, now)
        .await?
    {
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
