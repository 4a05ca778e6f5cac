//! The command line: every verb and its flags.

use clap::{Args, Parser, Subcommand};

/// tracemeter's operator command: look at the ledger as it really is, replay failures,
/// settle ambiguous claims, manage budgets and mappings, drain the dead-letter queue.
///
/// Configured like the functions: TABLE_NAME, QUEUE_URL (DLQ_URL for `dlq`; STRIPE_METER_ID
/// with the Stripe variables for `reconcile`
/// and `stripe-errors`; the ingest function's Langfuse variables for
/// `backfill`), plus the AWS SDK's own variables. Exit codes: 0 done, 1 failed, 2 bad usage or configuration,
/// 3 reconcile found drift, 4 a change was not confirmed (nothing done).
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
    /// The price book: effective-dated price versions, default and per customer.
    #[command(subcommand)]
    Price(PriceCommand),
}

/// `stripe-errors`.
#[derive(Debug, Args)]
pub struct StripeErrorsArgs {
    /// Reports created since: RFC 3339, or an age such as 6h, 7d (Stripe keeps 30 days).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Record the sampled revisions as failed (stripe_rejected), their credits given back.
    #[arg(long)]
    pub apply: bool,
}

/// `backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Start (inclusive): RFC 3339, or an age such as 6h, 2d.
    #[arg(long)]
    pub from: String,
    /// End (exclusive), settled (at least SETTLE_SECONDS ago): RFC 3339 or an age.
    #[arg(long)]
    pub to: String,
    /// Stop after this many minutes (run it again to go on).
    #[arg(long, default_value_t = 14)]
    pub minutes: u32,
}

/// `reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The UTC month (2026-11) or day (2026-11-23) of usage to compare.
    #[arg(long)]
    pub period: String,
    /// Only this customer.
    #[arg(long)]
    pub customer: Option<String>,
    /// Credits of drift per customer still counted as agreement.
    #[arg(long, default_value_t = 0)]
    pub tolerance: u64,
}

/// `trace` verbs.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// The entry as it really is (a receipt's delivery folded in).
    Show {
        /// The Langfuse trace id.
        id: String,
    },
}

/// `failures` verbs.
#[derive(Debug, Subcommand)]
pub enum FailuresCommand {
    /// Failed entries, oldest first.
    List(FailureFilter),
}

/// Which failures.
#[derive(Debug, Args, Clone)]
pub struct FailureFilter {
    /// Only this reason (e.g. unmapped_customer).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only entries written since: RFC 3339, or an age such as 30m, 6h, 7d.
    #[arg(long)]
    pub since: Option<String>,
}

/// `replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["reason", "trace"])))]
pub struct ReplayArgs {
    /// Every failed entry with this reason.
    #[arg(long)]
    pub reason: Option<String>,
    /// These traces (only failed ones are sent).
    #[arg(long, num_args = 1..)]
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
        customer: String,
        /// Another period key than the current one (2026-11, 2026-W48, 2026-11-23).
        #[arg(long)]
        period: Option<String>,
    },
    /// Every configured policy with this period's counter.
    List,
}

/// `budget set`.
#[derive(Debug, Args)]
pub struct BudgetSetArgs {
    /// The Stripe customer.
    pub customer: String,
    /// Credits per period.
    #[arg(long)]
    pub limit: u64,
    /// day, week or month.
    #[arg(long, default_value = "month")]
    pub period: String,
    /// hard or soft.
    #[arg(long, default_value = "hard")]
    pub mode: String,
    /// Alert thresholds in percent, comma separated.
    #[arg(long, default_value = "50,80,100", value_delimiter = ',')]
    pub thresholds: Vec<u32>,
}

/// `customer` verbs.
#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Maps a Langfuse user id to a Stripe customer.
    Map {
        /// The Langfuse user id.
        user_id: String,
        /// The Stripe customer.
        customer: String,
    },
    /// Removes a user's mapping.
    Unmap {
        /// The Langfuse user id.
        user_id: String,
    },
}

/// `dlq` verbs.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Depth and sample bodies.
    Show {
        /// How many bodies to show.
        #[arg(long, default_value_t = 10)]
        samples: usize,
    },
    /// Moves messages back to the meter queue.
    Redrive {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
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
        #[arg(long)]
        customer: Option<String>,
        /// Another time than now: RFC 3339.
        #[arg(long)]
        at: Option<String>,
    },
    /// The versions of the default book (or of a customer), oldest first.
    List {
        /// A customer's (else the default book's).
        #[arg(long)]
        customer: Option<String>,
    },
}

/// `price set`.
#[derive(Debug, Args)]
pub struct PriceSetArgs {
    /// The customer's plan (else the default book).
    #[arg(long)]
    pub customer: Option<String>,
    /// When the version takes effect: RFC 3339 (UTC), not before now without --backdate.
    #[arg(long)]
    pub from: String,
    /// USD per credit.
    #[arg(long, allow_negative_numbers = true)]
    pub credit_price: Option<String>,
    /// Multiplier on cost.
    #[arg(long, allow_negative_numbers = true)]
    pub margin: Option<String>,
    /// USD per minute of trace latency.
    #[arg(long, allow_negative_numbers = true)]
    pub compute_per_minute: Option<String>,
    /// MODEL=IN:OUT, USD per million input and output tokens; MODEL is a name or a prefix
    /// ending in * (repeatable; replaces the token prices in effect).
    #[arg(long)]
    pub token_price: Vec<String>,
    /// Price matched models by their tokens even when Langfuse reported a cost.
    #[arg(long)]
    pub token_prices_always: bool,
    /// Token usage without a cost or a token price: compute_only or hold.
    #[arg(long)]
    pub unpriced: Option<String>,
    /// Allow --from before now (or before the last version): only revisions not yet billed
    /// are priced with it.
    #[arg(long)]
    pub backdate: bool,
    /// Allow a customer tracemeter has never seen (no budget policy, no budget counter).
    #[arg(long)]
    pub new_customer: bool,
}
