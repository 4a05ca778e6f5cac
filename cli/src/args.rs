//! The command line: every verb and its flags.

use crate::parse::{self, Flag, PeriodKey, When};
use clap::{Args, Parser, Subcommand};
use rust_decimal::Decimal;
use tracemeter::FailureReason;
use tracemeter::domain::budget::{BudgetMode, Period};
use tracemeter::domain::price_book::{TokenPrice, UnpricedRule};

/// tracemeter's operator command: look at the ledger as it really is, replay failures,
/// settle ambiguous claims, manage budgets and mappings, drain the dead-letter queue.
///
/// Configured like the functions: TABLE_NAME, QUEUE_URL (DLQ_URL for `dlq`; STRIPE_METER_ID
/// with the Stripe variables for `reconcile`
/// and `stripe-errors`; the ingest function's Langfuse variables for
/// `backfill`), plus the AWS SDK's own variables; a verb reads only what it uses. Every
/// argument is checked before anything is read (see docs/input-rules.md). Exit codes: 0 done,
/// 1 failed (an outage names the service and the resource), 2 bad usage or configuration (the
/// flag or variable named), 3 reconcile found drift, 4 a change was not confirmed (nothing done).
#[derive(Debug, Parser)]
#[command(name = "tracemeter", version)]
pub struct Cli {
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Do what a changing command says without asking.
    #[arg(long, global = true)]
    pub yes: bool,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One trace's ledger entry.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Entries that failed for good.
    #[command(subcommand)]
    Failures(FailuresCommand),
    /// Sends failed traces back to the meter queue (after their cause is fixed).
    Replay(ReplayArgs),
    /// Claims that outlived Stripe's dedup window.
    #[command(subcommand)]
    Ambiguous(AmbiguousCommand),
    /// Budget policies and counters.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Langfuse user to Stripe customer mappings.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// The dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Compares, per customer, what the ledger billed with Stripe's meter event summaries and
    /// the budget counters; exits 3 on drift beyond the tolerance.
    Reconcile(ReconcileArgs),
    /// Re-scans a past range of Langfuse through ingest's normal path (its lease, the
    /// ledger's coverage skip) without moving its cursor: what is billed is skipped.
    Backfill(BackfillArgs),
    /// Stripe's meter error reports (events it accepted, then dropped: e.g. an unknown
    /// customer), each sample mapped to its ledger entry; --apply records them stripe_rejected
    /// and gives their credits back. Samples only: reconcile stays the complete check.
    StripeErrors(StripeErrorsArgs),
    /// Checks the deployment's configuration against the live services and the AWS
    /// resources (secrets, Langfuse, Stripe meter, table, queue): one line per check, OK /
    /// WARN / FAIL with the fix; exits 0 only when nothing fails, 1 otherwise.
    Doctor,
    /// The price book: effective-dated price versions, default and per customer.
    #[command(subcommand)]
    Price(PriceCommand),
}

/// `stripe-errors`.
#[derive(Debug, Args)]
pub struct StripeErrorsArgs {
    /// Reports created since: RFC 3339, or an age such as 6h, 7d (Stripe keeps 30 days).
    #[arg(long, default_value = "7d", value_parser = Flag(parse::when), allow_hyphen_values = true)]
    pub since: When,
    /// Record the sampled revisions as failed (stripe_rejected), their credits given back.
    #[arg(long)]
    pub apply: bool,
}

/// `backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Start (inclusive): RFC 3339, or an age such as 6h, 2d.
    #[arg(long, value_parser = Flag(parse::when), allow_hyphen_values = true)]
    pub from: When,
    /// End (exclusive), settled (at least SETTLE_SECONDS ago): RFC 3339 or an age.
    #[arg(long, value_parser = Flag(parse::when), allow_hyphen_values = true)]
    pub to: When,
    /// Stop after this many minutes, 1 to 720 (run it again to go on).
    #[arg(long, default_value = "14", value_parser = Flag(parse::minutes))]
    pub minutes: u32,
}

/// `reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The UTC month (2026-11) or day (2026-11-23) of usage to compare (not a future one).
    #[arg(long, value_parser = Flag(parse::month_or_day))]
    pub period: PeriodKey,
    /// Only this customer.
    #[arg(long, value_parser = Flag(parse::customer_id))]
    pub customer: Option<String>,
    /// Credits of drift per customer still counted as agreement.
    #[arg(long, default_value = "0", value_parser = Flag(parse::tolerance))]
    pub tolerance: u64,
}

/// `trace` verbs.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// The entry as it really is (a receipt's delivery folded in).
    Show {
        /// The Langfuse trace id.
        #[arg(value_parser = Flag(parse::trace_id))]
        id: String,
    },
}

/// `failures` verbs.
#[derive(Debug, Subcommand)]
pub enum FailuresCommand {
    /// Failed entries, oldest first; malformed messages (no trace to replay) with their body.
    List(FailureFilter),
    /// Deletes the records of malformed messages (they name no trace: nothing to replay),
    /// once looked at with `failures list --reason malformed_message`.
    Ack(AckArgs),
}

/// `failures ack`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["reason", "message"])))]
pub struct AckArgs {
    /// Every record with this reason (only malformed_message: failed traces are replayed).
    #[arg(long, value_parser = Flag(parse::reason))]
    pub reason: Option<FailureReason>,
    /// These messages, by the id `failures list` shows.
    #[arg(long, num_args = 1.., value_parser = Flag(parse::message_id))]
    pub message: Vec<String>,
}

/// Which failures.
#[derive(Debug, Args, Clone)]
pub struct FailureFilter {
    /// Only this reason (e.g. unmapped_customer).
    #[arg(long, value_parser = Flag(parse::reason))]
    pub reason: Option<FailureReason>,
    /// Only entries written since: RFC 3339, or an age such as 30m, 6h, 7d.
    #[arg(long, value_parser = Flag(parse::when), allow_hyphen_values = true)]
    pub since: Option<When>,
}

/// `replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["reason", "trace"])))]
pub struct ReplayArgs {
    /// Every failed entry with this reason.
    #[arg(long, value_parser = Flag(parse::reason))]
    pub reason: Option<FailureReason>,
    /// These traces (only failed ones are sent).
    #[arg(long, num_args = 1.., value_parser = Flag(parse::trace_id))]
    pub trace: Vec<String>,
}

/// `ambiguous` verbs.
#[derive(Debug, Subcommand)]
pub enum AmbiguousCommand {
    /// Ambiguous entries, oldest first.
    List,
    /// Settles one after checking Stripe for its identifier.
    Resolve(ResolveArgs),
}

/// `ambiguous resolve`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("outcome").required(true).args(["delivered", "not_delivered"])))]
pub struct ResolveArgs {
    /// The trace id.
    #[arg(value_parser = Flag(parse::trace_id))]
    pub id: String,
    /// Stripe has the identifier: the revision is billed.
    #[arg(long)]
    pub delivered: bool,
    /// Stripe does not have it: its credits go back to the budget; replay it to bill it.
    #[arg(long)]
    pub not_delivered: bool,
}

/// `budget` verbs.
#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Writes a customer's budget policy.
    Set(BudgetSetArgs),
    /// A customer's policy and this period's counter.
    Show {
        /// The Stripe customer.
        #[arg(value_parser = Flag(parse::customer_id))]
        customer: String,
        /// Another period than the current one, of the budget's kind: a month 2026-11, an ISO
        /// week 2026-W48 or a day 2026-11-23 (not a future one).
        #[arg(long, value_parser = Flag(parse::period_key))]
        period: Option<PeriodKey>,
    },
    /// Every configured policy with this period's counter.
    List,
}

/// `budget set`.
#[derive(Debug, Args)]
pub struct BudgetSetArgs {
    /// The Stripe customer.
    #[arg(value_parser = Flag(parse::customer_id))]
    pub customer: String,
    /// Credits per period (at least 1).
    #[arg(long, value_parser = Flag(parse::limit))]
    pub limit: u64,
    /// day, week or month.
    #[arg(long, default_value = "month", value_parser = Flag(parse::period_kind))]
    pub period: Period,
    /// hard or soft.
    #[arg(long, default_value = "hard", value_parser = Flag(parse::mode))]
    pub mode: BudgetMode,
    /// Alert thresholds in percent (1 to 1000), comma separated, or none.
    #[arg(long, default_value = "50,80,100", value_parser = Flag(parse::thresholds))]
    pub thresholds: ::std::vec::Vec<u32>,
}

/// `customer` verbs.
#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Maps a Langfuse user id to a Stripe customer.
    Map {
        /// The Langfuse user id.
        #[arg(value_parser = Flag(parse::user_id))]
        user_id: String,
        /// The Stripe customer.
        #[arg(value_parser = Flag(parse::customer_id))]
        customer: String,
    },
    /// Removes a user's mapping.
    Unmap {
        /// The Langfuse user id.
        #[arg(value_parser = Flag(parse::user_id))]
        user_id: String,
    },
}

/// `dlq` verbs.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Depth and sample bodies.
    Show {
        /// How many bodies to show (0 to 10).
        #[arg(long, default_value = "10", value_parser = Flag(parse::samples))]
        samples: usize,
    },
    /// Moves messages back to the meter queue.
    Redrive {
        /// At most this many (1 to 100000).
        #[arg(long, default_value = "1000", value_parser = Flag(parse::redrive_max))]
        max: usize,
    },
}

/// `price` verbs.
#[derive(Debug, Subcommand)]
pub enum PriceCommand {
    /// Adds a price version (the fields not given are the version in effect at --from).
    Set(PriceSetArgs),
    /// The version in effect now (or at --at) for the default book or a customer.
    Show {
        /// A customer's (else the default book's).
        #[arg(long, value_parser = Flag(parse::customer_id))]
        customer: Option<String>,
        /// Another time than now: RFC 3339, or an age such as 6h, 7d.
        #[arg(long, value_parser = Flag(parse::when))]
        at: Option<When>,
    },
    /// The versions of the default book (or of a customer), oldest first.
    List {
        /// A customer's (else the default book's).
        #[arg(long, value_parser = Flag(parse::customer_id))]
        customer: Option<String>,
    },
    /// Builds the index of customers with prices of their own (one scan of the table's
    /// price versions), so the process function reads only their books; run once after
    /// the first deploy or an upgrade from a release without the index.
    Index,
}

/// `price set`.
#[derive(Debug, Args)]
pub struct PriceSetArgs {
    /// The customer's plan (else the default book).
    #[arg(long, value_parser = Flag(parse::customer_id))]
    pub customer: Option<String>,
    /// When the version takes effect: RFC 3339 (UTC), not before now without --backdate.
    #[arg(long, value_parser = Flag(parse::when))]
    pub from: When,
    /// USD per credit.
    #[arg(long, allow_negative_numbers = true, value_parser = Flag(parse::price))]
    pub credit_price: Option<Decimal>,
    /// Multiplier on cost.
    #[arg(long, allow_negative_numbers = true, value_parser = Flag(parse::price))]
    pub margin: Option<Decimal>,
    /// USD per minute of trace latency.
    #[arg(long, allow_negative_numbers = true, value_parser = Flag(parse::price))]
    pub compute_per_minute: Option<Decimal>,
    /// MODEL=IN:OUT, USD per million input and output tokens; MODEL is a name or a prefix
    /// ending in * (repeatable; replaces the token prices in effect).
    #[arg(long, value_parser = Flag(parse::token_price))]
    pub token_price: Vec<TokenPrice>,
    /// Price matched models by their tokens even when Langfuse reported a cost.
    #[arg(long)]
    pub token_prices_always: bool,
    /// Token usage without a cost or a token price: compute_only or hold.
    #[arg(long, value_parser = Flag(parse::unpriced))]
    pub unpriced: Option<UnpricedRule>,
    /// Allow --from before now (or before the last version): only revisions not yet billed
    /// are priced with it.
    #[arg(long)]
    pub backdate: bool,
    /// Allow a customer tracemeter has never seen (no budget policy, no budget counter).
    #[arg(long)]
    pub new_customer: bool,
}
