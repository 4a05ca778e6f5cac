//! One module per verb.

mod ambiguous;
mod backfill;
mod budget;
mod customer;
mod dlq;
mod failures;
mod price;
mod reconcile;
mod stripe_errors;
mod trace;

use crate::Ctx;
use crate::args::{Command, FailuresCommand, TraceCommand};
use crate::error::{CliError, CliResult};
use chrono::{DateTime, Duration, Utc};

/// Runs one verb.
pub(crate) async fn run(ctx: &mut Ctx<'_, '_>, command: &Command) -> CliResult {
    match command {
        Command::Trace(TraceCommand::Show { id }) => trace::show(ctx, id).await,
        Command::Failures(FailuresCommand::List(filter)) => failures::list(ctx, filter).await,
        Command::Replay(args) => failures::replay(ctx, args).await,
        Command::Ambiguous(cmd) => ambiguous::run(ctx, cmd).await,
        Command::Budget(cmd) => budget::run(ctx, cmd).await,
        Command::Customer(cmd) => customer::run(ctx, cmd).await,
        Command::Dlq(cmd) => dlq::run(ctx, cmd).await,
        Command::Reconcile(args) => reconcile::run(ctx, args).await,
        Command::Backfill(args) => backfill::run(ctx, args).await,
        Command::StripeErrors(args) => stripe_errors::run(ctx, args).await,
        Command::Price(cmd) => price::run(ctx, cmd).await,
    }
}

/// A point in time: RFC 3339, or an age before `now` (`30m`, `6h`, `7d`).
pub(crate) fn parse_since(raw: &str, now: DateTime<Utc>) -> CliResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let invalid = || {
        CliError::Invalid(format!(
            "--since {raw:?}: expected RFC 3339 or an age like 30m, 6h, 7d"
        ))
    };
    let (digits, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: i64 = digits.parse().map_err(|_| invalid())?;
    let age = match unit {
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(invalid()),
    };
    Ok(now - age)
}

/// A time as the reports print it.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        let now = Utc::now();
        assert_eq!(parse_since("6h", now).ok(), Some(now - Duration::hours(6)));
        assert_eq!(parse_since("7d", now).ok(), Some(now - Duration::days(7)));
        let t = parse_since("2026-11-01T00:00:00Z", now).ok().map(time);
        assert_eq!(t.as_deref(), Some("2026-11-01T00:00:00Z"));
        assert!(matches!(
            parse_since("soon", now),
            Err(CliError::Invalid(_))
        ));
        assert!(matches!(parse_since("5y", now), Err(CliError::Invalid(_))));
    }
}
