//! The real `process` binary, run as Lambda runs it (against an emulated Runtime API), with
//! an environment that holds nothing but the function's variables and loopback endpoints.

use crate::common::{now, trace};
use chrono::Duration;
use std::path::PathBuf;
use tracemeter::ports::ClaimStore;
use tracemeter_local::harness::TestStack;
use tracemeter_local::runtime_api::RuntimeApi;

/// The `process` binary of this build (built if `cargo test` did not build it).
fn process_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let bin = dir.join("process");
    // Always (re)build, with the same feature unification as `cargo test --workspace` (so
    // nothing is recompiled): `cargo test` builds test targets, not the plain binary, which may be
    // stale. Cargo has released the build lock by the time tests run; this is a no-op when
    // the binary is current.
    {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the process binary");
    }
    bin
}

#[tokio::test]
async fn the_process_binary_meters_a_batch_under_the_lambda_runtime_api() {
    let stack = TestStack::start("binary").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-bin", "cus_bin", 0.004, 0, at));
    let api = RuntimeApi::start().await.expect("runtime api");

    let mut child = tokio::process::Command::new(process_binary())
        // Nothing inherited: no credentials, no profile, no home directory.
        .env_clear()
        .envs(stack.env.iter())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_LAMBDA_RUNTIME_API", api.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "process")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "local")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the process binary");

    // A real SQS event, as the event source mapping delivers it.
    stack.send_traces(&["t-bin"]).await.expect("send");
    let event = stack
        .esm
        .receive(2)
        .await
        .expect("receive")
        .expect("a message");
    let reply = api
        .invoke(
            serde_json::to_value(&event).expect("json"),
            std::time::Duration::from_secs(20),
        )
        .await
        .expect("the function answered")
        .expect("no function error");
    assert_eq!(reply["batchItemFailures"], serde_json::json!([]), "{reply}");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].value, 100);

    // The committed poison fixture: acknowledged (no retry), recorded by message id.
    let poison: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            tracemeter_local::stack::repo_root().join("events/sqs-poison.json"),
        )
        .expect("fixture"),
    )
    .expect("fixture json");
    let reply = api
        .invoke(poison, std::time::Duration::from_secs(20))
        .await
        .expect("the function answered")
        .expect("no function error");
    assert_eq!(reply["batchItemFailures"], serde_json::json!([]), "{reply}");
    let e = stack
        .ledger
        .entry("t-bin")
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(e.billed_credits, 100);

    let _ = child.kill().await;
}
