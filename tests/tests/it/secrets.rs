//! Secrets at run time: the functions get only the secrets' ARNs and read the keys from
//! Secrets Manager (moto's) at cold start; a rotated key is picked up after one 401, without
//! a restart; no key shows in any variable or output line.

use crate::common::{function_binary, now, trace};
use base64::Engine;
use chrono::Duration;
use tracemeter::ports::{ClaimStore, UsageSource};
use tracemeter_local::counting_proxy::CountingProxy;
use tracemeter_local::fakes::RecordedRequest;
use tracemeter_local::function::Function;
use tracemeter_local::harness::{
    LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, STRIPE_SECRET_KEY, StackOptions, TestStack,
};
use tracemeter_local::stack::Moto;

const ROTATED_STRIPE_KEY: &str = "sk_test_rotated_5b7e";
const ROTATED_LANGFUSE_KEY: &str = "sk-lf-rotated-c41d";

/// A stack whose functions' AWS calls go through a counting proxy in front of moto.
async fn counted_stack(label: &str, options: StackOptions) -> (CountingProxy, TestStack) {
    let moto = Moto::try_shared().expect("moto");
    let proxy = CountingProxy::start(moto.endpoint()).await.expect("proxy");
    let options = StackOptions {
        aws_endpoint: Some(proxy.url()),
        ..options
    };
    let stack = TestStack::start_with(label, options).await.expect("stack");
    (proxy, stack)
}

/// GetSecretValue calls the proxy saw.
fn secret_reads(proxy: &CountingProxy) -> u64 {
    proxy
        .counts()
        .get("secretsmanager.GetSecretValue")
        .map_or(0, |c| c.calls)
}

fn unauthorized(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests.iter().filter(|r| r.status == 401).collect()
}

/// Every key of the test, and Langfuse's Basic credentials as they travel.
fn all_keys() -> Vec<String> {
    let basic = |sk: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{LANGFUSE_PUBLIC_KEY}:{sk}"))
    };
    vec![
        STRIPE_SECRET_KEY.into(),
        ROTATED_STRIPE_KEY.into(),
        LANGFUSE_SECRET_KEY.into(),
        ROTATED_LANGFUSE_KEY.into(),
        basic(LANGFUSE_SECRET_KEY),
        basic(ROTATED_LANGFUSE_KEY),
    ]
}

#[tokio::test]
async fn the_functions_get_secret_arns_and_no_key() {
    let (_proxy, stack) = counted_stack("secret-env", StackOptions::default()).await;
    for name in ["LANGFUSE_SECRET_ARN", "STRIPE_SECRET_ARN"] {
        let arn = &stack.env[name];
        assert!(
            arn.starts_with("arn:aws:secretsmanager:us-east-1:"),
            "{name}={arn}"
        );
    }
    for name in [
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
        "STRIPE_SECRET_KEY",
    ] {
        assert!(
            !stack.env.contains_key(name),
            "{name} is in the function env"
        );
    }
    for (name, value) in &stack.env {
        for key in all_keys() {
            assert!(!value.contains(&key), "{name} holds a key");
        }
    }
}

/// The real process binary meters a batch with key A; the key is rotated (secret and Stripe)
/// and the same process meters the next batch after exactly one 401 and one re-read of the
/// secret; its output holds no key.
#[tokio::test]
async fn the_process_binary_picks_up_a_rotated_stripe_key_after_one_401() {
    // v1: each event is a request with the secret key (the stream's session is the next test).
    let options = StackOptions::default()
        .var("RUST_LOG", "debug")
        .var("STRIPE_API_MODE", "v1");
    let (proxy, stack) = counted_stack("secret-rotate", options).await;
    let at = now() - Duration::hours(1);
    for (id, customer) in [("t-key-a", "cus_key_a"), ("t-key-b", "cus_key_b")] {
        stack.langfuse.add_trace(trace(id, customer, 0.004, 0, at));
    }
    let mut process = Function::spawn("process", &function_binary("process"), &stack.env, 128)
        .await
        .expect("spawn the process binary");
    meter_one(&stack, &mut process, "t-key-a").await;
    assert!(unauthorized(&stack.stripe.requests()).is_empty());
    assert_eq!(
        secret_reads(&proxy),
        4,
        "cold starts: ours and the binary's, 2 secrets each"
    );

    proxy.reset();
    stack
        .secrets
        .rotate_stripe(ROTATED_STRIPE_KEY)
        .await
        .expect("rotate");
    stack.stripe.rotate_secret_key(ROTATED_STRIPE_KEY);
    meter_one(&stack, &mut process, "t-key-b").await;

    let requests = stack.stripe.requests();
    let refused = unauthorized(&requests);
    assert_eq!(refused.len(), 1, "exactly one 401: {refused:?}");
    assert_eq!(secret_reads(&proxy), 1, "one re-read of the secret");
    let tries: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| r.path == "/v1/billing/meter_events" && r.body.contains("t-key-b"))
        .collect();
    let statuses: Vec<u16> = tries.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 200], "the same request, resent once");
    assert_eq!(
        tries[0].header("idempotency-key"),
        tries[1].header("idempotency-key")
    );
    let billed: Vec<_> = stack
        .stripe
        .events()
        .into_iter()
        .map(|e| e.identifier)
        .collect();
    assert_eq!(billed.len(), 2, "each trace billed once: {billed:?}");
    let entry = stack
        .ledger
        .entry("t-key-b")
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(entry.billed_credits, 100);

    let output = [process.stdout_lines(), process.stderr_lines()].concat();
    assert!(!output.is_empty(), "the binary logged at debug");
    for line in &output {
        for key in all_keys() {
            assert!(
                !line.contains(&key),
                "a key in the function's output: {line}"
            );
        }
    }
}

/// Sends one trace, receives it as the event source mapping would and invokes `process`.
async fn meter_one(stack: &TestStack, process: &mut Function, trace_id: &str) {
    stack.send_traces(&[trace_id]).await.expect("send");
    let event = stack
        .esm
        .receive(5)
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
}

/// Concurrent 401s (a batch of messages metered at once) re-read the secret once.
#[tokio::test]
async fn concurrent_401s_re_read_the_stripe_secret_once() {
    let (proxy, stack) = counted_stack("secret-burst", StackOptions::default()).await;
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..6).map(|i| format!("t-burst-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(id, &format!("cus_burst_{i}"), 0.004, 0, at));
    }
    stack
        .secrets
        .rotate_stripe(ROTATED_STRIPE_KEY)
        .await
        .expect("rotate");
    stack.stripe.rotate_secret_key(ROTATED_STRIPE_KEY);
    proxy.reset();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(10).await.expect("drain");
    assert_eq!(
        secret_reads(&proxy),
        1,
        "one re-read for every 401 of the batch"
    );
    let refused = unauthorized(&stack.stripe.requests()).len();
    assert!((1..=ids.len()).contains(&refused), "{refused} 401s");
    let events = stack.stripe.events();
    assert_eq!(events.len(), ids.len(), "each billed once: {events:?}");
    assert_eq!(stack.dlq_depth().await.expect("dlq"), 0);
}

/// The v2 meter event stream: its session is created with the secret key, so a rotated key
/// is re-read when the next session is refused; the events are billed once.
#[tokio::test]
async fn the_v2_stream_session_uses_the_rotated_key() {
    let options = StackOptions::default().var("STRIPE_API_MODE", "v2_stream");
    let (proxy, stack) = counted_stack("secret-stream", options).await;
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-stream", "cus_stream", 0.004, 0, at));
    stack
        .secrets
        .rotate_stripe(ROTATED_STRIPE_KEY)
        .await
        .expect("rotate");
    stack.stripe.rotate_secret_key(ROTATED_STRIPE_KEY);
    proxy.reset();
    stack.send_traces(&["t-stream"]).await.expect("send");
    stack.drain(10).await.expect("drain");
    let requests = stack.stripe.requests();
    let sessions: Vec<u16> = requests
        .iter()
        .filter(|r| r.path == "/v2/billing/meter_event_session")
        .map(|r| r.status)
        .collect();
    assert_eq!(sessions, [401, 200], "the session request, resent once");
    assert_eq!(secret_reads(&proxy), 1);
    assert_eq!(stack.stripe.sessions_created(), 1);
    assert_eq!(stack.stripe.events().len(), 1);
}

/// Langfuse: a rotated key pair is used after one 401; a key the secret does not hold is an
/// error naming the secret by ARN, after one re-read, and never showing a key.
#[tokio::test]
async fn langfuse_keys_are_re_read_after_a_401_and_a_stale_secret_is_named() {
    let (proxy, stack) = counted_stack("secret-langfuse", StackOptions::default()).await;
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-lf", "cus_lf", 0.004, 0, at));
    proxy.reset();
    stack
        .secrets
        .rotate_langfuse(LANGFUSE_PUBLIC_KEY, ROTATED_LANGFUSE_KEY)
        .await
        .expect("rotate");
    stack
        .langfuse
        .rotate_keys(LANGFUSE_PUBLIC_KEY, ROTATED_LANGFUSE_KEY);
    let usage = stack
        .langfuse_client
        .trace_usage("t-lf")
        .await
        .expect("usage");
    assert!(usage.is_some());
    assert_eq!(unauthorized(&stack.langfuse.requests()).len(), 1);
    assert_eq!(secret_reads(&proxy), 1);
    assert_eq!(stack.langfuse_keys.current().generation, 2);

    // Langfuse now wants a key the secret does not hold: one re-read, then an error.
    stack
        .langfuse
        .rotate_keys(LANGFUSE_PUBLIC_KEY, "sk-lf-elsewhere");
    let err = stack
        .langfuse_client
        .trace_usage("t-lf")
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains(&stack.secrets.langfuse_arn), "{err}");
    assert!(
        err.contains("LANGFUSE_SECRET_ARN") && err.contains("401"),
        "{err}"
    );
    for key in all_keys() {
        assert!(!err.contains(&key), "{err}");
    }
    assert_eq!(
        secret_reads(&proxy),
        2,
        "the unchanged secret was read once more"
    );
    // Within the cool-down, further 401s do not read the unchanged secret again.
    let again = stack.langfuse_client.trace_usage("t-lf").await;
    assert!(again.is_err());
    assert_eq!(secret_reads(&proxy), 2);
    assert_eq!(unauthorized(&stack.langfuse.requests()).len(), 3);
}
