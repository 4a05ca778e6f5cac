//! Stripe: meter events, and what Stripe aggregated of them.

use crate::domain::meter::{Delivery, MeterEvent};
use crate::domain::meter_errors::MeterErrorReport;
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Sends meter events to Stripe.
#[async_trait]
pub trait MeterSink: Send + Sync {
    /// Sends one event.
    async fn send(&self, event: &MeterEvent) -> Result<Delivery>;

    /// Whether [`MeterSink::send_batch`] sends many events per request (the v2 stream). When
    /// false, events go one per request and one customer's must not overlap (Stripe allows
    /// one concurrent v1 call per customer and meter).
    fn batches(&self) -> bool {
        false
    }

    /// Sends events, one result per event in order. Default: one at a time, in order.
    async fn send_batch(&self, events: &[MeterEvent]) -> Vec<Result<Delivery>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(self.send(e).await);
        }
        out
    }
}

/// What Stripe aggregated (its meter event summaries: eventually consistent).
#[async_trait]
pub trait MeterReports: Send + Sync {
    /// The sum of a customer's meter events with a timestamp in `[start, end)` (both aligned
    /// to minutes, as Stripe requires).
    async fn aggregated(
        &self,
        customer_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64>;
}

/// Stripe's asynchronous meter event errors (its error reports, read as thin events).
#[async_trait]
pub trait MeterErrorReports: Send + Sync {
    /// The error reports created at or after `since`, oldest first.
    async fn error_reports(&self, since: DateTime<Utc>) -> Result<Vec<MeterErrorReport>>;
}
