//! The one parser of each kind of argument every verb shares: times, periods, customer,
//! user and trace ids, reasons, limits and counts. Each is a plain function from the text
//! given to a value or the form it expected ([`Expected`]); none can panic on any input (the
//! property tests below and the `cli_parsers` fuzz target hold them to it). [`Flag`] plugs
//! one into clap (`value_parser = Flag(parse::when)`), so a refusal names the flag, the value
//! (escaped for the terminal) and the expected form, and exits 2 before anything is read.

use crate::output::escape;
use chrono::{DateTime, Duration, Utc};
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use rust_decimal::Decimal;
use std::ffi::OsStr;
use tracemeter::FailureReason;
use tracemeter::domain::budget::{BudgetMode, Period, parse_thresholds, period_of_key};
use tracemeter::domain::customer::{CUSTOMER_ID_FORM, check_customer_id};
use tracemeter::domain::message::check_trace_id;
use tracemeter::domain::price_book::{TokenPrice, UnpricedRule};

/// What a parser expected, said after the flag and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected(pub String);

/// A parser's answer.
pub type Parsed<T> = Result<T, Expected>;

fn expected<T>(what: impl Into<String>) -> Parsed<T> {
    Err(Expected(what.into()))
}

/// The refusal of `raw` for `flag`: `--from "soon": expected RFC 3339 (...) or an age ...`.
pub fn refusal(flag: &str, raw: &str, why: &Expected) -> String {
    format!("{flag} \"{}\": expected {}", escape(raw), escape(&why.0))
}

/// The oldest age accepted, in days (ten years: far beyond any usage the ledger keeps).
pub const MAX_AGE_DAYS: u64 = 3660;

/// A point in time as given: an instant, or an age before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// RFC 3339.
    At(DateTime<Utc>),
    /// `30m`, `6h`, `7d`: this long before now.
    Ago(Duration),
}

impl When {
    /// The instant, ages counted back from `now` (never panics: a date before chrono's range
    /// is its earliest).
    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::Ago(age) => now
                .checked_sub_signed(age)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }
}

const WHEN_FORM: &str =
    "RFC 3339 (2026-11-01T00:00:00Z) or an age such as 30m, 6h, 7d (at most 3660d)";

/// RFC 3339, or a positive age in minutes, hours or days up to [`MAX_AGE_DAYS`].
pub fn when(raw: &str) -> Parsed<When> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw.trim()) {
        return Ok(When::At(t.with_timezone(&Utc)));
    }
    let raw = raw.trim();
    if raw.starts_with('-') {
        return expected(format!(
            "{WHEN_FORM}; a negative age would be a time in the future"
        ));
    }
    let Some((digits, minutes_per)) = [("m", 1u64), ("h", 60), ("d", 1440)]
        .iter()
        .find_map(|(unit, per)| raw.strip_suffix(unit).map(|d| (d, *per)))
    else {
        return expected(WHEN_FORM);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return expected(WHEN_FORM);
    }
    let minutes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(minutes_per))
        .filter(|m| *m <= MAX_AGE_DAYS * 1440);
    match minutes.and_then(|m| i64::try_from(m).ok()) {
        Some(m) => Ok(When::Ago(Duration::minutes(m))),
        None => expected(format!("{WHEN_FORM}: {raw} is too far back")),
    }
}

/// A budget period key, as the counters are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodKey {
    /// The key (`2026-11`, `2026-W48`, `2026-11-23`).
    pub key: String,
    /// Its kind.
    pub kind: Period,
    /// Its first instant.
    pub start: DateTime<Utc>,
}

/// A month `YYYY-MM`, an ISO week `YYYY-Www` or a day `YYYY-MM-DD`, as the counters write them.
pub fn period_key(raw: &str) -> Parsed<PeriodKey> {
    match period_of_key(raw) {
        Some((kind, start)) => Ok(PeriodKey {
            key: raw.to_string(),
            kind,
            start,
        }),
        None => expected("a month 2026-11, an ISO week 2026-W48 or a day 2026-11-23"),
    }
}

/// A month `YYYY-MM` or a day `YYYY-MM-DD` (what Stripe's summaries are compared over).
pub fn month_or_day(raw: &str) -> Parsed<PeriodKey> {
    match period_key(raw) {
        Ok(p) if p.kind != Period::Week => Ok(p),
        _ => expected("a UTC month 2026-11 or day 2026-11-23"),
    }
}

/// `day`, `week` or `month`.
pub fn period_kind(raw: &str) -> Parsed<Period> {
    Period::parse(raw).map_or_else(|| expected("day, week or month"), Ok)
}

/// `hard` or `soft`.
pub fn mode(raw: &str) -> Parsed<BudgetMode> {
    BudgetMode::parse(raw).map_or_else(|| expected("hard or soft"), Ok)
}

/// A Stripe customer id, by the rule the processor applies.
pub fn customer_id(raw: &str) -> Parsed<String> {
    match check_customer_id(raw) {
        Ok(()) => Ok(raw.to_string()),
        Err(why) => expected(format!("{CUSTOMER_ID_FORM} ({why})")),
    }
}

/// A Langfuse user id: any text but an empty one (an unset shell variable).
pub fn user_id(raw: &str) -> Parsed<String> {
    match raw.trim().is_empty() {
        true => expected("a Langfuse user id (not empty)"),
        false => Ok(raw.to_string()),
    }
}

/// The id of a malformed message's record, as `failures list` shows it.
pub fn message_id(raw: &str) -> Parsed<String> {
    match raw.trim().is_empty() {
        true => expected("a message id as failures list --reason malformed_message shows it"),
        false => Ok(raw.trim().to_string()),
    }
}

/// A Langfuse trace id, by the rule a meter message's `traceId` follows.
pub fn trace_id(raw: &str) -> Parsed<String> {
    check_trace_id(raw)
        .map(str::to_string)
        .map_err(|why| Expected(format!("a Langfuse trace id (this one {why})")))
}

/// A failure reason the ledger records.
pub fn reason(raw: &str) -> Parsed<FailureReason> {
    FailureReason::parse(raw).map_or_else(
        || {
            let known: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
            expected(format!("one of {}", known.join(", ")))
        },
        Ok,
    )
}

/// The largest credit figure accepted (a thousand trillion).
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;

/// A whole number from `min` to `max`.
fn bounded(raw: &str, min: u64, max: u64, what: &str) -> Parsed<u64> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => expected(format!("{what}: a whole number from {min} to {max}")),
    }
}

/// A budget limit: whole credits, at least 1.
pub fn limit(raw: &str) -> Parsed<u64> {
    bounded(raw, 1, MAX_CREDITS, "credits per period")
}

/// Credits of drift still counted as agreement (0 or more).
pub fn tolerance(raw: &str) -> Parsed<u64> {
    bounded(raw, 0, MAX_CREDITS, "credits")
}

/// Dead-letter bodies to show: 0 to 10 (one receive).
pub fn samples(raw: &str) -> Parsed<usize> {
    bounded(raw, 0, 10, "bodies").map(|n| n as usize)
}

/// Dead letters to move at most: 1 to 100,000.
pub fn redrive_max(raw: &str) -> Parsed<usize> {
    bounded(raw, 1, 100_000, "messages").map(|n| n as usize)
}

/// Minutes a backfill may run: 1 to 720.
pub fn minutes(raw: &str) -> Parsed<u32> {
    bounded(raw, 1, 720, "minutes").map(|n| n as u32)
}

/// Alert thresholds: percentages from 1 to 1000, comma separated, or `none`.
pub fn thresholds(raw: &str) -> Parsed<Vec<u32>> {
    parse_thresholds(raw).map_err(Expected)
}

/// A price or a rate: a decimal number, 0 or more (a price book version says which must be
/// above 0).
pub fn price(raw: &str) -> Parsed<Decimal> {
    match raw.trim().parse::<Decimal>() {
        Ok(d) if d >= Decimal::ZERO => Ok(d),
        Ok(_) => expected("a decimal number of 0 or more: a price cannot be negative"),
        Err(_) => expected("a decimal number such as 0.00004"),
    }
}

/// `MODEL=IN:OUT`: USD per million input and output tokens of a model name or a prefix
/// pattern ending in `*`.
pub fn token_price(raw: &str) -> Parsed<TokenPrice> {
    const FORM: &str =
        "MODEL=IN:OUT, USD per million input and output tokens, 0 or more (e.g. gpt-4o*=2.5:10)";
    let Some((model, prices)) = raw.rsplit_once('=') else {
        return expected(FORM);
    };
    let Some((input, output)) = prices.split_once(':') else {
        return expected(FORM);
    };
    let model = model.trim();
    match (price(input), price(output)) {
        (Ok(i), Ok(o)) if !model.is_empty() && model != "*" => Ok(TokenPrice {
            pattern: model.to_string(),
            input_per_million: i,
            output_per_million: o,
        }),
        _ => expected(FORM),
    }
}

/// `compute_only` or `hold`.
pub fn unpriced(raw: &str) -> Parsed<UnpricedRule> {
    UnpricedRule::parse(raw).map_or_else(|| expected("compute_only or hold"), Ok)
}

/// One of the parsers above as clap's value parser.
#[derive(Clone, Copy)]
pub struct Flag<T>(pub fn(&str) -> Parsed<T>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Flag<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg.map_or_else(|| "argument".to_string(), flag_name);
        let raw = value.to_string_lossy();
        let why = match value.to_str() {
            Some(text) => match (self.0)(text) {
                Ok(v) => return Ok(v),
                Err(why) => why,
            },
            None => Expected("text in UTF-8".into()),
        };
        let message = format!("{}\n", refusal(&flag, &raw, &why));
        Err(clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

/// `--since`, or a positional's value name (`CUSTOMER`).
fn flag_name(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_value_names()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some([name, ..])) => name.to_string(),
        (None, _) => arg.get_id().as_str().to_ascii_uppercase(),
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
