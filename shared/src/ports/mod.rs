//! The small traits the handlers depend on, one file per outside system. Adapters implement
//! them against the real services; the `testing` feature implements them in memory. The data
//! they carry lives in [`crate::domain`].

pub mod admin;
pub mod ingest;
pub mod ledger;
pub mod meter;
pub mod prices;
pub mod queue;
pub mod quota;
pub mod secrets;
pub mod usage;

pub use admin::{
    AmbiguousSettlement, AttentionIndex, CustomerAdmin, LedgerInspection, LedgerTotals,
    MessageFailures, OperatorLedger, StripeRejections,
};
pub use ingest::IngestStore;
pub use ledger::{BudgetStore, ClaimStore, CustomerDirectory, DeliveryStore, Ledger};
pub use meter::{MeterErrorReports, MeterReports, MeterSink};
pub use prices::{PriceBook, PutVersion};
pub use queue::{DeadLetters, QueueSender, Redelivery};
pub use quota::{RequestQuota, Unmetered};
pub use secrets::SecretSource;
pub use usage::{TraceLister, UsageByTrace, UsageSource, read_each};
