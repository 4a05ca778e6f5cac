//! The billing domain: plain data and rules, no SDK types.

pub mod attention;
pub mod budget;
pub mod budget_event;
pub mod claim;
pub mod credits;
pub mod customer;
pub mod deadline;
pub mod ingest;
pub mod ledger;
pub mod message;
pub mod meter;
pub mod meter_errors;
pub mod price_book;
pub mod quota;
pub mod reconcile;
pub mod rescan;
pub mod retry;
pub mod returns;
pub mod scan;
pub mod usage;

#[cfg(test)]
mod properties;
