//! `ClaimStore`: reading entries, the batch claim transaction, take-over and ambiguity.

use super::{MemoryLedger, State, StoredTrace, ms, refused};
use crate::domain::attention::AMBIGUOUS_REASON;
use crate::domain::claim::{
    BilledUsage, Claim, ClaimBatch, ClaimResult, Expect, MAX_CLAIMS_PER_BATCH,
};
use crate::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use crate::error::Result;
use crate::ports::ClaimStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

/// `mark_ambiguous`'s detail, as the DynamoDB adapter writes it.
const AMBIGUOUS_DETAIL: &str = "claimed but never marked metered, and older than Stripe's identifier dedup window: check Stripe for the identifier before resending or releasing the budget";

#[async_trait]
impl ClaimStore for MemoryLedger {
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>> {
        Ok(self.state().entry(trace_id))
    }

    async fn entries(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerEntry>> {
        let state = self.state();
        Ok(trace_ids
            .iter()
            .filter_map(|id| Some((id.clone(), state.entry(id)?)))
            .collect())
    }

    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult> {
        if batch.claims.is_empty() {
            return Ok(ClaimResult::Claimed);
        }
        if batch.claims.len() > MAX_CLAIMS_PER_BATCH {
            return Err(refused(
                "claim",
                format!(
                    "a claim batch holds at most {MAX_CLAIMS_PER_BATCH} traces, got {}",
                    batch.claims.len()
                ),
            ));
        }
        let billable: u64 = batch.claims.iter().map(|c| c.pending.billable).sum();
        let capped: u64 = batch.claims.iter().map(|c| c.pending.capped).sum();
        let room = room(batch, billable)?;
        let mut state = self.state();
        let mut names = BTreeSet::new();
        if !batch.claims.iter().all(|c| names.insert(&c.trace_id)) {
            return Err(refused(
                "TransactWriteItems",
                "ValidationException: Transaction request cannot include multiple operations on one item",
            ));
        }
        // Every condition is evaluated; the ledger's failures are reported first.
        let changed: Vec<usize> = batch
            .claims
            .iter()
            .enumerate()
            .filter(|(_, c)| !expectation_holds(state.traces.get(&c.trace_id), c.expect))
            .map(|(i, _)| i)
            .collect();
        if !changed.is_empty() {
            return Ok(ClaimResult::LedgerChanged(changed));
        }
        let key = (batch.customer_id.clone(), batch.period.clone());
        let touches_counter = billable > 0 || capped > 0;
        if touches_counter
            && let Some(room) = room
            && let Some(used) = state.counters.get(&key).and_then(|c| c.used)
            && used > i128::from(room)
        {
            return Ok(ClaimResult::OverBudget {
                used: u64::try_from(used).unwrap_or(0),
            });
        }
        for claim in &batch.claims {
            write_claim(&mut state, claim);
        }
        if touches_counter {
            let counter = state.counters.entry(key).or_default();
            if let Some(limit) = batch.limit {
                counter.limit = Some(limit);
            }
            if capped > 0 {
                counter.exceeded = true;
            }
            counter.used = Some(counter.used.unwrap_or(0) + i128::from(billable));
            counter.capped = Some(counter.capped.unwrap_or(0) + i128::from(capped));
        }
        Ok(ClaimResult::Claimed)
    }

    async fn take_over(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut state = self.state();
        let Some(item) = unsettled(&mut state, LedgerState::Claimed, trace_id, pending) else {
            return Ok(false);
        };
        let Some(p) = item.pending.as_mut().filter(|p| p.lease_until <= ms(now)) else {
            return Ok(false);
        };
        p.lease_until = ms(lease_until);
        item.version += 1;
        Ok(true)
    }

    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut state = self.state();
        let Some(item) = unsettled(&mut state, LedgerState::Claimed, trace_id, pending) else {
            return Ok(false);
        };
        item.updated_at = Some(ms(now));
        item.state = LedgerState::Ambiguous;
        item.reason = Some(AMBIGUOUS_REASON.to_string());
        item.detail = Some(AMBIGUOUS_DETAIL.to_string());
        item.version += 1;
        Ok(true)
    }

    async fn note_seen(
        &self,
        trace_id: &str,
        version: u64,
        last_observation_at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut state = self.state();
        let seen = ms(last_observation_at);
        let Some(item) = state.traces.get_mut(trace_id).filter(|item| {
            item.version == version && item.last_observation_at.is_none_or(|lo| lo < seen)
        }) else {
            return Ok(false);
        };
        item.last_observation_at = Some(seen);
        item.version += 1;
        Ok(true)
    }
}

/// The stored item when it is `claimed` at `revision` (the condition of every write that
/// settles a claim: `#state = :claimed AND #p_rev = :rev`, on the item as stored).
pub(super) fn claimed<'a>(
    state: &'a mut State,
    trace_id: &str,
    revision: u32,
) -> Option<&'a mut StoredTrace> {
    pending_in(state, LedgerState::Claimed, trace_id, revision)
}

/// The stored item when it is in state `from` with `p` as its pending claim (revision,
/// identifier, receipt), and `p`'s receipt does not list it as delivered: the memory
/// counterpart of the DynamoDB ledger's receipt condition check.
pub(super) fn unsettled<'a>(
    state: &'a mut State,
    from: LedgerState,
    trace_id: &str,
    p: &PendingClaim,
) -> Option<&'a mut StoredTrace> {
    let delivered = p.receipt.as_ref().is_some_and(|r| {
        state
            .receipts
            .get(r)
            .is_some_and(|ids| ids.contains(&p.identifier))
    });
    if delivered {
        return None;
    }
    pending_in(state, from, trace_id, p.revision).filter(|item| {
        item.pending
            .as_ref()
            .is_some_and(|q| q.identifier == p.identifier && q.receipt == p.receipt)
    })
}

/// The stored item when it is in state `from` with a pending revision `revision`.
pub(super) fn pending_in<'a>(
    state: &'a mut State,
    from: LedgerState,
    trace_id: &str,
    revision: u32,
) -> Option<&'a mut StoredTrace> {
    state.traces.get_mut(trace_id).filter(|item| {
        item.state == from
            && item
                .pending
                .as_ref()
                .is_some_and(|p| p.revision == revision)
    })
}

/// The counter's condition: with a hard limit and credits to bill, the counter must be at
/// most `limit - billable` before the add. More billable credits than the limit itself is an
/// error before any write, as in the DynamoDB adapter.
fn room(batch: &ClaimBatch, billable: u64) -> Result<Option<u64>> {
    match batch.hard_limit {
        Some(limit) if billable > 0 => limit.checked_sub(billable).map(Some).ok_or_else(|| {
            refused(
                "claim",
                format!("claim of {billable} credits over the limit {limit}"),
            )
        }),
        _ => Ok(None),
    }
}

/// `attribute_not_exists(#state)` or `#ver = :ver`.
fn expectation_holds(item: Option<&StoredTrace>, expect: Expect) -> bool {
    match (expect, item) {
        (Expect::Absent, item) => item.is_none(),
        (Expect::Version(v), Some(item)) => item.version == v,
        (Expect::Version(_), None) => false,
    }
}

/// The ledger part of a claim: the entry advanced to the claimed revision (or committed at
/// once when nothing is billable), the settled values written as absolute values.
fn write_claim(state: &mut State, claim: &Claim) {
    let (p, base) = (&claim.pending, &claim.settled);
    let item = state
        .traces
        .entry(claim.trace_id.clone())
        .or_insert_with(|| StoredTrace::new(LedgerState::Claimed));
    item.customer_id = Some(p.customer_id.clone());
    item.usage_at = Some(ms(claim.usage_at));
    item.billed_credits = base.billed_credits;
    item.seen = Some(BilledUsage {
        cost_usd: claim.seen.cost_usd.normalize(),
        latency_seconds: claim.seen.latency_seconds.normalize(),
        observations: claim.seen.observations,
    });
    if let Some(lo) = claim.last_observation_at {
        item.last_observation_at = Some(ms(lo));
    }
    if let Some(pv) = &claim.price_version {
        item.price_version = Some(pv.clone());
    }
    item.reason = None;
    item.detail = None;
    if p.billable > 0 {
        item.state = LedgerState::Claimed;
        item.revision = base.revision;
        item.total_credits = base.total_credits;
        item.capped_credits = base.capped_credits;
        let mut pending = p.clone();
        pending.claimed_at = ms(p.claimed_at);
        pending.lease_until = ms(p.lease_until);
        item.pending = Some(pending);
    } else {
        item.state = if p.capped > 0 {
            LedgerState::Capped
        } else {
            LedgerState::Metered
        };
        item.revision = p.revision;
        item.total_credits = p.total_after;
        item.capped_credits = base.capped_credits + p.capped;
        item.period = Some(p.period.clone());
        item.pending = None;
    }
    if let Some(id) = &base.receipted {
        item.identifiers.insert(id.clone());
    }
    item.version += 1;
}
