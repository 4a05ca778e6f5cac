//! SQS: sending trace ids to the meter queue, delaying failed messages.

use crate::domain::message::{Deferral, OutgoingMessage, SendFailure};
use crate::error::Result;
use async_trait::async_trait;

/// Delays redelivery of failed messages (SQS `ChangeMessageVisibility`), and defers messages
/// as new ones (`SendMessageBatch` with `DelaySeconds`).
#[async_trait]
pub trait Redelivery: Send + Sync {
    /// Sets each receipt handle's visibility timeout, in seconds.
    async fn delay(&self, items: &[(String, i32)]) -> Result<()>;
    /// Sends each deferral to the queue as a new message; returns the message ids of those
    /// not sent (the caller returns them as failures instead).
    async fn defer(&self, items: &[Deferral]) -> Result<Vec<String>>;
    /// Messages deferred earlier and still waiting for their delay to pass (SQS's
    /// `ApproximateNumberOfMessagesDelayed`): new deferrals queue behind them.
    async fn waiting(&self) -> Result<u64>;
}

/// Sends messages to the meter queue.
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// Sends up to 10 messages in one call; returns the entries that failed. An error means
    /// the whole call failed.
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<SendFailure>>;
}

/// The dead-letter queue: what is in it, and moving it back to the meter queue.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Messages visible and in flight.
    async fn depth(&self) -> Result<(i64, i64)>;
    /// Up to `max` message bodies, left in the queue.
    async fn peek(&self, max: usize) -> Result<Vec<String>>;
    /// Moves up to `max` messages to the meter queue (each sent before it is deleted, so a
    /// crash can only duplicate one, which the ledger makes harmless); how many moved.
    async fn redrive(&self, max: usize) -> Result<usize>;
}
