//! The `tracemeter` operator command's entry point: wiring only.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use tracemeter::adapters::{credential::Credential, secrets::SecretsManagerSource};
use tracemeter::adapters::{
    dead_letters::SqsDeadLetters,
    dynamo::{DynamoLedger, DynamoQuota},
    sqs::SqsSender,
    stripe_events::StripeEvents,
    stripe_reports::StripeReports,
};
use tracemeter::adapters::{ingest_store::DynamoIngestStore, langfuse::LangfuseScanner};
use tracemeter::clock::SystemClock;
use tracemeter::config::{AdminConfig, IngestConfig, StripeConfig};
use tracemeter::ports::SecretSource;
use tracemeter::ports::{DeadLetters, MeterErrorReports, MeterReports};
use tracemeter_cli::args::Command;
use tracemeter_cli::confirm::Terminal;
use tracemeter_cli::output::escape;
use tracemeter_cli::{Cli, CliError, Deps, doctor, execute};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // doctor reads its variables itself: a missing one is one of its FAIL lines.
    if let Command::Doctor = cli.command {
        let aws = aws_config::load_from_env().await;
        let lookup = |name: &str| std::env::var(name).ok();
        let code = doctor(&lookup, &aws, cli.json, &mut std::io::stdout()).await;
        return ExitCode::from(code);
    }
    match run(&cli).await {
        Ok(code) => ExitCode::from(code),
        // A configuration error exits 2 naming the variable; an outage of a service the verb
        // needs (Secrets Manager included) exits 1 naming the service and the resource.
        Err(e) => {
            eprintln!("tracemeter: {}", escape(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Whether the verb calls Stripe (and so reads Stripe's key).
fn calls_stripe(command: &Command) -> bool {
    matches!(command, Command::Reconcile(_) | Command::StripeErrors(_))
}

/// Wires what the verb uses (the Stripe key only for verbs that call Stripe, the Langfuse
/// keys only for `backfill`) and runs it; its exit code.
async fn run(cli: &Cli) -> Result<u8, CliError> {
    let config = AdminConfig::from_env(calls_stripe(&cli.command))?;
    let aws = aws_config::load_from_env().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let ledger = DynamoLedger::new(dynamo.clone(), &config.table_name);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = SqsSender::new(sqs.clone(), &config.queue_url);
    let dlq = config
        .dlq_url
        .as_ref()
        .map(|url| SqsDeadLetters::new(sqs.clone(), url, &config.queue_url));
    let secrets = SecretsManagerSource::shared(&aws);
    let (meter, meter_errors) = stripe_readers(config.stripe.as_ref(), secrets.clone()).await?;
    let ingest_config = match &cli.command {
        Command::Backfill(_) => Some(IngestConfig::from_env()?),
        _ => None,
    };
    let lister = scanner(ingest_config.as_ref(), secrets, &dynamo).await?;
    let ingest_parts = ingest_config.as_ref().zip(lister).map(|(c, lister)| {
        let store = DynamoIngestStore::new(dynamo.clone(), &c.table_name);
        (c, lister, store)
    });
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
        default_budget: &config.default_budget,
        clock: &SystemClock,
        confirm: &Terminal,
    };
    Ok(execute(cli, &deps, &mut std::io::stdout(), &mut std::io::stderr()).await)
}

/// Stripe's summaries and error reports (when `STRIPE_METER_ID` and the Stripe variables
/// are set), the key read from its secret (or `STRIPE_SECRET_KEY` in development).
async fn stripe_readers(
    stripe: Option<&(StripeConfig, String)>,
    secrets: Arc<dyn SecretSource>,
) -> tracemeter::Result<(Option<StripeReports>, Option<StripeEvents>)> {
    let Some((cfg, meter)) = stripe else {
        return Ok((None, None));
    };
    let key = Credential::load(&cfg.key, secrets).await?;
    Ok((
        Some(StripeReports::new(cfg, key.clone(), meter)?),
        Some(StripeEvents::new(cfg, key)?),
    ))
}

/// The Langfuse scanner of `backfill` (when needed), its keys read from their secret,
/// drawing from the deployment's shared request budget.
async fn scanner(
    cfg: Option<&IngestConfig>,
    secrets: Arc<dyn SecretSource>,
    dynamo: &aws_sdk_dynamodb::Client,
) -> tracemeter::Result<Option<LangfuseScanner>> {
    let Some(cfg) = cfg else {
        return Ok(None);
    };
    let keys = Credential::load(&cfg.langfuse.keys, secrets).await?;
    let quota = DynamoQuota::for_limit(
        dynamo.clone(),
        &cfg.table_name,
        "langfuse",
        cfg.langfuse.requests,
    );
    Ok(Some(LangfuseScanner::new(cfg, keys)?.with_quota(quota)))
}
