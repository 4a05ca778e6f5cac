//! The ledger contract (`tracemeter::testing::contract`) on the DynamoDB ledger against
//! moto: the same checks the in-memory ledger passes in `cargo test -p tracemeter --features
//! testing`, one test per check, each on its own table.

use std::ops::Deref;
use tracemeter::adapters::dynamo::DynamoLedger;
use tracemeter_local::harness::TestStack;

/// A moto-backed stack, seen as its ledger.
struct Stack(TestStack);

impl Deref for Stack {
    type Target = DynamoLedger;

    fn deref(&self) -> &DynamoLedger {
        &self.0.ledger
    }
}

tracemeter::ledger_contract_tests!(|name: &'static str| async move {
    Stack(TestStack::start(name).await.expect("moto-backed stack"))
});

/// The shared request budget's contract on the DynamoDB counters, against moto.
mod quota {
    use tracemeter::adapters::dynamo::DynamoQuota;
    use tracemeter::domain::quota::RequestLimit;
    use tracemeter::ports::RequestQuota;
    use tracemeter::testing::contract::quota::{self, CONTRACT_LIMIT};
    use tracemeter_local::harness::TestStack;

    /// A budget of its own for each check (`service` names its counters).
    fn budget(stack: &TestStack, service: &str) -> std::sync::Arc<dyn RequestQuota> {
        DynamoQuota::for_limit(
            stack.dynamo.clone(),
            &stack.resources.table_name,
            service,
            RequestLimit::PerMinute(CONTRACT_LIMIT),
        )
    }

    #[tokio::test]
    async fn the_dynamo_quota_keeps_the_contract() {
        let stack = TestStack::start("quota-contract").await.expect("stack");
        quota::the_budget_is_never_exceeded(budget(&stack, "a").as_ref()).await;
        quota::earlier_slots_count(budget(&stack, "b").as_ref()).await;
        quota::several_are_taken_at_once(budget(&stack, "d").as_ref()).await;
        let (a, b) = (budget(&stack, "c"), budget(&stack, "c"));
        quota::concurrent_takers_share_one_budget(&[a.as_ref(), b.as_ref()]).await;
        let (a, b, c) = (
            budget(&stack, "e"),
            budget(&stack, "e"),
            budget(&stack, "e"),
        );
        let instances = [a.as_ref(), b.as_ref(), c.as_ref()];
        quota::concurrent_bookings_share_one_schedule(&instances).await;
    }

    /// The budget's property on `DynamoQuota` itself (the memory adapter runs it with many
    /// more cases in `tracemeter::testing::quota`): arbitrary arrival times over 2.5 minutes,
    /// 8 cases of up to 120 requests (two calls to moto each), each on counters of its own.
    #[test]
    fn the_dynamo_quota_never_grants_more_than_the_limit_in_any_minute() {
        use proptest::test_runner::{Config, TestCaseError, TestRunner};
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let stack = runtime
            .block_on(TestStack::start("quota-property"))
            .expect("stack");
        let config = Config {
            cases: 8,
            max_shrink_iters: 32,
            ..Config::default()
        };
        let cases = std::sync::atomic::AtomicUsize::new(0);
        let strategy = (1u32..8, proptest::collection::vec(0i64..150_000, 0..120));
        TestRunner::new(config)
            .run(&strategy, |(limit, mut times)| {
                times.sort_unstable();
                let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let q = DynamoQuota::for_limit(
                    stack.dynamo.clone(),
                    &stack.resources.table_name,
                    &format!("property-{case}"),
                    RequestLimit::PerMinute(limit),
                );
                let granted = runtime.block_on(quota::granted_at(q.as_ref(), &times));
                quota::no_minute_holds_more_than(limit, &granted).map_err(TestCaseError::fail)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        // Steady demand, one request a second for 130 s: most of the budget is used.
        let q = budget(&stack, "steady");
        let times: Vec<i64> = (0..130_000).step_by(1_000).collect();
        let granted = runtime.block_on(quota::granted_at(q.as_ref(), &times));
        let steady =
            quota::steady_demand_gets_most_of_the_budget(CONTRACT_LIMIT, 130_000, granted.len());
        assert_eq!(steady, Ok(()));
    }
}
