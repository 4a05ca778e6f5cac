//! Counts what ingest enqueues, trace by trace (a wrapper around the real SQS sender), so the
//! `day` scenario can check that no billed trace is enqueued again without new usage.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use tracemeter::domain::message::{MeterMessage, OutgoingMessage, SendFailure};
use tracemeter::ports::QueueSender;

/// Sends through `inner` and counts each trace id sent (failed entries not counted).
pub struct RecordingSender<S> {
    inner: S,
    sent: Mutex<HashMap<String, u32>>,
}

impl<S> RecordingSender<S> {
    /// Records what goes through `inner`.
    pub fn new(inner: S) -> RecordingSender<S> {
        RecordingSender {
            inner,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// How many times each trace id was enqueued.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl<S: QueueSender> QueueSender for RecordingSender<S> {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> tracemeter::Result<Vec<SendFailure>> {
        let failed = self.inner.send_batch(messages).await?;
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        for m in messages
            .iter()
            .filter(|m| !failed.iter().any(|f| f.id == m.id))
        {
            if let Ok(message) = MeterMessage::parse(&m.body) {
                *sent.entry(message.trace_id).or_default() += 1;
            }
        }
        Ok(failed)
    }
}

/// Enqueues beyond what new usage explains: a trace may be enqueued once, and once more per
/// late observation that appeared after it was billed (`late`: late observations by trace).
pub fn beyond_new_usage(counts: &HashMap<String, u32>, late: &HashMap<String, u32>) -> Vec<String> {
    let mut over: Vec<String> = counts
        .iter()
        .filter(|(id, n)| **n > 1 + late.get(*id).copied().unwrap_or(0))
        .map(|(id, n)| format!("{id} ({n}x)"))
        .collect();
    over.sort();
    over
}
