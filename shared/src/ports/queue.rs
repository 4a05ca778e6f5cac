//! SQS: sending trace ids to the meter queue, delaying failed messages.

use crate::domain::message::{OutgoingMessage, SendFailure};
use crate::error::Result;
use async_trait::async_trait;

/// Delays redelivery of failed messages (SQS `ChangeMessageVisibility`).
#[async_trait]
pub trait Redelivery: Send + Sync {
    /// Sets each receipt handle's visibility timeout, in seconds.
    async fn delay(&self, items: &[(String, i32)]) -> Result<()>;
}

/// Sends messages to the meter queue.
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// Sends up to 10 messages in one call; returns the entries that failed. An error means
    /// the whole call failed.
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<SendFailure>>;
}
