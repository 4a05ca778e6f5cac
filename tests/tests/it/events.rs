//! Budget events on EventBridge: each threshold crossing, hard limit reached and reached
//! limit cleared is ONE event, counted as the local stack's EventBridge delivered
//! it (the item -> the table's stream -> the template's pipe, played by
//! `tracemeter_local::pipe` -> the bus -> the template's rule -> a queue), not as items.

use crate::common::{body, event, now, trace};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};
use tracemeter::ports::BudgetStore;
use tracemeter_local::faults::NoFaults;
use tracemeter_local::harness::TestStack;
use tracemeter_local::ledger_faults::invoke_dying_after_budget_event;
use tracemeter_local::operator;
use tracemeter_local::pipe::EventsRig;

const CROSSED: &str = "Budget Threshold Crossed";
const REACHED: &str = "Budget Limit Reached";
const CLEARED: &str = "Budget Limit Cleared";

async fn rig(label: &str) -> (TestStack, EventsRig) {
    let stack = TestStack::start(label).await.expect("stack");
    let events = EventsRig::start(&stack.endpoint, &stack.resources)
        .await
        .expect("events rig");
    (stack, events)
}

async fn set_policy(stack: &TestStack, customer: &str, limit: u64, mode: BudgetMode, t: &[u32]) {
    let policy = BudgetPolicy {
        limit: Some(limit),
        period: Period::Month,
        mode,
        thresholds: t.to_vec(),
    };
    let put = stack.ledger.put_budget_policy(customer, &policy).await;
    put.expect("policy");
}

/// Bills `ids` (100 credits each) to `customer` through the queue.
async fn bill(stack: &TestStack, customer: &str, ids: &[&str], at: DateTime<Utc>) {
    for id in ids {
        stack.langfuse.add_trace(trace(id, customer, 0.004, 0, at));
    }
    stack.send_traces(ids).await.expect("send");
    stack.drain(30).await.expect("drain");
}

/// (detail-type, percent) of each event, in arrival order.
fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let t = e["detail-type"].as_str().unwrap_or_default().to_string();
            (
                t,
                e["detail"]["percent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_soft_budget_crossing_50_80_100_yields_exactly_three_events() {
    let (stack, events) = rig("ev-soft").await;
    set_policy(&stack, "cus_es", 1_000, BudgetMode::Soft, &[50, 80, 100]).await;
    let at = now() - Duration::minutes(30);
    let ids: Vec<String> = (0..11).map(|i| format!("es-{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    bill(&stack, "cus_es", &refs, at).await;
    let got = events.received().await.expect("received");
    let pcts: Vec<(String, String)> = ["50", "80", "100"]
        .iter()
        .map(|p| (CROSSED.to_string(), p.to_string()))
        .collect();
    let mut sorted = kinds(&got);
    sorted.sort_by_key(|(_, p)| p.parse::<u32>().unwrap_or(0));
    assert_eq!(sorted, pcts, "{got:#?}");
    let period = Period::Month.key(at);
    for e in &got {
        assert_eq!(e["source"], "tracemeter");
        let d = &e["detail"];
        assert_eq!(
            (&d["customer"], &d["period"]),
            (&"cus_es".into(), &period.clone().into())
        );
        assert_eq!((&d["limit"], &d["mode"]), (&"1000".into(), &"soft".into()));
        let used: u64 = d["used"]
            .as_str()
            .and_then(|u| u.parse().ok())
            .expect("used");
        let pct: u64 = d["percent"]
            .as_str()
            .and_then(|u| u.parse().ok())
            .expect("pct");
        assert!(used * 100 >= pct * 1_000, "{d}");
        assert!(d["at"].as_str().is_some_and(|a| a.starts_with("20")), "{d}");
    }

    // The same batch delivered again, through the queue and directly: no event more.
    stack.send_traces(&refs).await.expect("send");
    stack.drain(30).await.expect("drain");
    let again: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("re-{id}"), body(id)))
        .collect();
    stack
        .invoke_with(&NoFaults, event(&again))
        .await
        .expect("no crash");
    assert_eq!(events.received().await.expect("received").len(), 3);
}

#[tokio::test]
async fn a_function_killed_right_after_the_alert_put_still_yields_its_event() {
    let (stack, events) = rig("ev-kill").await;
    set_policy(&stack, "cus_ek", 200, BudgetMode::Soft, &[50]).await;
    let at = now() - Duration::minutes(30);
    stack
        .langfuse
        .add_trace(trace("ek-1", "cus_ek", 0.004, 0, at));
    // The invocation dies right after the alert's conditional put: nothing after it runs.
    let died = invoke_dying_after_budget_event(&stack, event(&[("m-ek", body("ek-1"))])).await;
    assert!(
        died.is_none(),
        "the invocation must die after the put: {died:?}"
    );
    let got = events.of_type(CROSSED).await.expect("received");
    assert_eq!(
        kinds(&got),
        [(CROSSED.to_string(), "50".to_string())],
        "{got:#?}"
    );
    assert_eq!(got[0]["detail"]["customer"], "cus_ek");
    // Its message comes back and runs to the end: still one event.
    stack.send_traces(&["ek-1"]).await.expect("send");
    stack.drain(10).await.expect("drain");
    assert_eq!(events.received().await.expect("received").len(), 1);
}

#[tokio::test]
async fn a_hard_limit_reached_and_cleared_twice_yields_each_event_twice() {
    let (stack, events) = rig("ev-hard").await;
    set_policy(&stack, "cus_eh", 150, BudgetMode::Hard, &[100]).await;
    let at = now() - Duration::minutes(30);
    bill(&stack, "cus_eh", &["eh-1", "eh-2"], at).await;
    bill(&stack, "cus_eh", &["eh-3"], at).await;
    let got = events.received().await.expect("received");

    let mut seen = kinds(&got);
    seen.sort();
    let expected =
        [(REACHED, "100"), (CROSSED, "100")].map(|(t, p)| (t.to_string(), p.to_string()));
    assert_eq!(seen, expected, "{got:#?}");
    let reached = &events.of_type(REACHED).await.expect("reached")[0]["detail"];
    assert_eq!(
        (&reached["used"], &reached["limit"]),
        (&"150".into(), &"150".into())
    );
    let period = Period::Month.key(at);
    assert!(
        stack
            .ledger
            .budget_usage("cus_eh", &period)
            .await
            .expect("usage")
            .exceeded
    );

    // The operator raises the hard limit above usage: one Cleared, the flag down.
    let set = [
        "budget",
        "set",
        "cus_eh",
        "--limit",
        "400",
        "--thresholds",
        "100",
        "--yes",
    ];
    for _ in 0..2 {
        let (code, out) = operator::run(&stack, &set).await.expect("budget set");
        assert_eq!(code, 0, "{out}");
    }
    let cleared = events.of_type(CLEARED).await.expect("cleared");
    assert_eq!(cleared.len(), 1, "{cleared:#?}");
    let d = &cleared[0]["detail"];
    assert_eq!(
        (&d["used"], &d["limit"], &d["percent"]),
        (&"150".into(), &"400".into(), &"37".into())
    );
    assert_eq!(
        (&d["mode"], &d["period"]),
        (&"hard".into(), &period.clone().into())
    );
    let usage = stack
        .ledger
        .budget_usage("cus_eh", &period)
        .await
        .expect("usage");
    assert!(
        !usage.exceeded,
        "the gateway may let the customer spend again"
    );
    assert_eq!(events.received().await.expect("received").len(), 3);

    // Lowered to usage again: the second episode's Reached; then made soft: its Cleared.
    let lower = [
        "budget",
        "set",
        "cus_eh",
        "--limit",
        "150",
        "--thresholds",
        "100",
        "--yes",
    ];
    let soft = [&lower[..], &["--mode", "soft"]].concat();
    for args in [&lower[..], &soft, &soft] {
        let (code, out) = operator::run(&stack, args).await.expect("budget set");
        assert_eq!(code, 0, "{out}");
    }
    let got = events.received().await.expect("received");
    let types: Vec<&str> = got
        .iter()
        .filter_map(|e| e["detail-type"].as_str())
        .collect();
    assert_eq!(types.len(), 5, "{got:#?}");
    let reached = events.of_type(REACHED).await.expect("reached");
    let cleared = events.of_type(CLEARED).await.expect("cleared");
    assert_eq!((reached.len(), cleared.len()), (2, 2), "{got:#?}");
    let last = cleared
        .iter()
        .find(|e| e["detail"]["mode"] == "soft")
        .expect("a Cleared for the soft budget");
    assert_eq!(
        (&last["detail"]["used"], &last["detail"]["limit"]),
        (&"150".into(), &"150".into())
    );
    let usage = stack.ledger.budget_usage("cus_eh", &period).await;
    let usage = usage.expect("usage");
    assert_eq!((usage.exceeded, usage.clears), (false, 2));
}
