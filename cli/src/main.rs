//! The `tracemeter` operator command's entry point: wiring only.

use clap::Parser;
use std::process::ExitCode;
use tracemeter::adapters::{
    dead_letters::SqsDeadLetters,
    dynamo::{DynamoLedger, DynamoQuota},
    sqs::SqsSender,
    stripe_events::StripeEvents,
    stripe_reports::StripeReports,
};
use tracemeter::adapters::{ingest_store::DynamoIngestStore, langfuse::LangfuseScanner};
use tracemeter::clock::SystemClock;
use tracemeter::config::{AdminConfig, IngestConfig};
use tracemeter::ports::{DeadLetters, MeterErrorReports, MeterReports};
use tracemeter_cli::args::Command;
use tracemeter_cli::confirm::Terminal;
use tracemeter_cli::{Cli, Deps, execute};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match AdminConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tracemeter: {e}");
            return ExitCode::from(2);
        }
    };
    let aws = aws_config::load_from_env().await;
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(&aws), &config.table_name);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = SqsSender::new(sqs.clone(), &config.queue_url);
    let dlq = config
        .dlq_url
        .as_ref()
        .map(|url| SqsDeadLetters::new(sqs.clone(), url, &config.queue_url));
    let (meter, meter_errors) = match stripe_readers(&config) {
        Ok(readers) => readers,
        Err(e) => {
            eprintln!("tracemeter: {e}");
            return ExitCode::from(2);
        }
    };
    let ingest_config = match &cli.command {
        Command::Backfill(_) => match IngestConfig::from_env() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("tracemeter: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let ingest_parts = match ingest_config
        .as_ref()
        .map(|c| backfill_parts(c, &dynamo).map(|(lister, store)| (c, lister, store)))
    {
        Some(Err(e)) => {
            eprintln!("tracemeter: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(parts)) => Some(parts),
        None => None,
    };
    let ingest_deps = ingest_parts
        .as_ref()
        .map(|(config, lister, store)| ingest::Deps {
            config,
            lister,
            store,
            queue: &queue,
            clock: &SystemClock,
        });
    let deps = Deps {
        ledger: &ledger,
        queue: &queue,
        dead_letters: dlq.as_ref().map(|d| d as &dyn DeadLetters),
        meter: meter.as_ref().map(|m| m as &dyn MeterReports),
        meter_errors: meter_errors.as_ref().map(|m| m as &dyn MeterErrorReports),
        ingest: ingest_deps.as_ref(),
        clock: &SystemClock,
        confirm: &Terminal,
    };
    let code = execute(&cli, &deps, &mut std::io::stdout(), &mut std::io::stderr()).await;
    ExitCode::from(code)
}

/// The backfill's Langfuse scanner, drawing from the deployment's shared request budget, and
/// ingest's store.
fn backfill_parts(
    config: &IngestConfig,
    dynamo: &aws_sdk_dynamodb::Client,
) -> tracemeter::Result<(LangfuseScanner, DynamoIngestStore)> {
    let quota = DynamoQuota::for_limit(
        dynamo.clone(),
        &config.table_name,
        "langfuse",
        config.langfuse.requests,
    );
    Ok((
        LangfuseScanner::new(config)?.with_quota(quota),
        DynamoIngestStore::new(dynamo.clone(), &config.table_name),
    ))
}

/// Stripe's summaries and error reports, when `STRIPE_METER_ID` (and the Stripe variables)
/// are set.
fn stripe_readers(
    config: &AdminConfig,
) -> tracemeter::Result<(Option<StripeReports>, Option<StripeEvents>)> {
    match &config.stripe {
        Some((cfg, meter)) => Ok((
            Some(StripeReports::new(cfg, meter)?),
            Some(StripeEvents::new(cfg)?),
        )),
        None => Ok((None, None)),
    }
}
