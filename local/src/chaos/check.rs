//! The invariants of a reliability run, checked against the independently computed
//! expectations.

use super::{Expect, Invariant, expected_totals};
use crate::fakes::stripe::RecordedMeterEvent;
use crate::harness::TestStack;
use crate::summary::Summary;
use crate::workload::Seeded;
use std::collections::{BTreeMap, BTreeSet};
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};
use tracemeter::domain::ledger::LedgerState;

/// The trace an identifier `tm_<trace>_r<revision>` names.
pub(super) fn trace_of(identifier: &str) -> Option<&str> {
    identifier
        .strip_prefix("tm_")?
        .rsplit_once("_r")
        .map(|(t, _)| t)
}

/// What Stripe recorded, as the invariants see it: credits per trace (by the identifier's
/// trace) and per customer, and every identifier recorded more than once (which Stripe's
/// dedup allows once its window has passed).
#[derive(Debug, Clone, Default)]
pub struct StripeSeen {
    /// Credits per trace (`?` for an identifier naming none).
    pub by_trace: BTreeMap<String, u64>,
    /// Credits per customer.
    pub by_customer: BTreeMap<String, u64>,
    /// Identifiers recorded again, once per repetition.
    pub repeated: Vec<String>,
}

impl StripeSeen {
    /// The figures of the recorded events.
    pub fn of(events: &[RecordedMeterEvent]) -> StripeSeen {
        let mut seen = StripeSeen::default();
        let mut identifiers = BTreeSet::new();
        for e in events {
            if !identifiers.insert(e.identifier.as_str()) {
                seen.repeated.push(e.identifier.clone());
            }
            *seen
                .by_trace
                .entry(trace_of(&e.identifier).unwrap_or("?").to_string())
                .or_default() += e.value;
            *seen.by_customer.entry(e.customer.clone()).or_default() += e.value;
        }
        seen
    }
}

/// The invariants, checked against the independently computed expectations.
pub fn check(
    stack: &TestStack,
    seeded: &Seeded,
    expectations: &BTreeMap<String, Expect>,
    settling: &BTreeSet<String>,
    summary: &Summary,
) -> Vec<Invariant> {
    let stripe = StripeSeen::of(&stack.stripe.events());
    check_against(expectations, &seeded.budgets, settling, summary, &stripe)
}

/// [`check`] on observed state only: a pure function, what the unit tests feed planted
/// violations to.
pub fn check_against(
    expectations: &BTreeMap<String, Expect>,
    budgets: &[(String, Option<BudgetPolicy>)],
    settling: &BTreeSet<String>,
    summary: &Summary,
    stripe: &StripeSeen,
) -> Vec<Invariant> {
    let f = Figures {
        expectations,
        budgets,
        settling,
        summary,
        stripe_by_trace: &stripe.by_trace,
        stripe_by_customer: &stripe.by_customer,
        repeated_identifiers: &stripe.repeated,
        entries: summary
            .entries
            .iter()
            .map(|e| (e.trace_id.as_str(), e))
            .collect(),
        hard: budgets
            .iter()
            .filter_map(|(c, p)| {
                p.as_ref()
                    .filter(|p| p.mode == BudgetMode::Hard)
                    .map(|p| (c.as_str(), p))
            })
            .collect(),
    };
    [
        totals,
        per_trace,
        no_double_billing,
        budgets_agree,
        hard_limits,
        nothing_in_flight,
    ]
    .map(|invariant| invariant(&f))
    .into()
}

/// What the invariants are checked on.
struct Figures<'a> {
    expectations: &'a BTreeMap<String, Expect>,
    budgets: &'a [(String, Option<BudgetPolicy>)],
    settling: &'a BTreeSet<String>,
    summary: &'a Summary,
    stripe_by_trace: &'a BTreeMap<String, u64>,
    stripe_by_customer: &'a BTreeMap<String, u64>,
    repeated_identifiers: &'a [String],
    /// The ledger entries by trace.
    entries: BTreeMap<&'a str, &'a tracemeter::domain::ledger::LedgerEntry>,
    /// The hard-limited customers' policies.
    hard: BTreeMap<&'a str, &'a BudgetPolicy>,
}

/// 1. Billed exactly once: Stripe's totals per customer are the expected ones.
fn totals(f: &Figures) -> Invariant {
    let Figures {
        expectations,
        budgets,
        stripe_by_customer,
        ..
    } = f;
    let expected = expected_totals(expectations, budgets);
    let mut diffs = Vec::new();
    let customers: BTreeSet<&String> = expected.keys().chain(stripe_by_customer.keys()).collect();
    for c in customers {
        let want = expected.get(c).copied().unwrap_or(0);
        let got = stripe_by_customer.get(c).copied().unwrap_or(0);
        if want != got {
            diffs.push(format!("{c}: Stripe {got}, expected {want}"));
        }
    }
    Invariant {
        name: "Stripe totals per customer = expected totals",
        holds: diffs.is_empty(),
        detail: if diffs.is_empty() {
            format!(
                "{} customers, {} credits",
                expected.len(),
                expected.values().sum::<u64>()
            )
        } else {
            diffs.join("; ")
        },
    }
}

/// 2. Per trace: the outcome the rules say, and Stripe got exactly the ledger's credits.
fn per_trace(f: &Figures) -> Invariant {
    let Figures {
        expectations,
        stripe_by_trace,
        entries,
        hard,
        ..
    } = f;
    let mut wrong = Vec::new();
    let (mut billed, mut failed) = (0, 0);
    for (id, want) in expectations.iter() {
        let entry = entries.get(id.as_str());
        let sent = stripe_by_trace.get(id).copied().unwrap_or(0);
        match (want, entry) {
            (
                Expect::Bill {
                    customer, credits, ..
                },
                Some(e),
            ) => {
                let ok = matches!(e.state, LedgerState::Metered | LedgerState::Capped)
                    && e.customer_id.as_deref() == Some(customer.as_str())
                    && e.total_credits == *credits
                    && e.billed_credits == sent
                    && (hard.contains_key(customer.as_str()) || e.capped_credits == 0);
                if ok {
                    billed += 1;
                } else {
                    wrong.push(format!(
                        "{id}: expected {credits} credits to {customer}, ledger {} {:?} total {} billed {} capped {}, Stripe {sent}",
                        e.state.as_str(),
                        e.customer_id,
                        e.total_credits,
                        e.billed_credits,
                        e.capped_credits
                    ));
                }
            }
            (Expect::Fail(reasons), Some(e)) => {
                let ok = e.state == LedgerState::Failed
                    && e.reason.as_deref().is_some_and(|r| reasons.contains(r))
                    && sent == 0;
                if ok {
                    failed += 1;
                } else {
                    wrong.push(format!(
                        "{id}: expected a failure ({reasons:?}), ledger {} {:?}, Stripe {sent}",
                        e.state.as_str(),
                        e.reason
                    ));
                }
            }
            (_, None) => wrong.push(format!("{id}: no ledger entry (lost), Stripe {sent}")),
        }
    }
    let shown: Vec<String> = wrong.iter().take(10).cloned().collect();
    Invariant {
        name: "every trace accounted for with its expected outcome",
        holds: wrong.is_empty(),
        detail: if wrong.is_empty() {
            format!("{billed} billed as expected, {failed} permanent failures with their reason")
        } else {
            format!("{} traces wrong: {}", wrong.len(), shown.join("; "))
        },
    }
}

/// 3. No identifier recorded twice, nothing billed for unknown or settling traces.
fn no_double_billing(f: &Figures) -> Invariant {
    let Figures {
        expectations,
        settling,
        stripe_by_trace,
        repeated_identifiers,
        entries,
        ..
    } = f;
    let strays: Vec<&String> = stripe_by_trace
        .keys()
        .filter(|t| !expectations.contains_key(*t))
        .collect();
    let early: Vec<&String> = settling
        .iter()
        .filter(|t| entries.contains_key(t.as_str()))
        .collect();
    Invariant {
        name: "no double billing, nothing billed early",
        holds: repeated_identifiers.is_empty() && strays.is_empty() && early.is_empty(),
        detail: format!(
            "{} identifiers recorded twice{}, {} events for traces not seeded, {} settling traces touched",
            repeated_identifiers.len(),
            named(repeated_identifiers.iter()),
            strays.len(),
            early.len()
        ),
    }
}

/// 4. Budget counters = ledger = Stripe, per customer.
fn budgets_agree(f: &Figures) -> Invariant {
    let Figures { summary, .. } = f;
    let mismatched: Vec<String> = summary
        .customers
        .iter()
        .filter(|(_, c)| c.ledger_credits != c.budget_used || c.ledger_credits != c.stripe_credits)
        .map(|(n, c)| {
            format!(
                "{n}: ledger {} budget {} Stripe {}",
                c.ledger_credits, c.budget_used, c.stripe_credits
            )
        })
        .collect();
    Invariant {
        name: "budget counters = ledger = Stripe",
        holds: mismatched.is_empty(),
        detail: if mismatched.is_empty() {
            format!("{} customers", summary.customers.len())
        } else {
            mismatched.join("; ")
        },
    }
}

/// 5. Hard limits never exceeded.
fn hard_limits(f: &Figures) -> Invariant {
    let Figures { summary, hard, .. } = f;
    let mut over = Vec::new();
    let mut checked = 0;
    for (customer, period, used, _) in &summary.periods {
        if let Some(limit) = hard.get(customer.as_str()).and_then(|p| p.limit) {
            checked += 1;
            if *used > limit {
                over.push(format!("{customer} {period}: {used} > {limit}"));
            }
        }
    }
    Invariant {
        name: "hard limits never exceeded",
        holds: over.is_empty(),
        detail: if over.is_empty() {
            format!("{checked} hard-limited periods within their limit")
        } else {
            over.join("; ")
        },
    }
}

/// 6. Nothing left in flight: no claim unresolved, no message queued or dead-lettered.
fn nothing_in_flight(f: &Figures) -> Invariant {
    let Figures { summary, .. } = f;
    let open = summary.states.get("claimed").copied().unwrap_or(0)
        + summary.states.get("ambiguous").copied().unwrap_or(0);
    Invariant {
        name: "no message lost or left in flight",
        holds: open == 0 && summary.queued == 0 && summary.dlq == 0,
        detail: format!(
            "{open} claims unresolved, {} messages queued, {} in the dead-letter queue",
            summary.queued, summary.dlq
        ),
    }
}

/// ` (a, b, …)`: the first few of `items`, or nothing when there are none.
pub(super) fn named<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let first: Vec<&str> = items.take(5).map(String::as_str).collect();
    if first.is_empty() {
        String::new()
    } else {
        format!(" ({})", first.join(", "))
    }
}
