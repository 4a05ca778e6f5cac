//! The price book on the DynamoDB ledger (moto): prices by the usage's time and customer, a
//! late cost at the recorded version, unpriced usage held then replayed.

use crate::common::{entry, now, trace};
use chrono::{DateTime, Duration, Utc};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::price_book::{PriceScope, PriceVersion, TokenPrice, UnpricedRule};
use tracemeter::ports::{PriceBook, PutVersion};
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::harness::TestStack;

fn version(scope: PriceScope, from: DateTime<Utc>) -> PriceVersion {
    PriceVersion {
        scope,
        effective_from: from,
        ..PriceVersion::from_variables(&Default::default())
    }
}

async fn set(stack: &TestStack, v: &PriceVersion) {
    let put = stack.ledger.put_version(v, now()).await.expect("put");
    assert_eq!(put, PutVersion::Written);
}

async fn billed(stack: &TestStack, trace_id: &str) -> (LedgerState, u64, Option<String>) {
    let e = entry(stack, trace_id).await;
    (e.state, e.billed_credits, e.price_version)
}

#[tokio::test]
async fn prices_follow_the_usage_time_and_the_customer_and_late_cost_keeps_its_version() {
    let stack = TestStack::start("prices").await.expect("stack");
    let change = now() - Duration::hours(2);
    // The default margin doubles 2 hours ago; cus_disc has 20 % off since yesterday.
    let mut doubled = version(PriceScope::Default, change);
    doubled.margin = "2".parse().expect("dec");
    set(&stack, &doubled).await;
    let mut plan = version(
        PriceScope::Customer("cus_disc".into()),
        change - Duration::days(1),
    );
    plan.margin = "0.8".parse().expect("dec");
    set(&stack, &plan).await;
    let before = change - Duration::hours(1);
    let after = change + Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("p-before", "cus_p", 0.004, 0, before));
    stack
        .langfuse
        .add_trace(trace("p-after", "cus_p", 0.004, 0, after));
    stack
        .langfuse
        .add_trace(trace("p-disc", "cus_disc", 0.004, 0, after));
    stack
        .send_traces(&["p-before", "p-after", "p-disc"])
        .await
        .expect("send");
    stack.drain(10).await.expect("drained");
    let epoch = "default@1970-01-01T00:00:00.000Z".to_string();
    assert_eq!(
        billed(&stack, "p-before").await,
        (LedgerState::Metered, 100, Some(epoch.clone()))
    );
    assert_eq!(
        billed(&stack, "p-after").await,
        (LedgerState::Metered, 200, Some(doubled.id()))
    );
    assert_eq!(
        billed(&stack, "p-disc").await,
        (LedgerState::Metered, 80, Some(plan.id()))
    );

    // A late 0.004 USD on the trace from before the change: exactly 100 more, at its price.
    stack.langfuse.add_observation(FakeObservation::generation(
        "p-before-late",
        "p-before",
        before,
        before,
        "gpt-4o-mini",
        10,
        10,
        0.004,
    ));
    stack.send_traces(&["p-before"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    let e = entry(&stack, "p-before").await;
    assert_eq!((e.revision, e.billed_credits), (2, 200));
    assert_eq!(e.price_version, Some(epoch));
}

#[tokio::test]
async fn unpriced_usage_is_held_then_billed_after_a_token_price_is_added() {
    let stack = TestStack::start("unpriced").await.expect("stack");
    let at = now() - Duration::hours(1);
    let mut hold = version(PriceScope::Customer("cus_h".into()), at - Duration::days(2));
    hold.unpriced = UnpricedRule::Hold;
    set(&stack, &hold).await;
    // A self-hosted model: 1M input and 100k output tokens, no cost, 60 s.
    let obs = FakeObservation::generation(
        "u-gen",
        "u1",
        at,
        at + Duration::seconds(60),
        "my-llama",
        1_000_000,
        100_000,
        0.0,
    )
    .with_total_cost(None);
    stack.langfuse.add_trace(
        FakeTrace::new("u1", at)
            .meta("stripeCustomerId", "cus_h")
            .observation(obs),
    );
    stack.send_traces(&["u1"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    let e = entry(&stack, "u1").await;
    assert_eq!(
        (e.state, e.reason.as_deref()),
        (LedgerState::Failed, Some("unpriced_model"))
    );
    assert!(
        e.detail.as_deref().is_some_and(|d| d.contains("my-llama")),
        "{e:?}"
    );

    let mut priced = hold.clone();
    priced.effective_from = at - Duration::days(1);
    priced.token_prices = vec![TokenPrice {
        pattern: "my-llama".into(),
        input_per_million: "1".parse().expect("dec"),
        output_per_million: "2".parse().expect("dec"),
    }];
    set(&stack, &priced).await;
    // A backdated version reaches the processor within the cache's TTL: skip the wait.
    stack.prices.clear();
    stack.send_traces(&["u1"]).await.expect("replay");
    stack.drain(10).await.expect("drained");
    // (1 + 0.2 + 0.05) / 0.00004 = 31250 credits.
    assert_eq!(
        billed(&stack, "u1").await,
        (LedgerState::Metered, 31_250, Some(priced.id()))
    );
}
