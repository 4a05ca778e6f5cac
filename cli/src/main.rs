//! The `tracemeter` operator command's entry point: wiring only.

use clap::Parser;
use std::process::ExitCode;
use tracemeter::adapters::{
    dead_letters::SqsDeadLetters, dynamo::DynamoLedger, sqs::SqsSender,
    stripe_reports::StripeReports,
};
use tracemeter::clock::SystemClock;
use tracemeter::config::AdminConfig;
use tracemeter::ports::{DeadLetters, MeterReports};
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
    let meter = match config
        .stripe
        .as_ref()
        .map(|(cfg, meter)| StripeReports::new(cfg, meter))
    {
        Some(Err(e)) => {
            eprintln!("tracemeter: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(m)) => Some(m),
        None => None,
    };
    let deps = Deps {
        ledger: &ledger,
        queue: &queue,
        dead_letters: dlq.as_ref().map(|d| d as &dyn DeadLetters),
        meter: meter.as_ref().map(|m| m as &dyn MeterReports),
        clock: &SystemClock,
        confirm: &Terminal,
    };
    let code = execute(&cli, &deps, &mut std::io::stdout(), &mut std::io::stderr()).await;
    ExitCode::from(code)
}
