//! `tracemeter`, the operator's command: the ledger as it really is, replays that bill once,
//! ambiguous claims settled consistently, budgets and mappings without hand edits, and the
//! dead-letter queue.
//!
//! [`execute`] is the library entry point the binary and the integration tests share: it
//! runs a parsed [`Cli`] against [`Deps`] (ports only) and returns the exit code.

pub mod args;
mod commands;
pub mod confirm;
pub mod error;
pub mod output;
pub mod parse;

pub use args::Cli;
pub use commands::doctor::{self, doctor};
pub use error::{CliError, CliResult};

use confirm::Confirm;
use output::Output;
use std::io::Write;
use tracemeter::clock::Clock;
use tracemeter::domain::budget::BudgetPolicy;
use tracemeter::ports::{
    DeadLetters, MeterErrorReports, MeterReports, OperatorLedger, QueueSender,
};

/// What the commands work on.
pub struct Deps<'a> {
    /// The ledger table.
    pub ledger: &'a dyn OperatorLedger,
    /// The meter queue (replays, redrives).
    pub queue: &'a dyn QueueSender,
    /// The dead-letter queue, when `DLQ_URL` is set.
    pub dead_letters: Option<&'a dyn DeadLetters>,
    /// Stripe's meter event summaries, when `STRIPE_METER_ID` is set.
    pub meter: Option<&'a dyn MeterReports>,
    /// Stripe's meter error reports, when `STRIPE_METER_ID` is set.
    pub meter_errors: Option<&'a dyn MeterErrorReports>,
    /// Ingest's adapters (Langfuse, its store, the queue), for `backfill`.
    pub ingest: Option<&'a ingest::Deps<'a>>,
    /// The budget policy of customers without their own (`DEFAULT_BUDGET_*`).
    pub default_budget: &'a BudgetPolicy,
    /// Now.
    pub clock: &'a dyn Clock,
    /// Asks before a change when `--yes` was not given.
    pub confirm: &'a dyn Confirm,
}

/// A running command: its dependencies, its report and whether changes are pre-approved.
pub(crate) struct Ctx<'a, 'o> {
    pub deps: &'a Deps<'a>,
    pub out: Output<'o>,
    pub yes: bool,
}

impl Ctx<'_, '_> {
    /// Says what a change will do; `Ok` only when `--yes` was given or the operator agreed.
    pub fn approve(&mut self, plan: &str) -> CliResult {
        self.out.say(plan)?;
        if self.yes || self.deps.confirm.confirm(plan) {
            Ok(())
        } else {
            Err(CliError::NotConfirmed)
        }
    }
}

/// Parses the command line (`args` starts with the program name).
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    <Cli as clap::Parser>::try_parse_from(args)
}

/// Runs `cli`, writing the report to `out` and any error to `err`; the exit code.
pub async fn execute(cli: &Cli, deps: &Deps<'_>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let mut ctx = Ctx {
        deps,
        out: Output::new(out, cli.json),
        yes: cli.yes,
    };
    match commands::run(&mut ctx, &cli.command).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "tracemeter: {}", output::escape(&e.to_string()));
            e.exit_code()
        }
    }
}
