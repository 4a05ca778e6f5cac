//! Phase 1, price: what a trace's usage costs in credits now, and what of it the ledger does
//! not cover yet. The uncovered part is a candidate for its customer's batch claim.

use crate::invocation::Invocation;
use crate::read::Stage;
use crate::{Deps, Outcome, book, budget};
use chrono::{DateTime, Utc};
use tracemeter::Result;
use tracemeter::domain::budget::BudgetPolicy;
use tracemeter::domain::claim::{BilledUsage, Expect, Settled};
use tracemeter::domain::credits;
use tracemeter::domain::ingest::covers;
use tracemeter::domain::ledger::LedgerEntry;
use tracemeter::domain::meter;
use tracemeter::domain::price_book;
use tracemeter::domain::usage::TraceUsage;
use tracing::{info, warn};

/// A trace priced and ready to be claimed in its customer's batch.
pub(crate) struct Candidate {
    pub(crate) index: usize,
    pub(crate) trace_id: String,
    pub(crate) expect: Expect,
    pub(crate) settled: Settled,
    pub(crate) revision: u32,
    /// Credits not yet covered by the ledger.
    pub(crate) delta: u64,
    pub(crate) total_after: u64,
    pub(crate) customer_id: String,
    pub(crate) period: String,
    pub(crate) policy: BudgetPolicy,
    pub(crate) usage_at: DateTime<Utc>,
    pub(crate) last_observation_at: Option<DateTime<Utc>>,
    pub(crate) seen: BilledUsage,
    /// The price version the revision was priced with (recorded by the claim).
    pub(crate) price_version: String,
    pub(crate) now: DateTime<Utc>,
}

/// Prices the trace against what its ledger entry already covers.
pub(crate) async fn price(
    deps: &Deps<'_>,
    inv: &Invocation,
    index: usize,
    usage: &TraceUsage,
    entry: Option<&LedgerEntry>,
    now: DateTime<Utc>,
) -> Result<Stage> {
    let cfg = deps.config;
    let (prev_total, prev_revision) = entry
        .map(|e| (e.total_credits, e.revision))
        .unwrap_or((0, 0));
    // Impossible usage fails as such before anything else is looked up.
    credits::check_usage(usage)?;
    // A billed trace is priced for its billed customer (and at its recorded version).
    let billed_to = entry
        .filter(|_| prev_revision > 0)
        .and_then(|e| e.customer_id.clone());
    let pricing_customer = match billed_to {
        Some(c) => c,
        None => inv.customer(deps, usage).await?,
    };
    let version = book::version_for(deps, entry, &pricing_customer, usage.timestamp).await?;
    let quote = price_book::quote_at(
        usage,
        &version,
        cfg.pricing.max_trace_cost_usd,
        &cfg.byo_key,
    )?;
    if !quote.unpriced.is_empty() {
        inv.count_unpriced();
        warn!(trace_id = %usage.trace_id, models = %quote.unpriced.join(", "), version = %version,
              "token usage without a cost or a token price: billed compute only (rule compute_only)");
    }
    if prev_revision > 0 && quote.credits <= prev_total {
        return already_billed(deps, inv, usage, entry, quote.credits, prev_total).await;
    }
    let customer_id = inv.customer(deps, usage).await?;
    meter::check_event_time(&usage.trace_id, usage.timestamp, now)?;
    let policy = inv.policy(deps, &customer_id).await?;
    Ok(Stage::Claim(Box::new(Candidate {
        index,
        trace_id: usage.trace_id.clone(),
        expect: entry.map_or(Expect::Absent, |e| Expect::Version(e.version)),
        settled: Settled::of(entry),
        revision: prev_revision + 1,
        delta: quote.credits - prev_total,
        total_after: quote.credits,
        customer_id,
        period: policy.period.key(usage.timestamp),
        policy,
        usage_at: usage.timestamp,
        last_observation_at: usage.last_observation_at,
        seen: BilledUsage {
            cost_usd: usage.ai_cost_usd,
            latency_seconds: usage.latency_seconds,
            observations: usage.observation_count,
        },
        price_version: version.id(),
        now,
    })))
}

/// The ledger covers the usage. A redelivery after a failed alert check runs the check
/// again (it is idempotent).
async fn already_billed(
    deps: &Deps<'_>,
    inv: &Invocation,
    usage: &TraceUsage,
    entry: Option<&LedgerEntry>,
    credits: u64,
    billed: u64,
) -> Result<Stage> {
    if credits < billed {
        info!(
            trace_id = %usage.trace_id,
            now = credits,
            billed,
            "trace credits shrank after billing; nothing to do"
        );
    }
    if let Some(e) = entry {
        note_seen(deps, e, usage).await;
    }
    if let Some(cus) = entry.and_then(|e| e.customer_id.as_deref()) {
        let policy = inv.policy(deps, cus).await?;
        let period = policy.period.key(usage.timestamp);
        budget::recheck(deps, inv, cus, &period, &policy).await?;
    }
    Ok(Stage::Done(Outcome::AlreadyBilled))
}

/// The usage is newer than the entry says though its credits did not grow (a late
/// observation that costs nothing): the entry records it, so ingest stops enqueuing the
/// trace. Best effort: failing only means one more enqueue.
async fn note_seen(deps: &Deps<'_>, entry: &LedgerEntry, usage: &TraceUsage) {
    let Some(seen) = usage.last_observation_at else {
        return;
    };
    if entry
        .last_observation_at
        .is_some_and(|billed| covers(billed, seen))
    {
        return;
    }
    if let Err(e) = deps
        .ledger
        .note_seen(&entry.trace_id, entry.version, seen)
        .await
    {
        warn!(trace_id = %entry.trace_id, error = %e, "could not record the newest observation seen");
    }
}
