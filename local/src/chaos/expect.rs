//! The expected outcome of every trace, from the stored trace and the documented rules only
//! (never from the code under test).

use crate::fakes::langfuse::{FakeObservation, FakeTrace};
use crate::harness::TestStack;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};

// ---------------------------------------------------------------------------------------
// The expected outcome of every trace, from the stored trace and the documented rules only.
// ---------------------------------------------------------------------------------------

/// What a seeded trace must end as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Billed to `customer`: `credits` in total (billed + capped), usage at `at`.
    Bill {
        /// The Stripe customer.
        customer: String,
        /// Whole credits.
        credits: u64,
        /// The usage time (its first observation).
        at: DateTime<Utc>,
    },
    /// A permanent failure with one of these reasons (a trace can have several defects).
    Fail(BTreeSet<&'static str>),
}

/// The defaults docs/configuration.md documents: 1 credit = 0.00004 USD, margin 1, compute
/// 0.05 USD per minute of latency, a trace above 1,000 USD is invalid, Stripe takes usage up
/// to 35 days old, customers from `stripeCustomerId` then `customerId` then the user
/// mapping, `aiCredentialsOwnership=user` means the customer's own model key.
const MAX_TRACE_USD_UNITS: i128 = 1_000 * 100_000_000;

fn served(o: &FakeObservation, key: &str) -> Option<Option<Value>> {
    o.raw
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// An observation's cost in units of 1e-8 USD as served, or None when it is not a valid
/// number (negative or not finite).
fn cost_units(o: &FakeObservation) -> Option<i128> {
    let total = match served(o, "totalCost") {
        Some(v) => v.and_then(|v| v.as_f64()),
        None => o.total_cost,
    };
    let details: BTreeMap<String, f64> = match served(o, "costDetails") {
        Some(v) => v
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        None => o.cost_details.clone(),
    };
    let usd = total
        .or_else(|| details.get("total").copied())
        .unwrap_or_else(|| details.values().sum());
    if !usd.is_finite() || usd < 0.0 {
        return None;
    }
    Some((usd * 1e8).round() as i128)
}

/// The expected outcome of `trace`, given the user mappings, at `now`.
pub fn expect(trace: &FakeTrace, mappings: &BTreeMap<&str, &str>, now: DateTime<Utc>) -> Expect {
    expect_priced(trace, mappings, now, None)
}

/// [`expect`] under a price book whose default margin doubles for usage from `doubled_from`
/// (the suite's price change, see [`crate::prices::doubled_margin`]).
pub fn expect_priced(
    trace: &FakeTrace,
    mappings: &BTreeMap<&str, &str>,
    now: DateTime<Utc>,
    doubled_from: Option<DateTime<Utc>>,
) -> Expect {
    let mut defects = BTreeSet::new();
    let obs = &trace.observations;
    if obs
        .iter()
        .any(|o| served(o, "startTime") == Some(None) || served(o, "id") == Some(None))
    {
        defects.insert("invalid_usage");
    }
    let meta = |key: &str| {
        obs.iter()
            .filter_map(|o| o.metadata.get(key))
            .chain(trace.metadata.get(key))
            .find_map(Value::as_str)
            .map(str::to_owned)
    };
    let mut ai_units: i128 = 0;
    for o in obs {
        match cost_units(o) {
            Some(units) => ai_units += units,
            None => {
                defects.insert("invalid_usage");
            }
        }
    }
    if meta("aiCredentialsOwnership").as_deref() == Some("user") {
        ai_units = 0;
    }
    let at = obs
        .iter()
        .map(|o| o.start_time)
        .min()
        .unwrap_or(trace.timestamp);
    let end = obs
        .iter()
        .map(|o| o.end_time.unwrap_or(o.start_time))
        .max()
        .unwrap_or(at);
    let ms = i128::from((end - at).num_milliseconds().max(0));
    // USD = ai_units / 1e8 + ms / 1,200,000; credits = USD / 0.00004 rounded up
    //     = (ai_units * 48 + ms * 4000) / 192,000 rounded up.
    // In 1e-8 USD: ai_units + ms * 250 / 3 above the maximum (times 3, to stay exact).
    if 3 * ai_units + 250 * ms > 3 * MAX_TRACE_USD_UNITS {
        defects.insert("invalid_usage");
    }
    let numerator = (ai_units * 48 + ms * 4_000) * margin(at, doubled_from);
    let credits = u64::try_from((numerator + 191_999) / 192_000).unwrap_or(u64::MAX);
    let customer = meta("stripeCustomerId")
        .or_else(|| meta("customerId"))
        .or_else(|| {
            trace
                .user_id
                .as_deref()
                .and_then(|u| mappings.get(u))
                .map(|c| c.to_string())
        });
    if customer.is_none() {
        defects.insert("unmapped_customer");
    }
    if at < now - ChronoDuration::days(35) {
        defects.insert("usage_too_old");
    }
    match customer {
        Some(customer) if defects.is_empty() => Expect::Bill {
            customer,
            credits,
            at,
        },
        _ => Expect::Fail(defects),
    }
}

/// The margin of usage at `at`: 2 from the price change, 1 before it (and without one).
fn margin(at: DateTime<Utc>, doubled_from: Option<DateTime<Utc>>) -> i128 {
    match doubled_from {
        Some(from) if at >= from => 2,
        _ => 1,
    }
}

/// Expected credits per customer: the sum of their traces, and for a hard limit, per period,
/// at most the limit (the excess is capped).
pub fn expected_totals(
    expectations: &BTreeMap<String, Expect>,
    budgets: &[(String, Option<BudgetPolicy>)],
) -> BTreeMap<String, u64> {
    let policies: BTreeMap<&str, &BudgetPolicy> = budgets
        .iter()
        .filter_map(|(c, p)| p.as_ref().map(|p| (c.as_str(), p)))
        .collect();
    let mut per_period: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in expectations.values() {
        if let Expect::Bill {
            customer,
            credits,
            at,
        } = e
        {
            let period = match policies.get(customer.as_str()) {
                Some(p) => match p.period {
                    tracemeter::domain::budget::Period::Day => at.format("%Y-%m-%d").to_string(),
                    tracemeter::domain::budget::Period::Week => at.format("%G-W%V").to_string(),
                    tracemeter::domain::budget::Period::Month => at.format("%Y-%m").to_string(),
                },
                None => String::new(),
            };
            *per_period.entry((customer.clone(), period)).or_default() += credits;
        }
    }
    let mut totals = BTreeMap::new();
    for ((customer, _), sum) in per_period {
        let billed = match policies.get(customer.as_str()) {
            Some(p) if p.mode == BudgetMode::Hard => sum.min(p.limit.unwrap_or(u64::MAX)),
            _ => sum,
        };
        *totals.entry(customer).or_default() += billed;
    }
    totals
}

/// Traces with data Langfuse should never send, one kind after another: a negative cost,
/// an absurd cost, absurd (and negative) token counts, `null` costs, a missing `startTime`.
pub fn seed_bad_data(stack: &TestStack, n: usize) -> usize {
    let base = Utc::now() - ChronoDuration::hours(2);
    for i in 0..n {
        let id = format!("bad-{i:05}");
        let at = base + ChronoDuration::seconds(i as i64);
        let generation = |cost: f64| {
            FakeObservation::generation(
                format!("{id}-g"),
                &id,
                at,
                at + ChronoDuration::milliseconds(1_500),
                "gpt-4o",
                1_000,
                200,
                cost,
            )
        };
        let observation = match i % 5 {
            0 => generation(-0.25),
            1 => generation(5_000.0),
            2 => generation(0.0042)
                .usage("input", 9_000_000_000_000_000)
                .usage("output", -40),
            // Null costs, under both generations' names (legacy: `calculatedTotalCost`).
            3 => generation(0.0042)
                .raw_field("totalCost", Some(Value::Null))
                .raw_field("costDetails", Some(Value::Null))
                .raw_field("calculatedTotalCost", Some(Value::Null))
                .raw_field("calculatedInputCost", Some(Value::Null))
                .raw_field("calculatedOutputCost", Some(Value::Null)),
            _ => generation(0.0042).raw_field("startTime", None),
        };
        stack.langfuse.add_trace(
            FakeTrace::new(&id, at)
                .name("bad-data")
                .meta("customerId", "cus_initech")
                .observation(observation),
        );
    }
    n
}
