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
        let (a, b) = (budget(&stack, "c"), budget(&stack, "c"));
        quota::concurrent_takers_share_one_budget(&[a.as_ref(), b.as_ref()]).await;
    }
}
