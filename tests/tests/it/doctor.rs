//! `tracemeter doctor` on the local stack (moto, the Langfuse and Stripe fakes): a
//! deployment as template.yaml makes it passes, and each planted misconfiguration gives
//! exactly one FAIL, the one that names it. The deploy guide's `local-stack` commands
//! (`dev/guide.py local-stack`: doctor and the first reconcile) run as the guide has them.

use crate::common::function_binary;
use std::collections::HashMap;
use tracemeter_cli::doctor::{Check, Status, doctor, examine};
use tracemeter_local::fakes::stripe::FakeMeter;
use tracemeter_local::harness::{StackOptions, TestStack};
use tracemeter_local::operator::operator_env;
use tracemeter_local::stack;

/// A stack provisioned as template.yaml deploys it (the queue's 180 s visibility timeout).
async fn deployed(label: &str) -> TestStack {
    let options = StackOptions {
        visibility_timeout: Some(180),
        ..StackOptions::default()
    };
    TestStack::start_with(label, options).await.expect("stack")
}

/// The checks doctor reports for `env` on `stack`.
async fn checks(stack: &TestStack, env: &HashMap<String, String>) -> Vec<Check> {
    let sdk = stack::sdk_config(&stack.endpoint).await;
    examine(&|name| env.get(name).cloned(), &sdk).await.checks
}

/// The one FAIL doctor reports for `env`, which must be `name`.
async fn the_failure(stack: &TestStack, env: &HashMap<String, String>, name: &str) -> Check {
    let all = checks(stack, env).await;
    let failed: Vec<&Check> = all.iter().filter(|c| c.status == Status::Fail).collect();
    assert_eq!(failed.len(), 1, "exactly one FAIL: {failed:#?}");
    assert_eq!(failed[0].check, name, "{failed:#?}");
    assert!(failed[0].fix.is_some(), "a FAIL says the fix");
    failed[0].clone()
}

#[tokio::test]
async fn a_deployment_as_the_template_makes_it_passes() {
    let stack = deployed("doctor-ok").await;
    let env = operator_env(&stack);
    let sdk = stack::sdk_config(&stack.endpoint).await;
    let (mut out, mut json) = (Vec::new(), Vec::new());
    let lookup = |name: &str| env.get(name).cloned();
    let code = doctor(&lookup, &sdk, false, &mut out).await;
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(code, 0, "{text}");
    assert_eq!(doctor(&lookup, &sdk, true, &mut json).await, 0);
    let report: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    let by_status = |status: &str| -> Vec<String> {
        let checks = report["checks"].as_array().expect("checks");
        let of = checks.iter().filter(|c| c["status"] == status);
        of.map(|c| c["check"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let passed = [
        "secrets.langfuse",
        "langfuse.keys",
        "langfuse.api",
        "langfuse.rate_limit",
        "secrets.stripe",
        "stripe.key",
        "stripe.meter",
        "stripe.event_name",
        "stripe.customer_mapping",
        "stripe.value_key",
        "stripe.aggregation",
        "dynamodb.table",
        "dynamodb.keys",
        "dynamodb.index",
        "dynamodb.stream",
        "dynamodb.ttl",
        "dynamodb.price_index",
        "sqs.dlq",
        "sqs.visibility_timeout",
    ];
    assert_eq!(by_status("OK"), passed, "{text}");
    let unchecked = ["lambda.event_source_mapping", "schedule.ingest"];
    assert_eq!(by_status("WARN"), unchecked, "{text}");
    assert!(text.contains("a TEST mode key"), "{text}");
    assert!(text.ends_with("doctor: 19 OK, 2 WARN, 0 FAIL\n"), "{text}");
}

#[tokio::test]
async fn a_meter_of_another_event_name_fails_naming_both_names() {
    let stack = deployed("doctor-name").await;
    let mut env = operator_env(&stack);
    env.insert("STRIPE_METER_EVENT_NAME".into(), "credits".into());
    let failed = the_failure(&stack, &env, "stripe.event_name").await;
    assert_eq!(
        failed.message,
        "the meter counts `llm_credits`; the functions send `credits` (STRIPE_METER_EVENT_NAME)"
    );
    // The same through the report's text and exit code.
    let sdk = stack::sdk_config(&stack.endpoint).await;
    let mut out = Vec::new();
    let code = doctor(&|name| env.get(name).cloned(), &sdk, false, &mut out).await;
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(code, 1, "{text}");
    // The guide's example is this very output.
    let guide = std::fs::read_to_string(stack::repo_root().join("docs/deploying.md"));
    let guide = guide.expect("docs/deploying.md");
    let example = guide
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next());
    for line in example.expect("the guide's example").lines() {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
    let line = text.lines().find(|l| l.contains("stripe.event_name"));
    let line = line.expect("the check's line");
    assert!(
        line.starts_with("FAIL ") && line.ends_with("the meter counts `llm_credits`; the functions send `credits` (STRIPE_METER_EVENT_NAME)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_meter_mapping_customers_on_another_key_fails() {
    let stack = deployed("doctor-map").await;
    stack.stripe.set_meter(FakeMeter {
        customer_key: "customer".into(),
        ..stack.stripe.meter()
    });
    let failed = the_failure(&stack, &operator_env(&stack), "stripe.customer_mapping").await;
    assert!(
        failed
            .message
            .contains("on `customer`; the functions send the customer id in `stripe_customer_id`"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn an_inactive_meter_fails() {
    let stack = deployed("doctor-inactive").await;
    stack.stripe.set_meter(FakeMeter {
        active: false,
        ..stack.stripe.meter()
    });
    let failed = the_failure(&stack, &operator_env(&stack), "stripe.meter").await;
    assert!(
        failed.message.contains("mtr_fake is inactive"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_live_key_against_the_test_mode_meter_fails() {
    let stack = deployed("doctor-live").await;
    let live = "sk_live_local_secret_51aa";
    stack.stripe.rotate_secret_key(live);
    stack.secrets.rotate_stripe(live).await.expect("rotate");
    let env = operator_env(&stack);
    let failed = the_failure(&stack, &env, "stripe.meter").await;
    assert!(
        failed
            .message
            .starts_with("meter mtr_fake not found with this live mode key")
            && failed.message.contains("exists in test mode"),
        "{failed:?}"
    );
    let all = checks(&stack, &env).await;
    let key = all.iter().find(|c| c.check == "stripe.key").expect("key");
    assert!(
        key.message.contains("a LIVE mode key"),
        "said aloud: {key:?}"
    );
}

#[tokio::test]
async fn a_langfuse_key_of_another_project_fails() {
    let stack = deployed("doctor-lf").await;
    let secret = "sk-lf-another-project";
    let public = tracemeter_local::harness::LANGFUSE_PUBLIC_KEY;
    stack
        .secrets
        .rotate_langfuse(public, secret)
        .await
        .expect("rotate");
    let failed = the_failure(&stack, &operator_env(&stack), "langfuse.keys").await;
    assert!(
        failed.message.contains("refused the keys")
            && failed.message.contains("LANGFUSE_SECRET_ARN"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_queue_without_a_dead_letter_queue_fails() {
    let stack = deployed("doctor-dlq").await;
    let created = stack
        .sqs
        .create_queue()
        .queue_name(format!("{}-bare", stack.resources.prefix))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "180",
        )
        .send()
        .await
        .expect("queue");
    let mut env = operator_env(&stack);
    env.insert("QUEUE_URL".into(), created.queue_url.expect("url"));
    let failed = the_failure(&stack, &env, "sqs.dlq").await;
    assert!(
        failed.message.contains("has no RedrivePolicy"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_visibility_timeout_under_six_function_timeouts_fails() {
    let options = StackOptions {
        visibility_timeout: Some(60),
        ..StackOptions::default()
    };
    let stack = TestStack::start_with("doctor-vis", options)
        .await
        .expect("stack");
    let failed = the_failure(&stack, &operator_env(&stack), "sqs.visibility_timeout").await;
    assert_eq!(
        failed.message,
        "visibility timeout 60 s; 6 x the process function's 30 s timeout is 180 s"
    );
}

#[tokio::test]
async fn a_table_without_its_stream_fails() {
    let stack = deployed("doctor-stream").await;
    let off = aws_sdk_dynamodb::types::StreamSpecification::builder()
        .stream_enabled(false)
        .build()
        .expect("spec");
    stack
        .dynamo
        .update_table()
        .table_name(&stack.resources.table_name)
        .stream_specification(off)
        .send()
        .await
        .expect("update");
    let failed = the_failure(&stack, &operator_env(&stack), "dynamodb.stream").await;
    assert!(failed.message.starts_with("no stream"), "{failed:?}");
}

#[tokio::test]
async fn a_price_book_without_its_index_warns_until_tracemeter_price_index() {
    let stack = deployed("doctor-prices").await;
    // A table from a release before the index: no index item.
    let key = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    stack
        .dynamo
        .delete_item()
        .table_name(&stack.resources.table_name)
        .key("pk", key("PRICE#default"))
        .key("sk", key("SCOPES"))
        .send()
        .await
        .expect("delete the index");
    let env = operator_env(&stack);
    let price_index = |all: Vec<Check>| {
        let found = all.into_iter().find(|c| c.check == "dynamodb.price_index");
        found.expect("the price index check")
    };
    let warned = price_index(checks(&stack, &env).await);
    assert_eq!(warned.status, Status::Warn, "{warned:?}");
    assert_eq!(
        warned.fix.as_deref(),
        Some("tracemeter price index (once, after the first deploy or an upgrade)")
    );
    use tracemeter::ports::PriceBook;
    stack.ledger.build_index().await.expect("index");
    let ok = price_index(checks(&stack, &env).await);
    assert_eq!(ok.status, Status::Ok, "{ok:?}");
}

#[tokio::test]
async fn the_guides_doctor_and_first_reconcile_pass_on_the_local_stack() {
    let binary = function_binary("tracemeter");
    let stack = deployed("doctor-guide").await;
    let root = stack::repo_root();
    let extracted = tokio::process::Command::new(root.join("dev/guide.py"))
        .arg("local-stack")
        .output()
        .await
        .expect("dev/guide.py");
    assert!(extracted.status.success(), "{extracted:?}");
    let script = String::from_utf8(extracted.stdout).expect("utf-8");
    assert!(script.contains("tracemeter doctor\n"), "{script}");
    let bin = binary.parent().expect("target dir").display().to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let run = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env_clear()
        .env("PATH", path)
        .envs(operator_env(&stack))
        .current_dir(&root)
        .output()
        .await
        .expect("bash");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{script}\n{out}\n{err}");
    assert!(out.contains("doctor: 19 OK, 2 WARN, 0 FAIL\n"), "{out}");
    assert!(out.contains("no drift beyond 0 credits"), "{out}");
}

#[tokio::test]
async fn a_request_budget_over_langfuses_announced_limit_warns() {
    let stack = deployed("doctor-rate").await;
    stack.langfuse.set_rate_limit(Some(20));
    let mut env = operator_env(&stack);
    let rate = |checks: Vec<Check>| {
        checks
            .into_iter()
            .find(|c| c.check == "langfuse.rate_limit")
    };
    env.insert("LANGFUSE_REQUESTS_PER_MINUTE".into(), "30".into());
    let over = rate(checks(&stack, &env).await).expect("checked");
    assert_eq!(over.status, Status::Warn, "{over:?}");
    assert!(
        over.message
            .starts_with("LANGFUSE_REQUESTS_PER_MINUTE=30 is over Langfuse's 20 per minute"),
        "{over:?}"
    );
    env.insert("LANGFUSE_REQUESTS_PER_MINUTE".into(), "20".into());
    let fits = rate(checks(&stack, &env).await).expect("checked");
    assert_eq!(fits.status, Status::Ok, "{fits:?}");
}

#[tokio::test]
async fn the_legacy_api_is_read_when_configured() {
    let stack = deployed("doctor-legacy").await;
    let mut env = operator_env(&stack);
    env.insert("LANGFUSE_API".into(), "legacy".into());
    let all = checks(&stack, &env).await;
    let api = all.iter().find(|c| c.check == "langfuse.api").expect("api");
    assert_eq!(api.status, Status::Ok, "{api:?}");
    assert_eq!(
        api.message,
        "LANGFUSE_API=legacy: GET /api/public/traces answered 200"
    );
}

#[tokio::test]
async fn a_secret_without_the_expected_json_keys_fails() {
    let stack = deployed("doctor-secret").await;
    let raw = r#"{"key": "sk_test_local_secret_9d21"}"#;
    stack.secrets.put_stripe_raw(raw).await.expect("put");
    let failed = the_failure(&stack, &operator_env(&stack), "secrets.stripe").await;
    assert!(
        failed
            .message
            .contains(r#"is not valid: expected JSON {"secret_key": "sk_..."}"#),
        "{failed:?}"
    );
}
