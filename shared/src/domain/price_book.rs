//! The price book: effective-dated price versions, the default book's and each customer's.
//!
//! A trace revision is priced by the version in effect at the trace's usage time for its
//! customer: the customer's latest version from at or before that time, else the default
//! book's. The version is recorded on the ledger entry by the claim; a later revision of the
//! same trace is priced at the recorded version, never looked up again, so its delta never
//! re-prices usage already billed. The process function's variables (`CREDIT_PRICE_USD`,
//! `MARGIN`, `COMPUTE_USD_PER_MINUTE`) are the default book's first version, effective from
//! the epoch, unless the table holds a default version from the epoch.

use super::credits::{ByoKeyRule, Pricing, Quote, is_byo_key, quote_ai};
use super::usage::TraceUsage;
use crate::error::{Error, FailureReason, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeSet;
use std::fmt;

/// Whose version: the default book or one customer's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PriceScope {
    /// The default book.
    Default,
    /// One Stripe customer's versions.
    Customer(String),
}

impl PriceScope {
    /// `default` or the customer id (the item key's suffix: `PRICE#<scope>`).
    pub fn key(&self) -> &str {
        match self {
            PriceScope::Default => "default",
            PriceScope::Customer(c) => c,
        }
    }

    /// The scope named by [`PriceScope::key`].
    pub fn parse(key: &str) -> PriceScope {
        match key {
            "default" => PriceScope::Default,
            c => PriceScope::Customer(c.to_string()),
        }
    }
}

/// Which customers hold versions of their own, as the price book's index says.
///
/// `price set` adds a customer to the index before it stores the customer's version, so a
/// complete index read at time `t` names every customer with a version that can apply to
/// usage before `t` (`--backdate` aside, as for any cached copy). The index is complete once
/// `tracemeter price index` has found the versions stored before the index existed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScopeIndex {
    /// Not built on this table yet: any customer may hold versions (each is read).
    #[default]
    Unknown,
    /// Every customer with at least one version of its own.
    Complete(BTreeSet<String>),
}

impl ScopeIndex {
    /// Whether `customer` may hold versions of its own (read its scope), `false` only when a
    /// complete index does not name it.
    pub fn may_hold(&self, customer: &str) -> bool {
        match self {
            ScopeIndex::Unknown => true,
            ScopeIndex::Complete(names) => names.contains(customer),
        }
    }
}

/// The default book's versions and the index, read together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DefaultBook {
    /// The default scope's versions, oldest first.
    pub versions: Vec<PriceVersion>,
    /// Which customers hold versions of their own.
    pub index: ScopeIndex,
}

/// What a version does with token usage that has no cost and no token price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnpricedRule {
    /// Bill the compute part only (the behaviour before the price book).
    #[default]
    ComputeOnly,
    /// Fail the trace with `unpriced_model` (replayable once a price exists).
    Hold,
}

impl UnpricedRule {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnpricedRule::ComputeOnly => "compute_only",
            UnpricedRule::Hold => "hold",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<UnpricedRule> {
        match s {
            "compute_only" => Some(UnpricedRule::ComputeOnly),
            "hold" => Some(UnpricedRule::Hold),
            _ => None,
        }
    }
}

/// A token price: USD per million input and output tokens of the models it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrice {
    /// An exact model name, or a prefix followed by `*` (`gpt-4o*`).
    pub pattern: String,
    /// USD per million input tokens.
    pub input_per_million: Decimal,
    /// USD per million output tokens.
    pub output_per_million: Decimal,
}

impl TokenPrice {
    /// True when the pattern matches the model name.
    pub fn matches(&self, model: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => model == self.pattern,
        }
    }

    /// The cost of these tokens in USD.
    pub fn cost(&self, input: u64, output: u64) -> Option<Decimal> {
        let million = Decimal::from(1_000_000);
        let i = Decimal::from(input).checked_mul(self.input_per_million)?;
        let o = Decimal::from(output).checked_mul(self.output_per_million)?;
        i.checked_add(o)?.checked_div(million)
    }
}

/// One price version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceVersion {
    /// Whose version.
    pub scope: PriceScope,
    /// From when it prices usage (UTC, millisecond precision).
    pub effective_from: DateTime<Utc>,
    /// USD per credit.
    pub credit_price_usd: Decimal,
    /// Multiplier on cost.
    pub margin: Decimal,
    /// USD per minute of trace latency.
    pub compute_usd_per_minute: Decimal,
    /// Token prices, most specific first is not required: an exact name wins over a
    /// pattern, and a longer pattern over a shorter one.
    pub token_prices: Vec<TokenPrice>,
    /// Price every matched observation by its tokens, even when Langfuse reported a cost.
    pub token_prices_always: bool,
    /// What to do with token usage without cost and without a token price.
    pub unpriced: UnpricedRule,
}

impl PriceVersion {
    /// The default book's first version: the process function's variables, from the epoch.
    pub fn from_variables(pricing: &Pricing) -> PriceVersion {
        PriceVersion {
            scope: PriceScope::Default,
            effective_from: DateTime::UNIX_EPOCH,
            credit_price_usd: pricing.credit_price_usd,
            margin: pricing.margin,
            compute_usd_per_minute: pricing.compute_usd_per_minute,
            token_prices: Vec::new(),
            token_prices_always: false,
            unpriced: UnpricedRule::ComputeOnly,
        }
    }

    /// What the ledger records: `<scope>@<effective_from, RFC 3339 in milliseconds>`.
    pub fn id(&self) -> String {
        version_id(&self.scope, self.effective_from)
    }

    /// The pricing of this version, with the global cap on one trace's cost.
    pub fn pricing(&self, max_trace_cost_usd: Decimal) -> Pricing {
        Pricing {
            credit_price_usd: self.credit_price_usd,
            margin: self.margin,
            compute_usd_per_minute: self.compute_usd_per_minute,
            max_trace_cost_usd,
        }
    }

    /// The token price for a model: an exact name first, else the longest matching pattern.
    pub fn token_price(&self, model: &str) -> Option<&TokenPrice> {
        self.token_prices
            .iter()
            .filter(|p| p.matches(model))
            .max_by_key(|p| (!p.pattern.ends_with('*'), p.pattern.len()))
    }

    /// The refusal of an impossible version: a price not above zero, a negative rate.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.credit_price_usd <= Decimal::ZERO {
            return Err(format!(
                "credit price must be above 0 USD, got {}",
                self.credit_price_usd
            ));
        }
        if self.margin <= Decimal::ZERO {
            return Err(format!("margin must be above 0, got {}", self.margin));
        }
        if self.compute_usd_per_minute < Decimal::ZERO {
            return Err(format!(
                "compute price must be 0 or more USD per minute, got {}",
                self.compute_usd_per_minute
            ));
        }
        for t in &self.token_prices {
            if t.pattern.is_empty() || t.pattern == "*" {
                return Err("a token price needs a model name or a prefix pattern".into());
            }
            if t.input_per_million < Decimal::ZERO || t.output_per_million < Decimal::ZERO {
                return Err(format!("token price of {} is negative", t.pattern));
            }
        }
        Ok(())
    }
}

/// The id [`PriceVersion::id`] gives a scope's version from `from`.
pub fn version_id(scope: &PriceScope, from: DateTime<Utc>) -> String {
    format!(
        "{}@{}",
        scope.key(),
        from.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

impl fmt::Display for PriceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// One customer's view of the book: the default versions and the customer's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerBook {
    /// The default book's versions (the variables' version included).
    pub defaults: Vec<PriceVersion>,
    /// The customer's versions.
    pub own: Vec<PriceVersion>,
}

impl CustomerBook {
    /// The book of a customer: the table's default versions, the variables' version first
    /// unless the table holds one from the epoch, and the customer's versions.
    pub fn new(
        variables: &Pricing,
        table_defaults: Vec<PriceVersion>,
        own: Vec<PriceVersion>,
    ) -> CustomerBook {
        let mut defaults = table_defaults;
        if !defaults
            .iter()
            .any(|v| v.effective_from <= DateTime::UNIX_EPOCH)
        {
            defaults.push(PriceVersion::from_variables(variables));
        }
        CustomerBook { defaults, own }
    }

    /// The version in effect at `at`: the customer's latest from at or before it, else the
    /// default book's.
    pub fn version_at(&self, at: DateTime<Utc>) -> Option<&PriceVersion> {
        latest_at(&self.own, at).or_else(|| latest_at(&self.defaults, at))
    }

    /// The version a ledger entry recorded, by its id.
    pub fn by_id(&self, id: &str) -> Option<&PriceVersion> {
        self.own
            .iter()
            .chain(self.defaults.iter())
            .find(|v| v.id() == id)
    }
}

/// The latest of `versions` effective at or before `at`.
pub fn latest_at(versions: &[PriceVersion], at: DateTime<Utc>) -> Option<&PriceVersion> {
    versions
        .iter()
        .filter(|v| v.effective_from <= at)
        .max_by_key(|v| v.effective_from)
}

/// Prices a trace at a version. The AI cost is Langfuse's, except an observation with tokens
/// and no cost whose model has a token price (tokens x price), or every observation whose
/// model has one when the version says token prices always apply. Token usage left without
/// a cost or a price is unpriced: billed compute only (`compute_only`, listed in the quote's
/// `unpriced`), or a permanent `unpriced_model` failure naming the models (`hold`). A
/// BYO-key trace's AI cost is the customer's: nothing is unpriced.
pub fn quote_at(
    usage: &TraceUsage,
    version: &PriceVersion,
    max_trace_cost_usd: Decimal,
    byo: &ByoKeyRule,
) -> Result<Quote> {
    let pricing = version.pricing(max_trace_cost_usd);
    if is_byo_key(usage, byo) {
        return quote_ai(usage, usage.ai_cost_usd, &pricing, byo);
    }
    let mut ai = usage.ai_cost_usd;
    let mut unpriced = BTreeSet::new();
    for obs in &usage.tokens {
        let by_tokens = obs.unpriced_by_langfuse() || version.token_prices_always;
        match version.token_price(&obs.model).filter(|_| by_tokens) {
            Some(price) => {
                let cost = price
                    .cost(obs.input, obs.output)
                    .ok_or_else(|| overflow(usage))?;
                ai = ai - obs.cost_usd.unwrap_or(Decimal::ZERO) + cost;
            }
            None if obs.unpriced_by_langfuse() => {
                unpriced.insert(if obs.model.is_empty() {
                    "(no model name)".to_string()
                } else {
                    obs.model.clone()
                });
            }
            None => {}
        }
    }
    if !unpriced.is_empty() && version.unpriced == UnpricedRule::Hold {
        return Err(Error::permanent(
            FailureReason::UnpricedModel,
            format!(
                "trace {}: token usage without a cost or a token price for model(s) {} (price version {}, rule hold): add a token price, then replay",
                usage.trace_id,
                unpriced.iter().cloned().collect::<Vec<_>>().join(", "),
                version.id()
            ),
        ));
    }
    let mut quote = quote_ai(usage, ai, &pricing, byo)?;
    quote.unpriced = unpriced.into_iter().collect();
    Ok(quote)
}

fn overflow(usage: &TraceUsage) -> Error {
    Error::permanent(
        FailureReason::InvalidUsage,
        format!(
            "trace {}: token counts overflow the token price arithmetic",
            usage.trace_id
        ),
    )
}

#[cfg(test)]
#[path = "price_book_tests.rs"]
mod tests;
