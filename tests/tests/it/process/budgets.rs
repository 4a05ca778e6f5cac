//! Budgets: hard limits under concurrency, soft alerts, periods, a batch sharing a limit.

use super::*;
use tracemeter_local::ledger_faults::invoke_with_claim_conflicts;

#[tokio::test]
async fn twenty_concurrent_invocations_never_pass_a_hard_limit() {
    let stack = TestStack::start("hard20").await.expect("stack");
    let limit = 2_550;
    stack
        .ledger
        .put_budget_policy("cus_h", &hard(limit))
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..40).map(|i| format!("th-{i:02}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_h", 0.004, 0, at));
    }
    // 20 invocations at once, 2 messages each; then re-invoke whatever asked for a retry.
    let mut pending: Vec<String> = ids.clone();
    for round in 0..30 {
        if pending.is_empty() {
            break;
        }
        pending = invoke_in_pairs(&stack, &pending, round).await;
    }
    assert!(pending.is_empty(), "all settled: {pending:?}");

    let (used, capped) = budget_used(&stack, "cus_h", at, Period::Month).await;
    let mut billed = 0;
    let mut capped_sum = 0;
    for id in &ids {
        let e = entry(&stack, id).await;
        assert!(
            matches!(e.state, LedgerState::Metered | LedgerState::Capped),
            "{id}: {e:?}"
        );
        assert_eq!(e.total_credits, C_0004, "{id}");
        billed += e.billed_credits;
        capped_sum += e.capped_credits;
    }
    assert!(used <= limit, "never past the limit: {used}");
    assert_eq!(used, limit, "filled up to the limit");
    assert_eq!(used, billed, "counter equals the ledger");
    assert_eq!(capped, capped_sum);
    assert_eq!(used + capped, 40 * C_0004, "no increment lost");
    assert_eq!(
        stack.stripe.totals_by_customer().get("cus_h").copied(),
        Some(limit)
    );
    let usage = stack
        .ledger
        .budget_usage("cus_h", &Period::Month.key(at))
        .await
        .expect("usage");
    assert!(usage.exceeded, "exceeded flag for the gateway");
}

#[tokio::test]
async fn soft_mode_alerts_once_per_threshold() {
    let stack = TestStack::start("soft").await.expect("stack");
    let logs = Logs::capture();
    let policy = BudgetPolicy {
        limit: Some(1_000),
        period: Period::Month,
        mode: BudgetMode::Soft,
        thresholds: vec![50, 80, 100],
    };
    stack
        .ledger
        .put_budget_policy("cus_s", &policy)
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..14).map(|i| format!("ts-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_s", 0.004, 0, at));
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    // Concurrent invocations racing on the thresholds, plus a duplicate delivery.
    let (a, b) = tokio::join!(stack.drain(30), stack.drain(30));
    a.expect("drain a");
    b.expect("drain b");
    // Every message again, twice, once through the queue and once directly.
    stack.send_traces(&refs).await.expect("send");
    stack.drain(30).await.expect("drain again");
    let bodies: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("again-{id}"), body(id)))
        .collect();
    stack
        .invoke_with(&NoFaults, event(&bodies))
        .await
        .expect("no crash");

    // What leaves the system: one alert log line per threshold, whatever was delivered twice.
    assert_eq!(
        alerts_logged(&logs, "cus_s"),
        BTreeMap::from([(50, 1), (80, 1), (100, 1)])
    );

    assert_eq!(
        stack.stripe.totals_by_customer().get("cus_s").copied(),
        Some(14 * C_0004),
        "soft mode bills past the limit"
    );
    let sks = alert_items(&stack, "cus_s").await;
    let period = Period::Month.key(at);
    assert_eq!(
        sks,
        vec![
            format!("ALERT#{period}#050"),
            format!("ALERT#{period}#080"),
            format!("ALERT#{period}#100")
        ]
    );
}

#[tokio::test]
async fn usage_near_a_period_boundary_lands_in_its_own_period() {
    let stack = TestStack::start("boundary").await.expect("stack");
    let policy = BudgetPolicy {
        limit: Some(1_000_000),
        period: Period::Day,
        mode: BudgetMode::Hard,
        thresholds: vec![100],
    };
    stack
        .ledger
        .put_budget_policy("cus_p", &policy)
        .await
        .expect("policy");
    // Midnight UTC between two days that are safely in the past.
    let today = Utc::now()
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("midnight");
    let midnight = today - Duration::days(1);
    let before = midnight - Duration::milliseconds(500);
    let after = midnight + Duration::milliseconds(500);
    stack
        .langfuse
        .add_trace(trace("t-before", "cus_p", 0.004, 0, before));
    stack
        .langfuse
        .add_trace(trace("t-after", "cus_p", 0.008, 0, after));
    stack
        .send_traces(&["t-before", "t-after"])
        .await
        .expect("send");
    stack.drain(10).await.expect("drained");
    assert_eq!(
        budget_used(&stack, "cus_p", before, Period::Day).await.0,
        C_0004
    );
    assert_eq!(
        budget_used(&stack, "cus_p", after, Period::Day).await.0,
        2 * C_0004
    );
    assert_ne!(Period::Day.key(before), Period::Day.key(after));
}

#[tokio::test]
async fn a_batch_shares_the_hard_limit_in_trace_order() {
    let stack = TestStack::start("batchcap").await.expect("stack");
    stack
        .ledger
        .put_budget_policy("cus_b", &hard(550))
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..10).map(|i| format!("tb-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_b", 0.004, 0, at));
    }
    // Reverse order in the batch: the split follows the trace ids, not the message order.
    let reversed: Vec<&String> = ids.iter().rev().collect();
    let response = stack
        .invoke_with(&NoFaults, event_for(&reversed))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    for (i, id) in ids.iter().enumerate() {
        let e = entry(&stack, id).await;
        let (billed, capped, state) = match i {
            0..=4 => (C_0004, 0, LedgerState::Metered),
            5 => (50, 50, LedgerState::Metered),
            _ => (0, C_0004, LedgerState::Capped),
        };
        assert_eq!(
            (e.state, e.billed_credits, e.capped_credits, e.total_credits),
            (state, billed, capped, C_0004),
            "{id}"
        );
    }
    assert_eq!(
        budget_used(&stack, "cus_b", at, Period::Month).await,
        (550, 450)
    );
    assert_eq!(stack.stripe.totals_by_customer().get("cus_b"), Some(&550));
    assert_eq!(stack.stripe.events().len(), 6);
}

/// The budget alert log lines of `customer`, counted by threshold.
fn alerts_logged(logs: &Logs, customer: &str) -> BTreeMap<u64, usize> {
    let mut alerts = BTreeMap::new();
    for e in logs.events() {
        let fields = &e["fields"];
        if fields["alert"] == "budget_threshold" && fields["customer"] == customer {
            assert_eq!(fields["message"], "budget threshold crossed", "{e}");
            let pct = fields["threshold_pct"].as_u64().expect("threshold_pct");
            *alerts.entry(pct).or_default() += 1;
        }
    }
    alerts
}

/// The sort keys of `customer`'s alert records.
async fn alert_items(stack: &TestStack, customer: &str) -> Vec<String> {
    let out = stack
        .dynamo
        .query()
        .table_name(&stack.resources.table_name)
        .key_condition_expression("pk = :pk AND begins_with(sk, :alert)")
        .expression_attribute_values(
            ":pk",
            tracemeter::adapters::dynamo::s(format!("BUDGET#{customer}")),
        )
        .expression_attribute_values(":alert", tracemeter::adapters::dynamo::s("ALERT#"))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    out.items()
        .iter()
        .filter_map(|i| tracemeter::adapters::dynamo::get_s(i, "sk").map(str::to_string))
        .collect()
}

/// Invokes the handler on `ids`, two messages an invocation, all at once; returns the ids
/// whose messages asked for a retry.
async fn invoke_in_pairs(stack: &TestStack, ids: &[String], round: usize) -> Vec<String> {
    let events: Vec<(Vec<(String, String)>, _)> = ids
        .chunks(2)
        .enumerate()
        .map(|(i, chunk)| {
            let ids: Vec<(String, String)> = chunk
                .iter()
                .map(|id| (format!("r{round}-m{i}-{id}"), id.clone()))
                .collect();
            let bodies: Vec<(&str, String)> =
                ids.iter().map(|(m, id)| (m.as_str(), body(id))).collect();
            let ev = event(&bodies);
            (ids, ev)
        })
        .collect();
    let results = futures::future::join_all(
        events
            .iter()
            .map(|(_, ev)| stack.invoke_with(&NoFaults, ev.clone())),
    )
    .await;
    let mut retry = Vec::new();
    for ((ids, _), result) in events.iter().zip(results) {
        let response = result.expect("no crash");
        for f in response.batch_item_failures {
            let (_, id) = ids
                .iter()
                .find(|(m, _)| *m == f.item_identifier)
                .expect("known message");
            retry.push(id.clone());
        }
    }
    retry
}

/// A batch claim that meets another writer's transaction (DynamoDB's `TransactionConflict`
/// on the shared budget counter, which moto never answers: the ledger port is wrapped)
/// pauses and tries again: 3 conflicts, then the batch is billed once and counted once; a
/// claim that conflicts on every try (25) gives the whole batch back as retries, with
/// nothing billed and nothing counted, and its redelivery bills it once.
#[tokio::test]
async fn claims_that_meet_another_transaction_try_again_and_bill_once() {
    let stack = TestStack::start("conflicts").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .ledger
        .put_budget_policy("cus_cf", &hard(10_000))
        .await
        .expect("policy");
    let ids = ["cf-1", "cf-2", "cf-3"];
    for id in ids {
        stack.langfuse.add_trace(trace(id, "cus_cf", 0.004, 0, at));
    }

    let (response, tries) = invoke_with_claim_conflicts(&stack, event_for(&ids[..2]), 3).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(tries, 4, "3 conflicts, then the claim");
    assert_eq!(
        budget_used(&stack, "cus_cf", at, Period::Month).await.0,
        2 * C_0004
    );

    let (response, tries) = invoke_with_claim_conflicts(&stack, event_for(&ids[2..]), 100).await;
    assert_eq!(tries, 25, "every try conflicts");
    assert_eq!(response.batch_item_failures.len(), 1, "{response:?}");
    let untouched = stack.ledger.entry("cf-3").await.expect("entry");
    assert!(untouched.is_none(), "nothing claimed: {untouched:?}");
    assert_eq!(
        budget_used(&stack, "cus_cf", at, Period::Month).await.0,
        2 * C_0004
    );
    assert_eq!(stack.stripe.events().len(), 2);

    let again = stack
        .invoke_with(&NoFaults, event_for(&ids))
        .await
        .expect("no crash");
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    assert_eq!(
        stack.stripe.totals_by_customer().get("cus_cf"),
        Some(&(3 * C_0004))
    );
    assert_eq!(
        budget_used(&stack, "cus_cf", at, Period::Month).await.0,
        3 * C_0004
    );
}
