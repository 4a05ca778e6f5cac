//! `make run`: the whole pipeline on the local stack with a sample workload, then a billing
//! summary. Starts moto (project venv) and the Langfuse and Stripe fakes on loopback, creates
//! the resources of template.yaml, seeds traces, enqueues the settled ones as ingest would,
//! drives the processing function from the queue as the SQS event source mapping does, and
//! prints what was billed. Everything it starts stops when it exits.

use anyhow::Result;
use std::time::Instant;
use tracemeter_tests::harness::{StackOptions, TestStack};
use tracemeter_tests::{summary, workload};

#[tokio::main]
async fn main() -> Result<()> {
    let traces: usize = std::env::var("TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let started = Instant::now();
    eprintln!("[1/5] starting the local stack (moto on 127.0.0.1, Langfuse and Stripe fakes)...");
    let options = StackOptions {
        visibility_timeout: Some(60),
        ..StackOptions::default()
    }
    .var("RETRY_BASE_SECONDS", 1)
    .var("RETRY_MAX_SECONDS", 5)
    .var("LANGFUSE_SCORE_ENABLED", "true");
    let stack = TestStack::start_with("local", options).await?;
    eprintln!(
        "      moto {}  table {}  queue {}",
        stack.endpoint, stack.resources.table_name, stack.resources.queue_url
    );
    eprintln!("[2/5] seeding {traces} sample traces, budgets and user mappings...");
    let seeded = workload::seed(&stack, traces, 7).await?;
    eprintln!(
        "[3/5] enqueueing {} settled traces (ingest's job; {} still settling)...",
        seeded.settled.len(),
        seeded.settling
    );
    stack
        .send_traces(
            &seeded
                .settled
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await?;
    eprintln!("[4/5] processing the queue as the SQS event source mapping does...");
    let processing = Instant::now();
    let polls = workload::drain_concurrently(&stack, 5, seeded.settled.len()).await?;
    let secs = processing.elapsed().as_secs_f64();
    eprintln!("[5/5] reading the ledger, budgets and Stripe's received events...");
    let report = summary::collect(&stack).await?;
    println!(
        "{}",
        report.render(&seeded, polls, secs, started.elapsed().as_secs_f64())
    );
    if !report.consistent() {
        anyhow::bail!("the summary is inconsistent: Stripe, ledger and budget totals differ");
    }
    Ok(())
}
