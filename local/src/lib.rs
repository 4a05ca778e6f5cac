//! tracemeter's local stack (crate `tracemeter-local`): everything the functions need to run
//! on one machine, offline, and the runners built on it.
//!
//! - The stack: moto launched and provisioned from `template.yaml` ([`stack`]), the Langfuse
//!   and Stripe fakes ([`fakes`]), the SQS event source mapping ([`esm`]) and its one drain
//!   loop ([`drain`]), the Lambda Runtime API emulator ([`runtime_api`]) and a function binary
//!   run under it ([`function`]), the counting / fault-injecting proxy in front of moto
//!   ([`counting_proxy`]), fault injection ([`faults`]), the secret-scanning log writer
//!   ([`logscan`]), the DynamoDB write meter ([`write_meter`]), a stack per test
//!   ([`harness`]), the EventBridge pipe of budget events ([`pipe`]) and a ledger that dies
//!   right after a budget event ([`ledger_faults`]).
//! - The runners: `make run` / `make serve` ([`runner`], with [`workload`], [`summary`] and
//!   [`progress`]), the benchmark ([`bench`]) and the reliability suite ([`chaos`]); their
//!   binaries are in `src/bin`.
//!
//! The integration tests of the functions live in the `tests` crate and use this one.

pub mod bench;
pub mod chaos;
pub mod counting_proxy;
pub mod drain;
pub mod esm;
pub mod fakes;
pub mod faults;
pub mod function;
pub mod harness;
pub mod ledger_faults;
pub mod logscan;
pub mod operator;
pub mod pipe;
pub mod prices;
pub mod progress;
pub mod runner;
pub mod runtime_api;
pub mod stack;
pub mod summary;
pub mod workload;
pub mod write_meter;
