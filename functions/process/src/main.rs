//! The processing Lambda's entry point: wiring only.

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use process::{Deps, handle};
use std::sync::Arc;
use tracemeter::adapters::{
    credential::Credential,
    dynamo::{DynamoLedger, DynamoQuota, trace_key},
    langfuse::LangfuseClient,
    ledger_cache::{LOOKUP_CACHE_TTL, LedgerCache},
    price_cache::{PRICE_CACHE_TTL, PriceCache},
    secrets::SecretsManagerSource,
    sqs::SqsRedelivery,
    startup::check_table_and_queue,
    stripe::StripeClient,
};
use tracemeter::clock::SystemClock;
use tracemeter::config::ProcessConfig;
use tracemeter::metrics::Metrics;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracemeter::telemetry::init();
    let config = ProcessConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let probe = trace_key("tracemeter-start-check");
    check_table_and_queue(&dynamo, &config.table_name, probe, &sqs, &config.queue_url).await?;
    let ledger = DynamoLedger::new(dynamo.clone(), &config.table_name);
    let redelivery = SqsRedelivery::new(sqs, &config.queue_url);
    let quota = DynamoQuota::for_limit(
        dynamo,
        &config.table_name,
        "langfuse",
        config.langfuse.requests,
    );
    // The keys are read from their secrets now (cold start), and again after a 401.
    let secrets = SecretsManagerSource::shared(&aws);
    let langfuse_keys = Credential::load(&config.langfuse.keys, secrets.clone()).await?;
    let stripe_key = Credential::load(&config.stripe.key, secrets).await?;
    let usage = LangfuseClient::new(&config.langfuse, langfuse_keys)?.with_quota(quota);
    let meter = StripeClient::new(&config.stripe, stripe_key)?;
    // Price versions, read again after PRICE_CACHE_TTL (or for usage newer than the copy).
    let prices = PriceCache::new(ledger.clone(), Arc::new(SystemClock), PRICE_CACHE_TTL);
    // Budget policies and user mappings, read again after LOOKUP_CACHE_TTL; budget events
    // known to exist are not put again.
    let ledger = LedgerCache::new(ledger, Arc::new(SystemClock), LOOKUP_CACHE_TTL);
    let deps = Deps {
        config: &config,
        usage: &usage,
        meter: &meter,
        ledger: &ledger,
        prices: &prices,
        redelivery: &redelivery,
        clock: &SystemClock,
    };
    let (deps, metrics) = (&deps, &Metrics::new("process")?);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = tracemeter::clock::invocation_deadline(event.context.deadline, Utc::now());
        let handled = handle(deps, event.payload, deadline).await;
        metrics.emit(&handled.metrics());
        Ok::<_, Error>(handled.response)
    }))
    .await
}
