//! SQS: delaying redelivery of failed messages with `ChangeMessageVisibilityBatch`, deferring
//! messages as new ones with `SendMessageBatch` and `DelaySeconds`, sending meter messages.

use crate::domain::message::{DEFERRALS_ATTRIBUTE, Deferral};
use crate::error::{Error, Result};
use crate::ports::Redelivery;
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};

/// Changes visibility of received messages.
#[derive(Debug, Clone)]
pub struct SqsRedelivery {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRedelivery {
    /// For one queue.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> SqsRedelivery {
        SqsRedelivery {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl Redelivery for SqsRedelivery {
    async fn delay(&self, items: &[(String, i32)]) -> Result<()> {
        let mut failed = Vec::new();
        for chunk in items.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (receipt, secs))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(receipt)
                        .visibility_timeout(*secs)
                        .build()
                        .map_err(|e| Error::transient("sqs", e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", &e))?;
            failed.extend(
                out.failed()
                    .iter()
                    .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or_default())),
            );
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::transient(
                "sqs",
                format!(
                    "ChangeMessageVisibility failed for {} entries: {}",
                    failed.len(),
                    failed.join("; ")
                ),
            ))
        }
    }

    async fn defer(&self, items: &[Deferral]) -> Result<Vec<String>> {
        let mut not_sent = Vec::new();
        for chunk in items.chunks(10) {
            match self.defer_chunk(chunk).await {
                Ok(failed) => not_sent.extend(failed),
                Err(e) => {
                    tracing::warn!(error = %e, "could not defer messages; they return as failures");
                    not_sent.extend(chunk.iter().map(|d| d.message_id.clone()));
                }
            }
        }
        Ok(not_sent)
    }

    async fn waiting(&self) -> Result<u64> {
        let name = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueAttributes", &e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

/// One deferral as a batch entry: the same body, the delay, the deferral count.
fn deferral_entry(i: usize, d: &Deferral) -> Result<SendMessageBatchRequestEntry> {
    let count = MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(d.deferrals.to_string())
        .build()
        .map_err(|e| Error::transient("sqs", e.to_string()))?;
    SendMessageBatchRequestEntry::builder()
        .id(format!("d{i}"))
        .message_body(&d.body)
        .delay_seconds(d.delay_seconds.clamp(0, 900))
        .message_attributes(DEFERRALS_ATTRIBUTE, count)
        .build()
        .map_err(|e| Error::transient("sqs", e.to_string()))
}

impl SqsRedelivery {
    /// Sends up to 10 deferrals; the message ids of those SQS refused.
    async fn defer_chunk(&self, chunk: &[Deferral]) -> Result<Vec<String>> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, d)| deferral_entry(i, d))
            .collect::<Result<Vec<_>>>()?;
        let failed = send_entries(&self.client, &self.queue_url, entries).await?;
        Ok(failed
            .iter()
            .filter_map(|f| f.id().strip_prefix('d')?.parse::<usize>().ok())
            .filter_map(|i| chunk.get(i).map(|d| d.message_id.clone()))
            .collect())
    }
}

/// Sends meter messages with `SendMessageBatch` (ingest).
#[derive(Debug, Clone)]
pub struct SqsSender {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsSender {
    /// For one queue.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> SqsSender {
        SqsSender {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl crate::ports::QueueSender for SqsSender {
    async fn send_batch(
        &self,
        messages: &[crate::domain::message::OutgoingMessage],
    ) -> Result<Vec<crate::domain::message::SendFailure>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if messages.len() > 10 {
            return Err(Error::transient(
                "sqs",
                format!(
                    "SendMessageBatch takes at most 10 entries, got {}",
                    messages.len()
                ),
            ));
        }
        let entries = messages
            .iter()
            .map(|m| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(&m.id)
                    .message_body(&m.body)
                    .build()
                    .map_err(|e| Error::transient("sqs", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let failed = send_entries(&self.client, &self.queue_url, entries).await?;
        Ok(failed
            .iter()
            .map(|f| crate::domain::message::SendFailure {
                id: f.id().to_string(),
                code: f.code().to_string(),
                message: f.message().unwrap_or_default().to_string(),
                sender_fault: f.sender_fault(),
            })
            .collect())
    }
}

/// One `SendMessageBatch` (ingest's sends and the processor's deferrals); the entries SQS
/// refused.
async fn send_entries(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<Vec<aws_sdk_sqs::types::BatchResultErrorEntry>> {
    let out = client
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| sqs_error(&format!("SendMessageBatch to {queue_url}"), &e))?;
    Ok(out.failed)
}

/// A transient error naming the SQS operation and the SDK's whole error chain.
pub(crate) fn sqs_error<E, R>(op: &str, e: &aws_sdk_sqs::error::SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Error::transient(
        "sqs",
        format!("{op}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)),
    )
}
