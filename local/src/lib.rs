//! The tracemeter local stack as a library: moto launcher and provisioning from
//! `template.yaml` ([`stack`]), Langfuse and Stripe fakes ([`fakes`]), the SQS event source
//! mapping played locally ([`esm`]) and the per-test harness ([`harness`]).

pub mod bench;
pub mod chaos;
pub mod counting_proxy;
pub mod drain;
pub mod esm;
pub mod fakes;
pub mod faults;
pub mod function;
pub mod harness;
pub mod logscan;
pub mod operator;
pub mod progress;
pub mod runner;
pub mod runtime_api;
pub mod stack;
pub mod summary;
pub mod workload;
pub mod write_meter;
