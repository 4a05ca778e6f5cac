//! `make run`: the whole pipeline on the local stack with a sample workload, then a billing
//! summary. Starts moto (project venv) and the Langfuse and Stripe fakes on loopback, creates
//! the resources of template.yaml, seeds traces, runs the ingest handler as the schedule would,
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
        "[3/5] running the ingest function as the schedule would ({} settled, {} still settling)...",
        seeded.settled.len(),
        seeded.settling
    );
    // The first run reaches back 41 days so that the sample's too-old usage is found (and
    // then refused by the processor, as Stripe would refuse it).
    let ingest = stack.ingest(&[
        ("LANGFUSE_REQUESTS_PER_MINUTE", "1000"),
        ("INGEST_START_LOOKBACK_SECONDS", &(41 * 86_400).to_string()),
    ]);
    let run = ingest.run_with(&stack, &ingest.sqs, 270).await?;
    eprintln!(
        "      ingest: {:?}, {} Langfuse requests, {} traces found, {} enqueued, {} ms",
        run.outcome, run.requests, run.traces_found, run.enqueued, run.elapsed_ms
    );
    if run.enqueued != seeded.settled.len() as u64 {
        anyhow::bail!(
            "ingest enqueued {} traces but {} settled traces were seeded",
            run.enqueued,
            seeded.settled.len()
        );
    }
    eprintln!("[4/5] processing the queue as the SQS event source mapping does...");
    let processing = Instant::now();
    let polls = workload::drain_concurrently(&stack, 5, run.enqueued as usize).await?;
    let secs = processing.elapsed().as_secs_f64();
    eprintln!("[5/5] reading the ledger, budgets and Stripe's received events...");
    let report = summary::collect(&stack).await?;
    println!(
        "{}",
        report.render(&seeded, &run, polls, secs, started.elapsed().as_secs_f64())
    );
    if !report.consistent() {
        anyhow::bail!("the summary is inconsistent: Stripe, ledger and budget totals differ");
    }
    Ok(())
}
