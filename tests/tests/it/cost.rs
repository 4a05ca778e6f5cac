//! DynamoDB write capacity per metered trace, counted from the handler's real write requests
//! (an SDK interceptor) and the written items' real sizes, with DynamoDB's pricing rules.

use crate::common::{entry, event_for, now, trace};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Duration;
use std::collections::HashMap;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::ports::BudgetStore;
use tracemeter_local::faults::NoFaults;
use tracemeter_local::harness::TestStack;
use tracemeter_local::write_meter::{Key, WriteOp, item_size, write_units};

/// Meters a batch of `traces` messages spread over `customers` customers in one invocation;
/// returns the WCU it cost.
async fn metered_batch_wcu(stack: &TestStack, traces: usize, customers: usize) -> u64 {
    let label = format!("c{customers}");
    let at = now() - Duration::hours(1);
    let customer = |i: usize| format!("cus_{label}_{}", i % customers);
    for c in 0..customers {
        stack
            .ledger
            .put_budget_policy(
                &customer(c),
                &BudgetPolicy {
                    limit: Some(1_000_000),
                    period: Period::Month,
                    mode: BudgetMode::Hard,
                    thresholds: vec![50, 80, 100],
                },
            )
            .await
            .expect("policy");
    }
    let ids: Vec<String> = (0..traces).map(|i| format!("w{label}-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(id, &customer(i), 0.004, 0, at));
    }

    stack.dynamo_writes.reset();
    let response = stack
        .invoke_with(&NoFaults, event_for(&ids))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let ops = stack.dynamo_writes.ops();

    for id in &ids {
        assert_eq!(entry(stack, id).await.state, LedgerState::Metered, "{id}");
    }
    let totals = stack.stripe.totals_by_customer();
    for c in 0..customers {
        let n = (0..traces).filter(|i| i % customers == c).count() as u64;
        assert_eq!(totals.get(&customer(c)).copied(), Some(n * 100));
    }

    let sizes = item_sizes(stack, &ops).await;
    let largest = sizes.values().copied().max().unwrap_or(0);
    assert!(largest < 1024, "every item fits in 1 KB: {largest} bytes");
    assert_claim_shape(&ops, traces, customers);

    let wcu = write_units(&ops, &sizes);
    assert_eq!(wcu, (2 * traces + 2 * customers + 1) as u64);
    println!(
        "WCU per metered trace, {traces} messages / {customers} customers per batch: {:.2} \
         ({wcu} WCU; largest item {largest} B; before batch claims: 5.00)",
        wcu as f64 / traces as f64
    );

    // A redelivery of the whole batch writes nothing.
    stack.dynamo_writes.reset();
    let again = stack
        .invoke_with(&NoFaults, event_for(&ids))
        .await
        .expect("no crash");
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(stack.dynamo_writes.ops(), Vec::new(), "redelivery writes");
    wcu
}

/// The sizes of the items as written (the claimed entries keep their pending fields).
async fn item_sizes(stack: &TestStack, ops: &[WriteOp]) -> HashMap<Key, usize> {
    let mut sizes = HashMap::new();
    for op in ops {
        for key in &op.items {
            if !sizes.contains_key(key) {
                let item = stack
                    .dynamo
                    .get_item()
                    .table_name(&stack.resources.table_name)
                    .key("pk", AttributeValue::S(key.0.clone()))
                    .key("sk", AttributeValue::S(key.1.clone()))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("read")
                    .item;
                sizes.insert(key.clone(), item.as_ref().map(item_size).unwrap_or(0));
            }
        }
    }
    sizes
}

/// The shape: one claim transaction per customer (its entries + its counter), one receipt
/// write for the whole invocation, nothing else.
fn assert_claim_shape(ops: &[WriteOp], traces: usize, customers: usize) {
    let tx: Vec<_> = ops
        .iter()
        .filter(|o| o.operation == "TransactWriteItems")
        .collect();
    assert_eq!(tx.len(), customers, "{ops:#?}");
    for t in &tx {
        assert_eq!(t.items.len(), traces / customers + 1, "{t:?}");
        assert_eq!(
            t.items
                .iter()
                .filter(|k| k.0.starts_with("BUDGET#"))
                .count(),
            1
        );
    }
    let plain: Vec<_> = ops.iter().filter(|o| !o.transactional).collect();
    assert_eq!(plain.len(), 1, "{plain:#?}");
    assert!(plain[0].items[0].0.starts_with("RECEIPT#"));
}

#[tokio::test]
async fn batch_claims_cost_at_most_3_5_wcu_per_metered_trace() {
    let stack = TestStack::start("wcu").await.expect("stack");
    let one = metered_batch_wcu(&stack, 10, 1).await;
    let five = metered_batch_wcu(&stack, 10, 5).await;
    let ten = metered_batch_wcu(&stack, 10, 10).await;
    assert!(one as f64 / 10.0 <= 3.5, "1 customer: {one}");
    assert!(five as f64 / 10.0 <= 3.5, "5 customers: {five}");
    // Ten customers in ten messages share nothing: each trace pays its own counter.
    assert!(ten as f64 / 10.0 < 5.0, "10 customers: {ten}");
    assert_eq!(stack.stripe.events().len(), 30);
}

/// A redelivered batch checks each customer's budget once, not once per message, and puts
/// no alert again: two customers past their 50 % and 80 % thresholds, five traces each,
/// delivered again, write nothing at all (the counters mark the four alerts recorded; before
/// the marks, the four conditional puts were attempted and refused, and before the check
/// once per customer, twenty).
#[tokio::test]
async fn a_redelivered_batch_checks_each_customers_budget_once() {
    let stack = TestStack::start("wcu-again").await.expect("stack");
    let at = now() - Duration::hours(1);
    let customers = ["cus_again_a", "cus_again_b"];
    let policy = BudgetPolicy {
        limit: Some(600),
        period: Period::Month,
        mode: BudgetMode::Hard,
        thresholds: vec![50, 80, 100],
    };
    for c in customers {
        let put = stack.ledger.put_budget_policy(c, &policy).await;
        put.expect("policy");
    }
    let ids: Vec<String> = (0..10).map(|i| format!("again-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let customer = customers[i % 2];
        stack.langfuse.add_trace(trace(id, customer, 0.004, 0, at));
    }
    let first = stack.invoke_with(&NoFaults, event_for(&ids)).await;
    assert!(first.expect("no crash").batch_item_failures.is_empty());
    assert_eq!(stack.stripe.events().len(), 10);

    stack.dynamo_writes.reset();
    let again = stack.invoke_with(&NoFaults, event_for(&ids)).await;
    assert!(again.expect("no crash").batch_item_failures.is_empty());
    let ops = stack.dynamo_writes.ops();
    assert!(ops.is_empty(), "{ops:#?}");
    for c in customers {
        let usage = stack.ledger.budget_usage(c, &Period::Month.key(at)).await;
        let marked: Vec<u32> = usage.expect("usage").alerted.into_iter().collect();
        assert_eq!(marked, vec![50, 80], "{c}");
    }
    assert_eq!(stack.stripe.events().len(), 10, "nothing billed twice");
}
