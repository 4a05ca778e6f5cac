//! The ingest Lambda's entry point: wiring only.

use chrono::Utc;
use ingest::{Deps, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use tracemeter::adapters::{
    credential::Credential,
    dynamo::DynamoQuota,
    ingest_store::{DynamoIngestStore, lease_key},
    langfuse::LangfuseScanner,
    secrets::SecretsManagerSource,
    sqs::SqsSender,
    startup::check_table_and_queue,
};
use tracemeter::clock::SystemClock;
use tracemeter::config::IngestConfig;
use tracemeter::metrics::Metrics;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracemeter::telemetry::init();
    let config = IngestConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let probe = lease_key("start-check");
    check_table_and_queue(&dynamo, &config.table_name, probe, &sqs, &config.queue_url).await?;
    let store = DynamoIngestStore::new(dynamo.clone(), &config.table_name);
    let queue = SqsSender::new(sqs, &config.queue_url);
    let quota = DynamoQuota::for_limit(
        dynamo,
        &config.table_name,
        "langfuse",
        config.langfuse.requests,
    );
    // The Langfuse keys are read from their secret now (cold start), and again after a 401.
    let secrets = SecretsManagerSource::shared(&aws);
    let keys = Credential::load(&config.langfuse.keys, secrets).await?;
    let lister = LangfuseScanner::new(&config, keys)?.with_quota(quota);
    let deps = Deps {
        config: &config,
        lister: &lister,
        store: &store,
        queue: &queue,
        clock: &SystemClock,
    };
    let (deps, metrics) = (&deps, &Metrics::new("ingest")?);
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline =
                tracemeter::clock::invocation_deadline(event.context.deadline, Utc::now());
            let summary = handle(deps, &event.payload, deadline).await?;
            metrics.emit(&summary.metrics(Utc::now()));
            Ok::<_, Error>(summary)
        },
    ))
    .await
}
