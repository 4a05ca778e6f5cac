//! Phase 2, claim: one transaction per customer and budget period claims the batch's new
//! revisions: every ledger entry (conditional on the version it was read at) and ONE budget
//! counter update with the summed credits (conditional on the hard limit). The hard limit is
//! shared out in trace id order (`BudgetPolicy::share`); what does not fit is capped.

use crate::invocation::Invocation;
use crate::price::Candidate;
use crate::{Deps, Outcome};
use std::collections::{BTreeSet, HashMap};
use tracemeter::domain::budget::BudgetPolicy;
use tracemeter::domain::claim::{Claim, ClaimBatch, ClaimResult};
use tracemeter::domain::ledger::PendingClaim;
use tracemeter::domain::{meter, retry};
use tracing::{info, warn};

/// Transactions tried per group before its messages retry (each try follows a change that
/// another writer made: a contended budget or entry; after a transaction conflict, a short
/// pause first).
const MAX_CLAIM_TRIES: usize = 25;

/// A claimed revision on its way to Stripe.
pub(crate) struct Claimed {
    pub(crate) index: usize,
    pub(crate) trace_id: String,
    pub(crate) pending: PendingClaim,
    pub(crate) policy: BudgetPolicy,
    /// Taken over from an interrupted invocation.
    pub(crate) resumed: bool,
}

/// A budget counter a message changed without a delivery to record: a trace recorded as
/// capped, or a claim whose credits went back. Its alerts are checked at the end.
pub(crate) struct CounterCheck {
    pub(crate) index: usize,
    pub(crate) customer_id: String,
    pub(crate) period: String,
    pub(crate) policy: BudgetPolicy,
}

impl CounterCheck {
    /// The check a claim's counter needs.
    pub(crate) fn of(c: &Claimed) -> CounterCheck {
        CounterCheck {
            index: c.index,
            customer_id: c.pending.customer_id.clone(),
            period: c.pending.period.clone(),
            policy: c.policy.clone(),
        }
    }
}

/// What a group's claim left to do.
#[derive(Default)]
pub(crate) struct GroupClaim {
    pub(crate) done: Vec<(usize, Outcome)>,
    /// Entries that changed since they were read: read them again.
    pub(crate) again: Vec<usize>,
    pub(crate) claimed: Vec<Claimed>,
    pub(crate) capped: Vec<CounterCheck>,
}

/// The customer, period and policy every candidate of a group shares.
struct Group {
    customer_id: String,
    period: String,
    policy: BudgetPolicy,
}

/// Claims one customer's candidates of one budget period (at most `MAX_CLAIMS_PER_BATCH`,
/// sorted by trace id).
pub(crate) async fn claim_group(
    deps: &Deps<'_>,
    inv: &Invocation,
    mut candidates: Vec<Candidate>,
    counted_all: &Counted,
) -> GroupClaim {
    let mut out = GroupClaim::default();
    let Some(first) = candidates.first() else {
        return out;
    };
    let group = Group {
        customer_id: first.customer_id.clone(),
        period: first.period.clone(),
        policy: first.policy.clone(),
    };
    let counter = (group.customer_id.clone(), group.period.clone());
    let mut used = match counted_all.get(&counter) {
        Some(used) => *used,
        None => counted(deps, &group).await,
    };
    let mut conflicts = 0u32;
    for _ in 0..MAX_CLAIM_TRIES {
        if candidates.is_empty() {
            return out;
        }
        let batch = batch(deps, inv, &group, &candidates, used);
        match deps.ledger.claim_batch(&batch).await {
            Ok(ClaimResult::Claimed) => {
                out.claimed_all(&group, candidates, batch.claims);
                return out;
            }
            Ok(ClaimResult::LedgerChanged(changed)) => {
                info!(customer = %group.customer_id, changed = changed.len(), of = candidates.len(),
                      "ledger entries changed under the batch claim; claiming the rest");
                candidates = out.set_aside(candidates, &changed);
            }
            Ok(ClaimResult::OverBudget { used: now_used }) => used = now_used,
            Ok(ClaimResult::Conflict) => {
                conflicts += 1;
                let key = format!("{}#{}", inv.id(), group.customer_id);
                tokio::time::sleep(retry::conflict_pause(&key, conflicts)).await;
            }
            Err(e) => {
                warn!(customer = %group.customer_id, period = %group.period, error = %e, "claim failed, will retry");
                out.retry_all(candidates, &Outcome::retry_after(&e));
                return out;
            }
        }
    }
    let detail = format!(
        "budget of {} in {} is under heavy contention",
        group.customer_id, group.period
    );
    out.retry_all(candidates, &Outcome::retry(detail));
    out
}

/// The credits already counted, by customer and period, of the groups under a hard limit.
pub(crate) type Counted = HashMap<(String, String), u64>;

/// [`counted`] for all the groups of a slice at once: their counters under a hard limit in
/// ONE strong batch read (each group reads its own should that fail).
pub(crate) async fn counted_all(deps: &Deps<'_>, groups: &[Vec<Candidate>]) -> Counted {
    let counters: BTreeSet<(String, String)> = groups
        .iter()
        .filter_map(|g| g.first())
        .filter(|c| c.policy.hard_limit().is_some())
        .map(|c| (c.customer_id.clone(), c.period.clone()))
        .collect();
    if counters.len() < 2 {
        return Counted::new();
    }
    let counters: Vec<(String, String)> = counters.into_iter().collect();
    match deps.ledger.budget_usages(&counters).await {
        Ok(read) => read.into_iter().map(|(k, u)| (k, u.used)).collect(),
        Err(e) => {
            warn!(counters = counters.len(), error = %e, "could not read the budget counters at once; each group reads its own");
            Counted::new()
        }
    }
}

/// The credits already counted in the group's period, for the first try: under a hard limit
/// the counter is read (one strong read) so that the limit is shared out from what is
/// really used; a first try that assumed 0 is refused by the limit's condition whenever the
/// counter is within one batch of it, and a refused transaction costs the write units of
/// all its items. A stale or failed read costs only that retry (the condition still holds
/// the limit); without a hard limit nothing is shared out and nothing is read.
async fn counted(deps: &Deps<'_>, group: &Group) -> u64 {
    if group.policy.hard_limit().is_none() {
        return 0;
    }
    match deps
        .ledger
        .budget_usage(&group.customer_id, &group.period)
        .await
    {
        Ok(usage) => usage.used,
        Err(e) => {
            warn!(customer = %group.customer_id, error = %e, "could not read the budget counter; claiming as if unused");
            0
        }
    }
}

/// The transaction for the candidates, given `used` credits already counted in the period.
fn batch(
    deps: &Deps<'_>,
    inv: &Invocation,
    group: &Group,
    candidates: &[Candidate],
    used: u64,
) -> ClaimBatch {
    let lease_until = inv.lease_until(deps);
    let deltas: Vec<u64> = candidates.iter().map(|c| c.delta).collect();
    let splits = group.policy.share(used, &deltas);
    let claims = candidates
        .iter()
        .zip(splits)
        .map(|(c, split)| Claim {
            trace_id: c.trace_id.clone(),
            expect: c.expect,
            settled: c.settled.clone(),
            pending: PendingClaim {
                revision: c.revision,
                identifier: meter::identifier(&c.trace_id, c.revision),
                customer_id: group.customer_id.clone(),
                billable: split.billable,
                capped: split.capped,
                total_after: c.total_after,
                event_timestamp: meter::event_timestamp(c.usage_at, c.now),
                period: group.period.clone(),
                claimed_at: c.now,
                lease_until,
                receipt: Some(inv.receipt_for(c.index)),
            },
            usage_at: c.usage_at,
            last_observation_at: c.last_observation_at,
            seen: c.seen.clone(),
            price_version: Some(c.price_version.clone()),
        })
        .collect();
    ClaimBatch {
        customer_id: group.customer_id.clone(),
        period: group.period.clone(),
        hard_limit: group.policy.hard_limit(),
        limit: group.policy.limit,
        claims,
        now: deps.clock.now(),
    }
}

impl GroupClaim {
    /// The transaction committed: zero-credit traces are done, fully capped ones are done
    /// (alerts checked later), the rest go to Stripe.
    fn claimed_all(&mut self, group: &Group, candidates: Vec<Candidate>, claims: Vec<Claim>) {
        for (c, claim) in candidates.into_iter().zip(claims) {
            let p = claim.pending;
            if p.billable == 0 && p.capped == 0 {
                info!(trace_id = %c.trace_id, "trace costs no credits: recorded, nothing to send");
                let metered = Outcome::Metered {
                    billable: 0,
                    capped: 0,
                    resumed: false,
                };
                self.done.push((c.index, metered));
            } else if p.billable == 0 {
                info!(trace_id = %c.trace_id, customer = %group.customer_id, capped = p.capped, period = %group.period,
                      "usage over the hard limit: recorded as capped, not billed");
                self.done
                    .push((c.index, Outcome::Capped { capped: p.capped }));
                self.capped.push(CounterCheck {
                    index: c.index,
                    customer_id: group.customer_id.clone(),
                    period: group.period.clone(),
                    policy: group.policy.clone(),
                });
            } else {
                self.claimed.push(Claimed {
                    index: c.index,
                    trace_id: c.trace_id,
                    pending: p,
                    policy: group.policy.clone(),
                    resumed: false,
                });
            }
        }
    }

    /// Another delivery claimed or settled these (indices into `candidates`): they are read
    /// again; the rest is returned to be claimed.
    fn set_aside(&mut self, candidates: Vec<Candidate>, changed: &[usize]) -> Vec<Candidate> {
        let mut kept = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.into_iter().enumerate() {
            if changed.contains(&i) {
                self.again.push(c.index);
            } else {
                kept.push(c);
            }
        }
        kept
    }

    fn retry_all(&mut self, candidates: Vec<Candidate>, outcome: &Outcome) {
        self.done
            .extend(candidates.into_iter().map(|c| (c.index, outcome.clone())));
    }
}
