//! A gateway's read path: "may customer C spend now?", answered from docs/operating.md's GetItem
//! contract alone (the documented keys and attributes, the raw AWS SDK, no tracemeter code),
//! before and after the processor reaches the customer's hard limit.

use crate::common::{now, trace};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Datelike, Duration, Utc};
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};
use tracemeter_local::harness::TestStack;

/// What the gateway learns.
#[derive(Debug, PartialEq, Eq)]
struct Standing {
    allowed: bool,
    used: u64,
    limit: Option<u64>,
}

/// The operating guide's contract, step by step.
async fn standing(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    customer: &str,
    default_period: &str,
    at: DateTime<Utc>,
) -> Standing {
    let get = |pk: String, sk: String| {
        db.get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk))
            .send()
    };
    // 1. The customer's budget policy names its period (else the deployment's default).
    let policy = get(format!("CUSTOMER#{customer}"), "BUDGET".into())
        .await
        .expect("policy read");
    let period = policy
        .item()
        .and_then(|i| i.get("period"))
        .and_then(|v| v.as_s().ok())
        .map_or(default_period.to_string(), String::clone);
    // 2. The period key of `at` (UTC): month 2026-11, ISO week 2026-W48, day 2026-11-23.
    let key = match period.as_str() {
        "day" => at.format("%Y-%m-%d").to_string(),
        "week" => format!("{}-W{:02}", at.iso_week().year(), at.iso_week().week()),
        _ => at.format("%Y-%m").to_string(),
    };
    // 3. The period's counter: no item means nothing used yet.
    let counter = get(format!("BUDGET#{customer}"), format!("PERIOD#{key}"))
        .await
        .expect("counter read");
    let item = counter.item();
    let number = |name: &str| {
        item.and_then(|i| i.get(name))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let exceeded = item
        .and_then(|i| i.get("exceeded"))
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false);
    Standing {
        allowed: !exceeded,
        used: number("used").unwrap_or(0),
        limit: number("limit"),
    }
}

#[tokio::test]
async fn a_gateway_reads_the_standing_before_and_after_the_hard_limit() {
    let stack = TestStack::start("gateway").await.expect("stack");
    let policy = BudgetPolicy {
        limit: Some(150),
        period: Period::Week,
        mode: BudgetMode::Hard,
        thresholds: vec![100],
    };
    stack
        .ledger
        .put_budget_policy("cus_gw", &policy)
        .await
        .expect("policy");
    // The gateway's own client (loopback endpoint, dummy credentials and region: never IMDS).
    let db =
        aws_sdk_dynamodb::Client::new(&tracemeter_local::stack::sdk_config(&stack.endpoint).await);
    let table = stack.resources.table_name.as_str();
    let at = now() - Duration::minutes(30);
    let ask = || standing(&db, table, "cus_gw", "month", at);

    // GIVEN nothing used yet THEN the gateway lets the customer spend.
    let fresh = Standing {
        allowed: true,
        used: 0,
        limit: None,
    };
    assert_eq!(ask().await, fresh);

    // WHEN a 100-credit trace is billed THEN still allowed, with the limit visible.
    stack
        .langfuse
        .add_trace(trace("t-gw-1", "cus_gw", 0.004, 0, at));
    stack.send_traces(&["t-gw-1"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    let under = Standing {
        allowed: true,
        used: 100,
        limit: Some(150),
    };
    assert_eq!(ask().await, under);

    // WHEN the next trace passes the limit THEN 50 are billed, 50 capped, and the gateway
    // must stop the customer.
    stack
        .langfuse
        .add_trace(trace("t-gw-2", "cus_gw", 0.004, 0, at));
    stack.send_traces(&["t-gw-2"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    let reached = Standing {
        allowed: false,
        used: 150,
        limit: Some(150),
    };
    assert_eq!(ask().await, reached);
    let billed: u64 = stack.stripe.events().iter().map(|e| e.value).sum();
    assert_eq!(billed, 150, "never billed past the limit");
    // Another customer (no policy, the deployment's default) is unaffected.
    let other = standing(&db, table, "cus_other", "month", at).await;
    assert_eq!(other, fresh);
}

#[tokio::test]
async fn raising_a_reached_hard_limit_lets_the_gateway_allow_spending_again() {
    let stack = TestStack::start("gateway-raise").await.expect("stack");
    let policy = BudgetPolicy {
        limit: Some(150),
        period: Period::Month,
        mode: BudgetMode::Hard,
        thresholds: vec![100],
    };
    let put = stack.ledger.put_budget_policy("cus_gr", &policy).await;
    put.expect("policy");
    let db =
        aws_sdk_dynamodb::Client::new(&tracemeter_local::stack::sdk_config(&stack.endpoint).await);
    let table = stack.resources.table_name.as_str();
    let at = now() - Duration::minutes(30);
    let ask = || standing(&db, table, "cus_gr", "month", at);
    for id in ["t-gr-1", "t-gr-2"] {
        stack.langfuse.add_trace(trace(id, "cus_gr", 0.004, 0, at));
    }
    stack
        .send_traces(&["t-gr-1", "t-gr-2"])
        .await
        .expect("send");
    stack.drain(10).await.expect("drained");
    let reached = Standing {
        allowed: false,
        used: 150,
        limit: Some(150),
    };
    assert_eq!(ask().await, reached);

    // WHEN the operator raises the limit above usage THEN the flag is down and the counter
    // shows the new limit, through the same GetItem contract.
    let set = ["budget", "set", "cus_gr", "--limit", "400", "--yes"];
    let (code, out) = tracemeter_local::operator::run(&stack, &set)
        .await
        .expect("budget set");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Budget Limit Cleared"), "{out}");
    let raised = Standing {
        allowed: true,
        used: 150,
        limit: Some(400),
    };
    assert_eq!(ask().await, raised);
    // WHEN usage reaches the new limit THEN the gateway stops the customer again.
    let ids: Vec<String> = (3..6).map(|i| format!("t-gr-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_gr", 0.004, 0, at));
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(10).await.expect("drained");
    let again = Standing {
        allowed: false,
        used: 400,
        limit: Some(400),
    };
    assert_eq!(ask().await, again);
}
