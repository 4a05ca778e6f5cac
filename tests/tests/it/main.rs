//! Integration tests: the real handler, the real AWS SDK against moto over HTTP, and the
//! Langfuse and Stripe fakes over HTTP. One test binary for the whole workspace.

mod batch_reads;
mod binary;
mod cli;
mod cli_input;
mod cli_malformed;
mod common;
mod contract;
mod cost;
mod docs;
mod doctor;
mod events;
mod gateway;
mod goldens;
mod ingest;
mod process;
mod sdk;
mod secrets;
mod stream;
mod table_scope;
mod template;
