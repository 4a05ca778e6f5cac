//! [`MemoryQueue`]: SQS visibility changes, sends and deferrals, recorded.

use super::lock;
use crate::domain::message::{Deferral, OutgoingMessage, SendFailure};
use crate::error::{Error, Result};
use crate::ports::{QueueSender, Redelivery};
use async_trait::async_trait;
use std::sync::Mutex;

/// SendMessageBatch takes at most 10 entries.
const MAX_BATCH: usize = 10;

/// The meter queue: what was sent, and each visibility change.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sent: Vec<OutgoingMessage>,
    delays: Vec<(String, i32)>,
    deferred: Vec<Deferral>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> MemoryQueue {
        MemoryQueue::default()
    }

    /// Every message sent, in order.
    pub fn sent(&self) -> Vec<OutgoingMessage> {
        lock(&self.state).sent.clone()
    }

    /// Every visibility change (receipt handle, seconds), in order.
    pub fn delays(&self) -> Vec<(String, i32)> {
        lock(&self.state).delays.clone()
    }

    /// Every message deferred (sent again with a delay), in order.
    pub fn deferred(&self) -> Vec<Deferral> {
        lock(&self.state).deferred.clone()
    }
}

#[async_trait]
impl Redelivery for MemoryQueue {
    async fn delay(&self, items: &[(String, i32)]) -> Result<()> {
        lock(&self.state).delays.extend_from_slice(items);
        Ok(())
    }

    async fn defer(&self, items: &[Deferral]) -> Result<Vec<String>> {
        lock(&self.state).deferred.extend_from_slice(items);
        Ok(Vec::new())
    }

    /// Every message deferred so far still waits (nothing here takes them back).
    async fn waiting(&self) -> Result<u64> {
        Ok(lock(&self.state).deferred.len() as u64)
    }
}

#[async_trait]
impl QueueSender for MemoryQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<SendFailure>> {
        if messages.len() > MAX_BATCH {
            // As the adapter refuses it before calling SQS.
            return Err(Error::transient(
                "sqs",
                format!(
                    "SendMessageBatch takes at most {MAX_BATCH} entries, got {}",
                    messages.len()
                ),
            ));
        }
        lock(&self.state).sent.extend_from_slice(messages);
        Ok(Vec::new())
    }
}
