//! The processing Lambda: meters each SQS message (one trace id) exactly once.
//!
//! [`handle`] parses the batch, runs it through its phases and answers SQS. The phases, one
//! module each, in the order a batch meets them:
//! 1. [`read`]: read each trace's ledger entry; take over an interrupted claim whose lease
//!    expired; otherwise read the usage from Langfuse and [`price`] it (credits, customer,
//!    Stripe's time window, budget period).
//! 2. [`claim`]: one transaction per customer and budget period claims the new revisions
//!    (ledger entries + ONE budget counter update), sharing a hard limit in trace order.
//! 3. [`send`]: the claimed events go to Stripe (v1: one request each, one customer's one
//!    after the other; v2 stream: as few requests as possible).
//! 4. [`finish`]: ONE receipt write records every delivery; [`budget`] alerts; optional
//!    Langfuse scores.
//!
//! [`respond`] returns the messages to retry with their visibility timeout. A crash between
//! any two steps is safe: the message comes back, the ledger says where it stopped, and that
//! step is resumed, never repeated. The rules (limit sharing, identifiers, Stripe's window,
//! customer order, retry delays) are plain functions in `tracemeter::domain`.

mod batch;
mod book;
mod budget;
mod claim;
mod failure;
mod finish;
mod invocation;
mod outcome;
mod price;
mod read;
mod respond;
mod send;

pub use outcome::{Outcome, Tally};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use invocation::Invocation;
use std::time::{Duration, Instant};
use tracemeter::clock::Clock;
use tracemeter::config::ProcessConfig;
use tracemeter::metrics::Metric;
use tracemeter::ports::{Ledger, MeterSink, PriceBook, Redelivery, UsageSource};

/// Everything the handler needs, built once per cold start.
pub struct Deps<'a> {
    /// Configuration.
    pub config: &'a ProcessConfig,
    /// Langfuse.
    pub usage: &'a dyn UsageSource,
    /// Stripe.
    pub meter: &'a dyn MeterSink,
    /// DynamoDB ledger and budgets.
    pub ledger: &'a dyn Ledger,
    /// The price book (in the ledger table; cached across invocations in production).
    pub prices: &'a dyn PriceBook,
    /// SQS visibility changes.
    pub redelivery: &'a dyn Redelivery,
    /// Time.
    pub clock: &'a dyn Clock,
}

impl Deps<'_> {
    /// Messages (or customers, or receipts) worked on at once.
    fn concurrency(&self) -> usize {
        self.config.process.concurrency.max(1)
    }
}

/// What an invocation did: the answer to SQS and its tally.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The messages to retry (batch item failures).
    pub response: SqsBatchResponse,
    /// The counts, for the summary line and the metrics.
    pub tally: Tally,
    /// How long the batch took.
    pub duration: Duration,
}

impl Handled {
    /// The invocation's CloudWatch metrics.
    pub fn metrics(&self) -> Vec<Metric> {
        self.tally.metrics(self.duration)
    }
}

/// Handles one SQS batch: the messages to retry go back in the response, each with its
/// visibility timeout set. Lambda retries nothing else; a timeout or crash returns the whole
/// batch, and the ledger makes that safe.
pub async fn handle(deps: &Deps<'_>, event: SqsEvent, deadline: DateTime<Utc>) -> Handled {
    let started = Instant::now();
    let records = event.records;
    let inv = Invocation::new(deps, &records, deadline);
    let outcomes = batch::run(deps, &inv, &records).await;
    let (response, tally) =
        respond::respond(deps, &records, &outcomes, inv.unpriced(), started).await;
    Handled {
        response,
        tally,
        duration: started.elapsed(),
    }
}
