//! The processing Lambda, end to end on the local stack: exactly-once metering, crashes,
//! retries, budgets, permanent failures, late cost, ambiguity.

mod budgets;
mod delivery;
mod failures;
mod prices;

use crate::common::{CrashOnce, Logs, body, entry, event, event_for, now, trace};
use chrono::{Duration, Timelike, Utc};
use std::collections::BTreeMap;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::meter::{MeterEvent, identifier};
use tracemeter::ports::{BudgetStore, ClaimStore, MeterSink};
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::faults::{NoFaults, Step};
use tracemeter_local::harness::{StackOptions, TestStack};

// Expected credits are computed by hand from the defaults (credit 0.00004 USD, compute
// 0.05 USD/min, margin 1), independently of the code under test:
// 0.01 USD + 2 s compute (0.0016667 USD) = 0.0116667 USD = 291.67 -> 292 credits.
const C_001_2S: u64 = 292;
// 0.004 USD, no latency = 100 credits exactly.
const C_0004: u64 = 100;

fn hard(limit: u64) -> BudgetPolicy {
    BudgetPolicy {
        limit: Some(limit),
        period: Period::Month,
        mode: BudgetMode::Hard,
        thresholds: vec![50, 80, 100],
    }
}

async fn budget_used(
    stack: &TestStack,
    customer: &str,
    at: chrono::DateTime<Utc>,
    period: Period,
) -> (u64, u64) {
    let usage = stack
        .ledger
        .budget_usage(customer, &period.key(at))
        .await
        .expect("budget read");
    (usage.used, usage.capped)
}

#[tokio::test]
async fn compute_credits_use_latency_in_seconds_and_byo_key_has_no_ai_cost() {
    let stack = TestStack::start("credits").await.expect("stack");
    let at = now() - Duration::hours(1);
    // 90 s at 0.05 USD/min = 0.075 USD = 1875 credits (not 1: latency is in seconds).
    stack
        .langfuse
        .add_trace(trace("t-90s", "cus_c", 0.0, 90, at));
    // BYO key: 1.5 USD of model cost is the customer's; 60 s compute = 0.05 USD = 1250.
    stack
        .langfuse
        .add_trace(trace("t-byo", "cus_c", 1.5, 60, at).meta("aiCredentialsOwnership", "user"));
    // Same without BYO: (1.5 + 0.05) / 0.00004 = 38750.
    stack
        .langfuse
        .add_trace(trace("t-own", "cus_c", 1.5, 60, at));
    stack
        .send_traces(&["t-90s", "t-byo", "t-own"])
        .await
        .expect("send");
    stack.drain(10).await.expect("drained");
    let by_id: BTreeMap<String, u64> = stack
        .stripe
        .events()
        .into_iter()
        .map(|e| (e.identifier, e.value))
        .collect();
    assert_eq!(by_id.get(&identifier("t-90s", 1)), Some(&1875));
    assert_eq!(by_id.get(&identifier("t-byo", 1)), Some(&1250));
    assert_eq!(by_id.get(&identifier("t-own", 1)), Some(&38_750));
}

#[tokio::test]
async fn late_cost_is_billed_once_as_a_new_revision() {
    let stack = TestStack::start("late").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-late", "cus_l", 0.004, 0, at));
    stack.send_traces(&["t-late"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    // A late observation adds 0.008 USD = 200 credits.
    stack.langfuse.add_observation(FakeObservation::generation(
        "t-late-gen-2",
        "t-late",
        at + Duration::seconds(1),
        at + Duration::seconds(1),
        "claude-3-5-haiku",
        800,
        200,
        0.008,
    ));
    stack
        .send_traces(&["t-late", "t-late", "t-late"])
        .await
        .expect("send");
    stack.drain(20).await.expect("drained");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let second = events
        .iter()
        .find(|e| e.identifier == identifier("t-late", 2))
        .expect("revision 2");
    // Total is (0.004 + 0.008) USD over 1 s of latency: 0.012 + 0.000833 = 0.012833 -> 321.
    assert_eq!(second.value, 321 - C_0004);
    let e = entry(&stack, "t-late").await;
    assert_eq!(
        (e.revision, e.total_credits, e.billed_credits),
        (2, 321, 321)
    );
    assert_eq!(budget_used(&stack, "cus_l", at, Period::Month).await.0, 321);
}

#[tokio::test]
async fn the_harness_points_every_aws_call_at_loopback() {
    let stack = TestStack::start("loopback").await.expect("stack");
    let env = &stack.env;
    assert_eq!(
        env.get("AWS_EC2_METADATA_DISABLED").map(String::as_str),
        Some("true")
    );
    assert!(env.contains_key("AWS_ACCESS_KEY_ID") && env.contains_key("AWS_SECRET_ACCESS_KEY"));
    assert!(env.contains_key("AWS_REGION"));
    for var in [
        "AWS_ENDPOINT_URL",
        "LANGFUSE_BASE_URL",
        "STRIPE_API_BASE",
        "STRIPE_METER_EVENTS_BASE",
        "QUEUE_URL",
    ] {
        let url = reqwest::Url::parse(&env[var]).expect(var);
        assert!(
            tracemeter::config::is_loopback_host(url.host_str().unwrap_or_default()),
            "{var}={} is not loopback",
            env[var]
        );
    }
}
