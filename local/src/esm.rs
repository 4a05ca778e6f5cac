//! The SQS event source mapping, played locally: receive a batch, invoke the function,
//! delete what succeeded, leave what failed for redelivery (visibility timeout, then the
//! dead-letter queue after `maxReceiveCount`), exactly as Lambda's poller does with
//! `ReportBatchItemFailures`.

use anyhow::{Context, Result};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use std::collections::{HashMap, HashSet};
use std::future::Future;

/// One queue polled for one function.
#[derive(Debug, Clone)]
pub struct EventSourceMapping {
    /// SQS client (pointed at the local stack).
    pub sqs: aws_sdk_sqs::Client,
    /// The queue.
    pub queue_url: String,
    /// Its ARN, put in each record as `eventSourceARN`.
    pub queue_arn: String,
    /// Records per invocation (the mapping's `BatchSize`).
    pub batch_size: i32,
    /// Region put in each record.
    pub region: String,
    /// How long a batch may wait for more messages once it has its first (the mapping's
    /// `MaximumBatchingWindowInSeconds`). Zero (tests, `make run`): the batch closes as soon
    /// as a receive finds nothing more visible; the benchmark plays the template's window.
    pub batching_window: std::time::Duration,
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Records handed to the function.
    pub received: usize,
    /// Records deleted (succeeded).
    pub deleted: usize,
    /// Records reported in `batchItemFailures`.
    pub failed: usize,
    /// Whether the invocation as a whole failed (every record comes back).
    pub invocation_failed: bool,
}

/// Converts a received SQS message into the record Lambda delivers.
pub fn to_record(msg: &aws_sdk_sqs::types::Message, queue_arn: &str, region: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = msg.message_id().map(str::to_string);
    record.receipt_handle = msg.receipt_handle().map(str::to_string);
    record.body = msg.body().map(str::to_string);
    record.md5_of_body = msg.md5_of_body().map(str::to_string);
    record.attributes = msg
        .attributes()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect::<HashMap<_, _>>()
        })
        .unwrap_or_default();
    record.message_attributes = msg
        .message_attributes()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(k, v)| {
                    let mut a = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
                    a.string_value = v.string_value().map(str::to_string);
                    a.data_type = Some(v.data_type().to_string());
                    (k.clone(), a)
                })
                .collect::<HashMap<_, _>>()
        })
        .unwrap_or_default();
    record.event_source = Some("aws:sqs".to_string());
    record.event_source_arn = Some(queue_arn.to_string());
    record.aws_region = Some(region.to_string());
    record
}

impl EventSourceMapping {
    /// Receives up to one batch (`BatchSize`, up to 10,000 as the template allows), waiting up
    /// to `wait_seconds` for the first messages. `None` when the queue stayed empty.
    ///
    /// SQS hands out at most 10 messages per `ReceiveMessage`; like Lambda's poller, the
    /// mapping keeps receiving until the batch is full. Lambda also waits up to
    /// `MaximumBatchingWindowInSeconds` for more; locally the batch closes as soon as a
    /// receive finds nothing more visible unless `batching_window` is set (the benchmark).
    ///
    /// moto's long polling spins a CPU core for the whole wait, so this polls with
    /// `WaitTimeSeconds=0` and sleeps on the client side between empty receives, 100 ms at
    /// first and twice as long after each empty one up to 400 ms (an idle poller makes about
    /// 3 calls a second, not 10: moto serves one SQS call at a time).
    pub async fn receive(&self, wait_seconds: i32) -> Result<Option<SqsEvent>> {
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_secs(u64::try_from(wait_seconds).unwrap_or(0));
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let first = self.receive_some(10).await?;
            if !first.is_empty() {
                return Ok(Some(self.fill(first).await?));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(400));
        }
    }

    /// Receives more until the batch holds `BatchSize` records, or nothing more is visible
    /// and the batching window since the first record has passed.
    async fn fill(&self, mut records: Vec<SqsMessage>) -> Result<SqsEvent> {
        let size = usize::try_from(self.batch_size.max(1)).unwrap_or(10);
        let window_ends = std::time::Instant::now() + self.batching_window;
        while records.len() < size {
            let more = self.receive_some((size - records.len()).min(10)).await?;
            if more.is_empty() {
                let now = std::time::Instant::now();
                if now >= window_ends {
                    break;
                }
                let pause = std::time::Duration::from_millis(250).min(window_ends - now);
                tokio::time::sleep(pause).await;
                continue;
            }
            records.extend(more);
        }
        let mut event = SqsEvent::default();
        event.records = records;
        Ok(event)
    }

    /// One `ReceiveMessage` of up to `max` (1..=10) messages, as Lambda records.
    async fn receive_some(&self, max: usize) -> Result<Vec<SqsMessage>> {
        let max = i32::try_from(max)
            .unwrap_or(10)
            .min(self.batch_size)
            .clamp(1, 10);
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .context("ReceiveMessage")?;
        Ok(out
            .messages
            .unwrap_or_default()
            .iter()
            .map(|m| to_record(m, &self.queue_arn, &self.region))
            .collect())
    }

    /// Deletes the records that did not fail; on an invocation error deletes nothing.
    pub async fn complete<E>(
        &self,
        event: &SqsEvent,
        result: &std::result::Result<SqsBatchResponse, E>,
    ) -> Result<PollReport> {
        let mut report = PollReport {
            received: event.records.len(),
            ..PollReport::default()
        };
        let response = match result {
            Ok(r) => r,
            Err(_) => {
                report.invocation_failed = true;
                report.failed = event.records.len();
                return Ok(report);
            }
        };
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let to_delete: Vec<&SqsMessage> = event
            .records
            .iter()
            .filter(|r| !failed.contains(r.message_id.as_deref().unwrap_or_default()))
            .collect();
        report.failed = event.records.len() - to_delete.len();
        for chunk in to_delete.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("d{i}"))
                        .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                        .build()
                        .context("delete entry")
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("DeleteMessageBatch")?;
            report.deleted += out.successful().len();
        }
        Ok(report)
    }

    /// Receives one batch and runs `invoke` on it. `None` when the queue had nothing.
    pub async fn poll<F, Fut, E>(&self, wait_seconds: i32, invoke: F) -> Result<Option<PollReport>>
    where
        F: FnOnce(SqsEvent) -> Fut,
        Fut: Future<Output = std::result::Result<SqsBatchResponse, E>>,
    {
        let Some(event) = self.receive(wait_seconds).await? else {
            return Ok(None);
        };
        let result = invoke(event.clone()).await;
        self.complete(&event, &result).await.map(Some)
    }

    /// Approximate counts of the queue: (visible, not yet visible: in flight or delayed).
    pub async fn depth(&self, queue_url: &str) -> Result<(i64, i64)> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            )
            .send()
            .await
            .context("GetQueueAttributes")?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |name: aws_sdk_sqs::types::QueueAttributeName| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}
