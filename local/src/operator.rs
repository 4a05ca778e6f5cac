//! The operator command (`tracemeter`, crate `tracemeter-cli`) on a local stack: the same
//! library entry point as the binary, wired to the stack's adapters, for `make run`'s
//! closing `tracemeter reconcile` and its opening `tracemeter doctor`.

use crate::harness::TestStack;
use anyhow::Result;
use std::collections::HashMap;
use tracemeter::adapters::{
    dead_letters::SqsDeadLetters, sqs::SqsSender, stripe_events::StripeEvents,
    stripe_reports::StripeReports,
};
use tracemeter_cli::confirm::Answer;
use tracemeter_cli::doctor::{Status, examine};
use tracemeter_cli::{Deps, execute, parse};

/// The meter id the Stripe fake answers summaries for (it has one meter).
pub use crate::fakes::stripe::FAKE_METER_ID;

/// Runs `tracemeter <args>` against the stack (changes are never confirmed; no `backfill`);
/// the exit code and what it printed (report, then errors).
pub async fn run(stack: &TestStack, args: &[&str]) -> Result<(u8, String)> {
    let cli = parse(std::iter::once("tracemeter").chain(args.iter().copied()))?;
    let r = &stack.resources;
    let queue = SqsSender::new(stack.sqs.clone(), &r.queue_url);
    let dlq = SqsDeadLetters::new(stack.sqs.clone(), &r.dlq_url, &r.queue_url);
    let meter = StripeReports::new(
        &stack.config.stripe,
        stack.stripe_key.clone(),
        FAKE_METER_ID,
    )?;
    let meter_errors = StripeEvents::new(&stack.config.stripe, stack.stripe_key.clone())?;
    let deps = Deps {
        ledger: &stack.ledger,
        queue: &queue,
        dead_letters: Some(&dlq),
        meter: Some(&meter),
        meter_errors: Some(&meter_errors),
        ingest: None,
        default_budget: &stack.config.default_budget,
        clock: &stack.clock,
        confirm: &Answer(false),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = execute(&cli, &deps, &mut out, &mut err).await;
    out.extend_from_slice(&err);
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}

/// `tracemeter reconcile` for this month and the previous one (a run's usage can reach back
/// across the month's start), printed; an error when either finds drift.
pub async fn reconcile(stack: &TestStack) -> Result<()> {
    let now = tracemeter::clock::Clock::now(&stack.clock);
    let previous = now - chrono::Duration::days(i64::from(chrono::Datelike::day(&now)));
    let mut drift = Vec::new();
    for month in [previous, now].map(|t| t.format("%Y-%m").to_string()) {
        println!("$ tracemeter reconcile --period {month}");
        let (code, text) = run(stack, &["reconcile", "--period", &month]).await?;
        println!("{text}");
        if code != 0 {
            drift.push(month);
        }
    }
    anyhow::ensure!(
        drift.is_empty(),
        "tracemeter reconcile found drift in {}",
        drift.join(", ")
    );
    Ok(())
}

/// The variables an operator of the stack has: the functions', the meter (the fake's, or
/// for the real Stripe `STRIPE_METER_ID` of this process, when set) and the DLQ.
pub fn operator_env(stack: &TestStack) -> HashMap<String, String> {
    let mut env = stack.env.clone();
    let real_meter = std::env::var("STRIPE_METER_ID").ok();
    let fake = stack.config.stripe.api_base == stack.stripe.base_url();
    let meter = match fake {
        true => Some(stack.stripe.meter().id),
        false => real_meter,
    };
    if let Some(id) = meter {
        env.insert("STRIPE_METER_ID".into(), id);
    }
    env.insert("DLQ_URL".into(), stack.resources.dlq_url.clone());
    env
}

/// `tracemeter doctor` against the stack (moto directly: the run's AWS figures leave it
/// out), printed briefly: the counts and every check that is not OK. The checks that
/// failed, or none.
pub async fn doctor(stack: &TestStack) -> Result<Vec<String>> {
    let env = operator_env(stack);
    let sdk = crate::stack::sdk_config(&stack.endpoint).await;
    let report = examine(&|name| env.get(name).cloned(), &sdk).await;
    let count = |s| report.count(s);
    eprintln!(
        "      tracemeter doctor: {} OK, {} WARN, {} FAIL",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    );
    let mut failed = Vec::new();
    for c in report.checks.iter().filter(|c| c.status != Status::Ok) {
        eprintln!("        {:?} {}: {}", c.status, c.check, c.message);
        if c.status == Status::Fail {
            failed.push(format!("{}: {}", c.check, c.message));
        }
    }
    Ok(failed)
}
