//! Phase 4, finish: every delivery of the invocation is recorded in ONE write per receipt (a
//! resumed claim in the receipt it was claimed with; a claim without a receipt is marked on
//! its entry), then the budget alerts are checked once per customer and period, then
//! (optionally) the traces are scored in Langfuse.

use crate::claim::{Claimed, CounterCheck};
use crate::{Deps, Outcome, budget};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use tracemeter::domain::budget::BudgetPolicy;
use tracing::{info, warn};

/// What the send phase settled.
pub(crate) struct Settled {
    /// Stripe has these events.
    pub(crate) delivered: Vec<Claimed>,
    /// Recorded as capped, nothing sent.
    pub(crate) capped: Vec<CounterCheck>,
    /// Refused for good by Stripe: the claim's credits went back to the counter, which may
    /// now be under a hard limit it had reached (the exceeded flag is cleared, an event
    /// recorded). Their outcome stays the permanent failure whatever the check does.
    pub(crate) given_back: Vec<CounterCheck>,
}

/// The outcome of each delivered or capped message.
pub(crate) async fn finish(deps: &Deps<'_>, settled: Settled) -> Vec<(usize, Outcome)> {
    let (recorded, mut out) = record_deliveries(deps, settled.delivered).await;
    let mut checks = Checks::new();
    for c in settled.capped {
        checks.add(c.customer_id, c.period, &c.policy, Some(c.index));
    }
    for c in settled.given_back {
        checks.add(c.customer_id, c.period, &c.policy, None);
    }
    for (receipt, c) in &recorded {
        let p = &c.pending;
        info!(trace_id = %c.trace_id, customer = %p.customer_id, revision = p.revision,
              credits = p.billable, capped = p.capped, identifier = %p.identifier,
              receipt = %receipt, resumed = c.resumed, "metered");
        checks.add(
            p.customer_id.clone(),
            p.period.clone(),
            &c.policy,
            Some(c.index),
        );
        let metered = Outcome::Metered {
            billable: p.billable,
            capped: p.capped,
            resumed: c.resumed,
        };
        out.push((c.index, metered));
    }
    for i in checks.run(deps).await {
        let retry = Outcome::retry("budget alert check failed");
        match out.iter_mut().find(|(j, _)| *j == i) {
            Some(slot) => slot.1 = retry,
            None => out.push((i, retry)),
        }
    }
    score(deps, &recorded).await;
    out
}

/// Records the deliveries: the claims recorded (with the receipt that records them, or
/// "none" when marked on the entry) and the retries of those that could not be.
async fn record_deliveries(
    deps: &Deps<'_>,
    delivered: Vec<Claimed>,
) -> (Vec<(String, Claimed)>, Vec<(usize, Outcome)>) {
    let mut recorded = Vec::new();
    let mut retries = Vec::new();
    let mut by_receipt: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
    for c in delivered {
        match c.pending.receipt.clone() {
            Some(receipt) => by_receipt.entry(receipt).or_default().push(c),
            None => match mark_on_entry(deps, &c).await {
                Ok(()) => recorded.push(("none".to_string(), c)),
                Err(o) => retries.push((c.index, o)),
            },
        }
    }
    for (receipt, claims) in by_receipt {
        let ids: Vec<String> = claims
            .iter()
            .map(|c| c.pending.identifier.clone())
            .collect();
        match deps
            .ledger
            .record_delivered(&receipt, &ids, deps.clock.now())
            .await
        {
            Ok(()) => recorded.extend(claims.into_iter().map(|c| (receipt.clone(), c))),
            Err(e) => {
                // Stripe has the events; the retry resumes the claims (Stripe dedups the
                // identifiers) and records them.
                warn!(receipt = %receipt, error = %e, "could not record the deliveries; they resume on retry");
                let retry = Outcome::retry(format!("could not record the delivery receipt: {e}"));
                retries.extend(claims.iter().map(|c| (c.index, retry.clone())));
            }
        }
    }
    (recorded, retries)
}

async fn mark_on_entry(deps: &Deps<'_>, c: &Claimed) -> Result<(), Outcome> {
    match deps
        .ledger
        .mark_metered(&c.trace_id, &c.pending, deps.clock.now())
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            warn!(trace_id = %c.trace_id, revision = c.pending.revision,
                  "revision was already marked by another invocation");
            Ok(())
        }
        Err(e) => Err(Outcome::retry(format!(
            "could not mark the revision metered: {e}"
        ))),
    }
}

/// The budget checks to run: one per customer and period, with the messages that need it.
struct Checks(BTreeMap<(String, String), (BudgetPolicy, Vec<usize>)>);

impl Checks {
    fn new() -> Checks {
        Checks(BTreeMap::new())
    }

    /// A check for `customer`'s `period`; `index`: the message that retries if it fails.
    fn add(
        &mut self,
        customer: String,
        period: String,
        policy: &BudgetPolicy,
        index: Option<usize>,
    ) {
        let entry = self
            .0
            .entry((customer, period))
            .or_insert_with(|| (policy.clone(), Vec::new()));
        entry.1.extend(index);
    }

    /// Runs the checks on the counters, all read in one strong batch read (should that
    /// fail, each check reads its own); returns the messages whose check failed (they
    /// retry, and the redelivery runs the check again).
    async fn run(self, deps: &Deps<'_>) -> Vec<usize> {
        let counters: Vec<(String, String)> = self.0.keys().cloned().collect();
        let read = match counters.len() {
            0 | 1 => HashMap::new(),
            _ => deps
                .ledger
                .budget_usages(&counters)
                .await
                .unwrap_or_else(|e| {
                    warn!(counters = counters.len(), error = %e, "could not read the budget counters at once; reading each");
                    HashMap::new()
                }),
        };
        let read = &read;
        let failed: Vec<Vec<usize>> = futures::stream::iter(self.0)
            .map(|(counter, (policy, indices))| async move {
                let (customer, period) = &counter;
                let checked = match read.get(&counter) {
                    Some(usage) => {
                        budget::check_read(deps, customer, period, &policy, usage.clone()).await
                    }
                    None => budget::check(deps, customer, period, &policy).await,
                };
                match checked {
                    Ok(()) => None,
                    Err(e) => {
                        warn!(customer = %customer, period = %period, error = %e,
                              "budget alert check failed; the redelivery runs it again");
                        Some(indices)
                    }
                }
            })
            .buffer_unordered(deps.concurrency())
            .filter_map(|x| async move { x })
            .collect()
            .await;
        failed.into_iter().flatten().collect()
    }
}

/// Marks the billed traces in Langfuse when `LANGFUSE_SCORE_ENABLED` (best effort).
async fn score(deps: &Deps<'_>, recorded: &[(String, Claimed)]) {
    if !deps.config.langfuse.score_enabled {
        return;
    }
    futures::stream::iter(recorded)
        .for_each_concurrent(deps.concurrency(), |(_, c)| async move {
            if let Err(e) = deps
                .usage
                .record_billed(&c.trace_id, &c.pending.identifier, c.pending.total_after)
                .await
            {
                warn!(trace_id = %c.trace_id, error = %e, "could not mark the trace in Langfuse (best effort)");
            }
        })
        .await;
}
