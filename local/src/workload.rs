//! A realistic sample workload for the local runs: several customers on different budgets,
//! real model names, token counts and costs, BYO-key traces, users mapped through the table,
//! an unmapped user, usage older than Stripe accepts, and traces still settling. The budget
//! limits are sized for a number of traces: `make run` sizes them for its sample, so that a
//! small sample reaches its hard limit and crosses its soft thresholds as a large one does;
//! the benchmark and the reliability suite keep them sized for [`REFERENCE_TRACES`] whatever
//! their sample, so that their figures stay comparable across runs.

use crate::fakes::langfuse::{FakeObservation, FakeTrace};
use crate::harness::TestStack;
use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};

/// (model, USD per 1M input tokens, USD per 1M output tokens)
const MODELS: [(&str, f64, f64); 5] = [
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("claude-3-5-sonnet-20241022", 3.0, 15.0),
    ("claude-3-5-haiku-20241022", 0.8, 4.0),
    ("llama-3.1-70b-instruct", 0.59, 0.79),
];

/// The users mapped to a customer in the table (the rest of the sample's users are not).
pub const USER_MAPPINGS: [(&str, &str); 2] =
    [("u-hooli-1", "cus_hooli"), ("u-hooli-2", "cus_hooli")];

/// The sample size the benchmark's and the reliability suite's budgets are sized for.
pub const REFERENCE_TRACES: usize = 2_000;

/// The customer without a budget whose traces [`Seeded::unlimited`] lists.
pub const UNLIMITED_CUSTOMER: &str = "cus_initech";

/// A generated sample, not yet seeded anywhere.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The traces, as the Langfuse fake will serve them.
    pub traces: Vec<FakeTrace>,
    /// What seeding them means for a run.
    pub seeded: Seeded,
}

/// What was seeded.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// Trace ids old enough to bill (what ingest would enqueue).
    pub settled: Vec<String>,
    /// Traces newer than the settle time: not enqueued yet.
    pub settling: usize,
    /// The customers and their budgets, for the summary.
    pub budgets: Vec<(String, Option<BudgetPolicy>)>,
    /// Settled, billable traces of [`UNLIMITED_CUSTOMER`] from the last 6 hours (a late cost
    /// can be added to them without a budget deciding what is billed).
    pub unlimited: Vec<String>,
    /// The price book's versions the run seeded, described (empty when it seeded none).
    pub prices: Vec<String>,
}

/// A tiny deterministic generator (no dependency, same workload every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The customers and their budgets for a sample of `n` traces: a hard monthly limit of 60
/// credits per trace of the sample (about a third of what the customer's traces cost), a
/// soft monthly one of 75 (crossed, alerting at 50, 80 and 100 %), a daily hard limit never
/// reached, and two customers without a budget.
pub fn budgets(n: usize) -> Vec<(String, Option<BudgetPolicy>)> {
    let n = n.max(1) as u64;
    let policy = |limit: u64, period, mode, thresholds: &[u32]| {
        Some(BudgetPolicy {
            limit: Some(limit),
            period,
            mode,
            thresholds: thresholds.to_vec(),
        })
    };
    vec![
        (
            "cus_acme".into(),
            policy(60 * n, Period::Month, BudgetMode::Hard, &[50, 80, 100]),
        ),
        (
            "cus_globex".into(),
            policy(75 * n, Period::Month, BudgetMode::Soft, &[50, 80, 100]),
        ),
        (UNLIMITED_CUSTOMER.into(), None),
        (
            "cus_umbrella".into(),
            policy(1_000 * n, Period::Day, BudgetMode::Hard, &[80, 100]),
        ),
        ("cus_hooli".into(), None),
    ]
}

/// Generates `n` traces with `seed`, timed relative to `now`, and budgets sized for
/// `budgets_for` traces.
pub fn generate(n: usize, seed: u64, now: DateTime<Utc>, budgets_for: usize) -> Sample {
    let mut rng = Lcg(seed);
    let mut sample = Sample {
        seeded: Seeded {
            budgets: budgets(budgets_for),
            ..Seeded::default()
        },
        ..Sample::default()
    };
    for i in 0..n {
        let id = format!("tr-{i:06}");
        let (at, age) = usage_time(&mut rng, now);
        let (trace, unlimited) = with_customer(&mut rng, FakeTrace::new(&id, at));
        let trace = with_generations(&mut rng, trace.name("chat-completion"), &id, at);
        sample.traces.push(trace);
        match age {
            Age::Settling => sample.seeded.settling += 1,
            Age::Recent if unlimited => {
                sample.seeded.unlimited.push(id.clone());
                sample.seeded.settled.push(id);
            }
            _ => sample.seeded.settled.push(id),
        }
    }
    sample
}

/// How old a trace's usage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    /// Within the last 6 hours, settled.
    Recent,
    /// Younger than the settle time (3 %).
    Settling,
    /// Older than Stripe's 35 days (2 %).
    TooOld,
}

fn usage_time(rng: &mut Lcg, now: DateTime<Utc>) -> (DateTime<Utc>, Age) {
    let kind = rng.below(100);
    let recent = now - Duration::seconds(1_200 + rng.below(6 * 3600) as i64);
    if kind < 3 {
        (
            now - Duration::seconds(rng.below(300) as i64),
            Age::Settling,
        )
    } else if kind < 5 {
        let old = now - Duration::days(40) - Duration::seconds(rng.below(3600) as i64);
        (old, Age::TooOld)
    } else {
        (recent, Age::Recent)
    }
}

/// Names the trace's customer one of the ways tracemeter finds it; true for
/// [`UNLIMITED_CUSTOMER`].
fn with_customer(rng: &mut Lcg, trace: FakeTrace) -> (FakeTrace, bool) {
    match rng.below(20) {
        0..=5 => (trace.meta("stripeCustomerId", "cus_acme"), false),
        6..=10 => (trace.meta("stripeCustomerId", "cus_globex"), false),
        11..=14 => (trace.meta("customerId", UNLIMITED_CUSTOMER), true),
        15..=16 => (
            trace
                .meta("stripeCustomerId", "cus_umbrella")
                .meta("aiCredentialsOwnership", "user"),
            false,
        ),
        17..=18 => {
            let user = if rng.below(2) == 0 {
                "u-hooli-1"
            } else {
                "u-hooli-2"
            };
            (trace.user(user), false)
        }
        _ => (trace.user("u-unknown"), false),
    }
}

/// One to three model calls, one after the other from `at`.
fn with_generations(rng: &mut Lcg, mut trace: FakeTrace, id: &str, at: DateTime<Utc>) -> FakeTrace {
    let calls = 1 + rng.below(3);
    let mut start = at;
    for c in 0..calls {
        let (model, pin, pout) = MODELS[rng.below(MODELS.len() as u64) as usize];
        let input = 200 + rng.below(4_000) as i64;
        let output = 50 + rng.below(1_200) as i64;
        let cost = (input as f64 * pin + output as f64 * pout) / 1_000_000.0;
        // Round to 8 decimals as Langfuse's cost figures are.
        let cost = (cost * 1e8).round() / 1e8;
        let duration = Duration::milliseconds(300 + rng.below(9_000) as i64);
        trace = trace.observation(FakeObservation::generation(
            format!("{id}-g{c}"),
            id,
            start,
            start + duration,
            model,
            input,
            output,
            cost,
        ));
        start = start + duration + Duration::milliseconds(20);
    }
    trace
}

/// Seeds `n` traces into the Langfuse fake and the budgets (sized for
/// [`REFERENCE_TRACES`]) and mappings into the table.
pub async fn seed(stack: &TestStack, n: usize, seed: u64) -> Result<Seeded> {
    seed_with(stack, n, seed, REFERENCE_TRACES).await
}

/// [`seed`] with budgets sized for `budgets_for` traces.
pub async fn seed_with(
    stack: &TestStack,
    n: usize,
    seed: u64,
    budgets_for: usize,
) -> Result<Seeded> {
    let sample = generate(n, seed, Utc::now(), budgets_for);
    for (customer, policy) in &sample.seeded.budgets {
        if let Some(p) = policy {
            stack.ledger.put_budget_policy(customer, p).await?;
        }
    }
    for (user, customer) in USER_MAPPINGS {
        stack.ledger.put_user_mapping(user, customer).await?;
    }
    for trace in sample.traces {
        stack.langfuse.add_trace(trace);
    }
    Ok(sample.seeded)
}

/// Adds a late model call (0.004 USD, a second after the trace's last call ended) to each
/// of `traces`, as Langfuse does when cost arrives after a trace was billed.
pub fn add_late_cost(stack: &TestStack, traces: &[String]) {
    let all = stack.langfuse.traces();
    for trace in all.iter().filter(|t| traces.contains(&t.id)) {
        let last = trace
            .observations
            .iter()
            .map(|o| o.end_time.unwrap_or(o.start_time))
            .max()
            .unwrap_or(trace.timestamp);
        let at = last + Duration::seconds(1);
        stack.langfuse.add_observation(FakeObservation::generation(
            format!("{}-late", trace.id),
            &trace.id,
            at,
            at,
            "gpt-4o-mini",
            1_000,
            250,
            0.004,
        ));
    }
}

/// Messages another producer sends to the queue: a trace Langfuse does not know, and a body
/// that is not a meter message.
pub fn foreign_messages() -> Vec<String> {
    vec![
        tracemeter::domain::message::MeterMessage::new("tr-not-in-langfuse").to_body(),
        "{\"note\": \"not a meter message\"}".to_string(),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_grow_with_the_sample() {
        let limit = |n, customer: &str| {
            budgets(n)
                .into_iter()
                .find(|(c, _)| c == customer)
                .and_then(|(_, p)| p)
                .and_then(|p| p.limit)
        };
        assert_eq!(limit(2_000, "cus_acme"), Some(120_000));
        assert_eq!(limit(2_000, "cus_globex"), Some(150_000));
        assert_eq!(limit(200, "cus_acme"), Some(12_000));
        assert_eq!(limit(200, "cus_initech"), None);
    }

    /// What `make run`'s default sample must show, computed with the reliability suite's
    /// independent rules: a hard limit reached, a soft limit crossed, BYO-key and mapped-user
    /// billing, the permanent failures, settling traces, and traces for the late-cost round.
    #[test]
    fn the_default_sample_shows_every_case() {
        use crate::chaos::{Expect, expect};
        use crate::runner::{DEFAULT_TRACES, SAMPLE_SEED};
        let now = Utc::now();
        let sample = generate(DEFAULT_TRACES, SAMPLE_SEED, now, DEFAULT_TRACES);
        let mappings = USER_MAPPINGS.into_iter().collect();
        let mut billed: std::collections::BTreeMap<String, u64> = Default::default();
        let mut failures = std::collections::BTreeSet::new();
        let mut byo = 0;
        for t in sample
            .traces
            .iter()
            .filter(|t| sample.seeded.settled.contains(&t.id))
        {
            match expect(t, &mappings, now) {
                Expect::Bill {
                    customer, credits, ..
                } => {
                    *billed.entry(customer).or_default() += credits;
                    byo += usize::from(t.metadata["aiCredentialsOwnership"] == "user");
                }
                Expect::Fail(reasons) => failures.extend(reasons),
            }
        }
        let limit = |customer: &str| {
            let policies = &sample.seeded.budgets;
            let policy = policies.iter().find(|(c, _)| c == customer);
            policy.and_then(|(_, p)| p.as_ref()?.limit).unwrap()
        };
        assert!(billed["cus_acme"] > limit("cus_acme"), "hard limit reached");
        assert!(
            billed["cus_globex"] > limit("cus_globex"),
            "soft limit crossed"
        );
        assert!(
            billed.contains_key("cus_hooli"),
            "users mapped through the table"
        );
        assert!(byo > 0, "BYO-key traces");
        assert!(failures.contains("unmapped_customer") && failures.contains("usage_too_old"));
        assert!(sample.seeded.settling > 0);
        assert!(
            sample.seeded.unlimited.len() >= 3,
            "traces for the late-cost round"
        );
    }

    #[test]
    fn the_sample_is_deterministic() {
        let now = Utc::now();
        let a = generate(50, 7, now, 50);
        let b = generate(50, 7, now, 50);
        assert_eq!(a.seeded.settled, b.seeded.settled);
        assert_eq!(a.traces.len(), 50);
        assert_eq!(
            a.seeded.settled.len() + a.seeded.settling,
            50,
            "every trace settled or settling"
        );
    }
}
