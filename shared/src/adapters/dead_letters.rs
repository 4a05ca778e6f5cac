//! SQS: the dead-letter queue's depth, sample bodies, and a redrive to the meter queue.

use super::sqs::sqs_error;
use crate::error::{Error, Result};
use crate::ports::DeadLetters;
use async_trait::async_trait;
use aws_sdk_sqs::types::{Message, QueueAttributeName};

/// The dead-letter queue and the meter queue it drains into.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    dlq_url: String,
    queue_url: String,
}

impl SqsDeadLetters {
    /// For one dead-letter queue and the meter queue.
    pub fn new(
        client: aws_sdk_sqs::Client,
        dlq_url: impl Into<String>,
        queue_url: impl Into<String>,
    ) -> SqsDeadLetters {
        SqsDeadLetters {
            client,
            dlq_url: dlq_url.into(),
            queue_url: queue_url.into(),
        }
    }

    /// Up to 10 messages, hidden for `visibility` seconds.
    async fn receive(&self, max: usize, visibility: i32) -> Result<Vec<Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| sqs_error(&format!("ReceiveMessage from {}", self.dlq_url), &e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Sends one body to the meter queue, then deletes it from the dead-letter queue.
    async fn move_one(&self, message: &Message) -> Result<()> {
        let (Some(body), Some(handle)) = (message.body(), message.receipt_handle()) else {
            return Err(Error::transient(
                "sqs",
                "a dead letter without body or handle",
            ));
        };
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| sqs_error(&format!("SendMessage to {}", self.queue_url), &e))?;
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| sqs_error(&format!("DeleteMessage from {}", self.dlq_url), &e))?;
        Ok(())
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn depth(&self) -> Result<(i64, i64)> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dlq_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sqs_error(&format!("GetQueueAttributes of {}", self.dlq_url), &e))?;
        let read = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        Ok((
            read(QueueAttributeName::ApproximateNumberOfMessages),
            read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    async fn peek(&self, max: usize) -> Result<Vec<String>> {
        // Visibility 0: the messages stay visible for the processor and a redrive.
        let messages = self.receive(max, 0).await?;
        Ok(messages
            .iter()
            .filter_map(|m| m.body().map(str::to_string))
            .collect())
    }

    async fn redrive(&self, max: usize) -> Result<usize> {
        let mut moved = 0;
        while moved < max {
            let batch = self.receive(max - moved, 30).await?;
            if batch.is_empty() {
                break;
            }
            for message in &batch {
                self.move_one(message).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}
