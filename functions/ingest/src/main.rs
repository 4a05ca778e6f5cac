//! The ingest Lambda's entry point: wiring only.

use chrono::{TimeZone, Utc};
use ingest::{IngestDeps, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use tracemeter::adapters::{
    ingest_store::DynamoIngestStore, langfuse_scan::LangfuseScanner, sqs::SqsSender,
};
use tracemeter::clock::SystemClock;
use tracemeter::config::IngestConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracemeter::telemetry::init();
    let config = IngestConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    let store = DynamoIngestStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.table_name);
    let queue = SqsSender::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url);
    let lister = LangfuseScanner::new(&config)?;
    let deps = IngestDeps {
        config: &config,
        lister: &lister,
        store: &store,
        queue: &queue,
        clock: &SystemClock,
    };
    let deps = &deps;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline = Utc
                .timestamp_millis_opt(i64::try_from(event.context.deadline).unwrap_or(i64::MAX))
                .single()
                .unwrap_or_else(|| Utc::now() + chrono::Duration::seconds(60));
            handle(deps, &event.payload, deadline)
                .await
                .map_err(Error::from)
        },
    ))
    .await
}
