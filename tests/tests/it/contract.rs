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
