//! A realistic sample workload for the local run: several customers on different budgets,
//! real model names, token counts and costs, BYO-key traces, a user mapped through the
//! table, an unmapped customer, usage older than Stripe accepts, and traces still settling.

use crate::fakes::langfuse::{FakeObservation, FakeTrace};
use crate::harness::TestStack;
use anyhow::Result;
use chrono::{Duration, Utc};
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

/// What was seeded.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// Trace ids old enough to bill (what ingest would enqueue).
    pub settled: Vec<String>,
    /// Traces newer than the settle time: not enqueued yet.
    pub settling: usize,
    /// The customers and their budgets, for the summary.
    pub budgets: Vec<(String, Option<BudgetPolicy>)>,
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

/// Seeds `n` traces into the Langfuse fake and the budgets and mappings into the table.
pub async fn seed(stack: &TestStack, n: usize, seed: u64) -> Result<Seeded> {
    let budgets = vec![
        (
            "cus_acme".to_string(),
            Some(BudgetPolicy {
                limit: Some(120_000),
                period: Period::Month,
                mode: BudgetMode::Hard,
                thresholds: vec![50, 80, 100],
            }),
        ),
        (
            "cus_globex".to_string(),
            Some(BudgetPolicy {
                limit: Some(150_000),
                period: Period::Month,
                mode: BudgetMode::Soft,
                thresholds: vec![50, 80, 100],
            }),
        ),
        ("cus_initech".to_string(), None),
        (
            "cus_umbrella".to_string(),
            Some(BudgetPolicy {
                limit: Some(2_000_000),
                period: Period::Day,
                mode: BudgetMode::Hard,
                thresholds: vec![80, 100],
            }),
        ),
        ("cus_hooli".to_string(), None),
    ];
    for (customer, policy) in &budgets {
        if let Some(p) = policy {
            stack.ledger.put_budget_policy(customer, p).await?;
        }
    }
    for (user, customer) in USER_MAPPINGS {
        stack.ledger.put_user_mapping(user, customer).await?;
    }

    let mut rng = Lcg(seed);
    let now = Utc::now();
    let mut out = Seeded {
        budgets,
        ..Seeded::default()
    };
    for i in 0..n {
        let id = format!("tr-{i:06}");
        let kind = rng.below(100);
        // Spread over the last 6 hours; 3 % still settling, 2 % older than 35 days.
        let mut at = now - Duration::seconds(1_200 + rng.below(6 * 3600) as i64);
        let mut settling = false;
        if kind < 3 {
            at = now - Duration::seconds(rng.below(300) as i64);
            settling = true;
        } else if kind < 5 {
            at = now - Duration::days(40) - Duration::seconds(rng.below(3600) as i64);
        }
        let mut trace = FakeTrace::new(&id, at).name("chat-completion");
        trace = match rng.below(20) {
            0..=5 => trace.meta("stripeCustomerId", "cus_acme"),
            6..=10 => trace.meta("stripeCustomerId", "cus_globex"),
            11..=14 => trace.meta("customerId", "cus_initech"),
            15..=16 => trace
                .meta("stripeCustomerId", "cus_umbrella")
                .meta("aiCredentialsOwnership", "user"),
            17..=18 => trace.user(if rng.below(2) == 0 {
                "u-hooli-1"
            } else {
                "u-hooli-2"
            }),
            _ => trace.user("u-unknown"),
        };
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
                &id,
                start,
                start + duration,
                model,
                input,
                output,
                cost,
            ));
            start = start + duration + Duration::milliseconds(20);
        }
        stack.langfuse.add_trace(trace);
        if settling {
            out.settling += 1;
        } else {
            out.settled.push(id);
        }
    }
    Ok(out)
}

/// Runs `pollers` concurrent event-source pollers until the queue is empty (visible and in
/// flight) or 10 minutes pass. Returns the number of batches invoked.
pub async fn drain_concurrently(
    stack: &TestStack,
    pollers: usize,
    expected: usize,
) -> Result<usize> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let batches = std::sync::atomic::AtomicUsize::new(0);
    let poller = || async {
        loop {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the queue was not drained within 10 minutes");
            }
            match stack.poll_with(&crate::faults::NoFaults, 1).await? {
                Some(report) => {
                    let b = batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    let d = done.fetch_add(report.deleted, std::sync::atomic::Ordering::Relaxed)
                        + report.deleted;
                    if b.is_multiple_of(25) {
                        eprint!("\r      {d}/{expected} messages done, {b} batches");
                    }
                }
                None => {
                    let (visible, in_flight) = stack.esm.depth(&stack.resources.queue_url).await?;
                    if visible == 0 && in_flight == 0 {
                        return Ok(());
                    }
                }
            }
        }
    };
    let results = futures::future::join_all((0..pollers).map(|_| poller())).await;
    eprintln!();
    for r in results {
        r?;
    }
    Ok(batches.load(std::sync::atomic::Ordering::Relaxed))
}
