//! SQS: delaying redelivery of failed messages with `ChangeMessageVisibilityBatch`.

use crate::error::{Error, Result};
use crate::ports::Redelivery;
use async_trait::async_trait;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;

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
                .map_err(|e| {
                    Error::transient(
                        "sqs",
                        format!(
                            "ChangeMessageVisibilityBatch: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(&e)
                        ),
                    )
                })?;
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
}
