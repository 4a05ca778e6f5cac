//! The cold-start check that a function's table and queue exist: one cheap call each (a
//! `GetItem` of a key the role may read, `GetQueueAttributes` of the queue's ARN). A table or
//! queue that does not exist stops the function at start, naming the variable and the name;
//! any other answer (throttling, a network hiccup) is logged and left to the normal path,
//! which retries.

use super::dynamo::{key_item, sdk_error};
use super::sqs::sqs_error;
use crate::error::{Error, Result};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;

/// The codes SQS answers for a queue that does not exist (query and JSON protocols).
const NO_QUEUE: [&str; 2] = [
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];

/// Checks `TABLE_NAME` (reading `probe`, a key in an item family the role may read) and
/// `QUEUE_URL`.
pub async fn check_table_and_queue(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    probe: (String, String),
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<()> {
    let read = dynamo
        .get_item()
        .table_name(table)
        .set_key(Some(key_item(probe)))
        .send()
        .await;
    match read {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            return Err(Error::Config(format!(
                "TABLE_NAME={table:?}: no such DynamoDB table (GetItem answered ResourceNotFoundException); check the table's name and region"
            )));
        }
        Err(e) => {
            tracing::warn!(table, error = %sdk_error("GetItem", &e), "could not check the table at start")
        }
    }
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await;
    match attributes {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| NO_QUEUE.contains(&c)) => Err(Error::Config(format!(
            "QUEUE_URL={queue_url:?}: no such SQS queue (GetQueueAttributes answered {}); check the queue's URL",
            e.code().unwrap_or_default()
        ))),
        Err(e) => {
            tracing::warn!(queue_url, error = %sqs_error("GetQueueAttributes", &e), "could not check the queue at start");
            Ok(())
        }
    }
}
