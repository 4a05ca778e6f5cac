//! One module per verb.

mod ambiguous;
mod backfill;
mod budget;
mod customer;
mod dlq;
pub mod doctor;
mod failures;
mod messages;
mod price;
mod reconcile;
mod stripe_errors;
mod trace;

use crate::Ctx;
use crate::args::{Command, FailuresCommand, TraceCommand};
use crate::error::{CliError, CliResult};
use chrono::{DateTime, Utc};

/// Runs one verb.
pub(crate) async fn run(ctx: &mut Ctx<'_, '_>, command: &Command) -> CliResult {
    match command {
        Command::Trace(TraceCommand::Show { id }) => trace::show(ctx, id).await,
        Command::Failures(FailuresCommand::List(filter)) => failures::list(ctx, filter).await,
        Command::Failures(FailuresCommand::Ack(args)) => messages::ack(ctx, args).await,
        Command::Replay(args) => failures::replay(ctx, args).await,
        Command::Ambiguous(cmd) => ambiguous::run(ctx, cmd).await,
        Command::Budget(cmd) => budget::run(ctx, cmd).await,
        Command::Customer(cmd) => customer::run(ctx, cmd).await,
        Command::Dlq(cmd) => dlq::run(ctx, cmd).await,
        Command::Reconcile(args) => reconcile::run(ctx, args).await,
        Command::Backfill(args) => backfill::run(ctx, args).await,
        Command::StripeErrors(args) => stripe_errors::run(ctx, args).await,
        Command::Price(cmd) => price::run(ctx, cmd).await,
        // Reads its own configuration, before the other verbs' (see `doctor::doctor`).
        Command::Doctor => Err(CliError::Invalid(
            "doctor runs through tracemeter_cli::doctor, not execute".into(),
        )),
    }
}

/// A time as the reports print it.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
