//! `make serve`: the local stack kept up for `cargo lambda watch` / `invoke`.

use crate::fakes::langfuse::{FakeObservation, FakeTrace};
use crate::harness::{StackOptions, TestStack};
use anyhow::Result;
use chrono::Utc;
use std::collections::BTreeMap;
use std::path::Path;

/// The trace ids that `events/sqs-batch.json` and `events/sqs-duplicate.json` name.
pub const FIXTURE_TRACES: [&str; 2] = ["trace-001", "trace-002"];

/// Keeps the local stack up for `cargo lambda watch` / `invoke`: seeds the fixtures' traces
/// (settled, billable), writes the functions' environment to `env_file` (`NAME=value` lines,
/// loopback only; the keys as secret ARNs in moto's Secrets Manager, never the keys), and waits for Ctrl-C / SIGTERM; then prints what the Stripe fake
/// received and stops everything.
pub async fn serve(env_file: &Path) -> Result<()> {
    let stack = TestStack::start_with(
        "serve",
        StackOptions {
            visibility_timeout: Some(30),
            ..StackOptions::default()
        },
    )
    .await?;
    let at = Utc::now() - chrono::Duration::hours(1);
    for (i, id) in FIXTURE_TRACES.iter().enumerate() {
        stack.langfuse.add_trace(
            FakeTrace::new(*id, at + chrono::Duration::seconds(i as i64))
                .meta("stripeCustomerId", "cus_local")
                .observation(FakeObservation::generation(
                    format!("{id}-gen"),
                    *id,
                    at,
                    at + chrono::Duration::seconds(2),
                    "gpt-4o-mini",
                    1_200,
                    300,
                    0.004,
                )),
        );
    }
    let mut env: BTreeMap<String, String> = stack.env.clone().into_iter().collect();
    env.insert("LANGFUSE_REQUESTS_PER_MINUTE".into(), "1000".into());
    env.insert("INGEST_TIME_BUDGET_MARGIN_SECONDS".into(), "2".into());
    env.insert("RUST_LOG".into(), "info".into());
    // For the operator command: `set -a; . <env file>; set +a; tracemeter failures list`.
    env.insert("DLQ_URL".into(), stack.resources.dlq_url.clone());
    env.insert(
        "STRIPE_METER_ID".into(),
        crate::operator::FAKE_METER_ID.into(),
    );
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    if let Some(dir) = env_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(env_file, text)?;
    println!(
        "local stack ready: moto {}, Langfuse fake {}, Stripe fake {}; environment in {}",
        stack.endpoint,
        stack.langfuse.base_url(),
        stack.stripe.base_url(),
        env_file.display()
    );
    println!("seeded traces: {}", FIXTURE_TRACES.join(", "));
    println!(
        "secrets (moto Secrets Manager; for env.local.json): LANGFUSE_SECRET_ARN={} STRIPE_SECRET_ARN={}",
        stack.secrets.langfuse_arn, stack.secrets.stripe_arn
    );
    println!(
        "operator command: set -a; . {}; set +a; cargo run -q -p tracemeter-cli -- reconcile --period {}",
        env_file.display(),
        Utc::now().format("%Y-%m")
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let totals = stack.stripe.totals_by_customer();
    println!(
        "stripe fake received {} meter events; credits by customer: {totals:?}",
        stack.stripe.events().len()
    );
    let _ = std::fs::remove_file(env_file);
    Ok(())
}
