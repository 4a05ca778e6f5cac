//! The real `process` binary, run as Lambda runs it (against an emulated Runtime API), with
//! an environment that holds nothing but the function's variables and loopback endpoints.

use crate::common::{function_binary, now, trace};
use chrono::Duration;
use tracemeter::ports::ClaimStore;
use tracemeter_local::function::Function;
use tracemeter_local::harness::TestStack;

#[tokio::test]
async fn the_process_binary_meters_a_batch_under_the_lambda_runtime_api() {
    let stack = TestStack::start("binary").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-bin", "cus_bin", 0.004, 0, at));
    // Nothing inherited: no credentials, no profile, no home directory.
    let mut process = Function::spawn("process", &function_binary("process"), &stack.env, 128)
        .await
        .expect("spawn the process binary");

    // A real SQS event, as the event source mapping delivers it.
    stack.send_traces(&["t-bin"]).await.expect("send");
    let event = stack
        .esm
        .receive(2)
        .await
        .expect("receive")
        .expect("a message");
    let reply = process
        .invoke(
            serde_json::to_value(&event).expect("json"),
            1,
            std::time::Duration::from_secs(20),
        )
        .await
        .expect("the function answered without an error");
    assert_eq!(reply["batchItemFailures"], serde_json::json!([]), "{reply}");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].value, 100);
    assert_batch_metrics(&process, 1, 100).await;

    // The committed poison fixture: acknowledged (no retry), recorded by message id.
    let poison: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            tracemeter_local::stack::repo_root().join("events/sqs-poison.json"),
        )
        .expect("fixture"),
    )
    .expect("fixture json");
    let reply = process
        .invoke(poison, 1, std::time::Duration::from_secs(20))
        .await
        .expect("the function answered without an error");
    assert_eq!(reply["batchItemFailures"], serde_json::json!([]), "{reply}");
    let e = stack
        .ledger
        .entry("t-bin")
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(e.billed_credits, 100);
}

/// The invocation's metrics reached stdout as EMF: namespace `tracemeter`, dimension
/// `Function=process`, one metered trace and its credits.
async fn assert_batch_metrics(process: &Function, metered: u64, credits: u64) {
    let mut docs = Vec::new();
    for _ in 0..50 {
        docs = process.metric_documents();
        if !docs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let doc = docs
        .iter()
        .find(|d| d.get("TracesMetered").is_some())
        .unwrap_or_else(|| panic!("no EMF document with TracesMetered: {docs:?}"));
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "tracemeter", "{doc}");
    assert_eq!(
        directive["Dimensions"][0],
        serde_json::json!(["Function"]),
        "{doc}"
    );
    assert_eq!(doc["Function"], "process");
    assert!(doc["_aws"]["Timestamp"].as_u64().is_some(), "{doc}");
    let names: Vec<&str> = directive["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["Name"].as_str())
        .collect();
    for name in [
        "Messages",
        "TracesMetered",
        "CreditsBilled",
        "BatchDuration",
        "TracesFailed",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
        assert!(doc[name].is_number(), "{name} has no value: {doc}");
    }
    assert_eq!(doc["Messages"], 1);
    assert_eq!(doc["TracesMetered"], metered);
    assert_eq!(doc["CreditsBilled"], credits);
    assert_eq!(doc["TracesFailed"], 0);
}
