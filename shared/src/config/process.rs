//! The process function's configuration: Langfuse, Stripe, pricing, customers, budgets and
//! its tuning.

use super::env::Env;
use super::langfuse::LangfuseConfig;
use super::stripe::StripeConfig;
use crate::domain::budget::{BudgetMode, BudgetPolicy, Period, parse_thresholds};
use crate::domain::credits::{ByoKeyRule, Pricing};
use crate::domain::customer::{CUSTOMER_ID_FORM, check_customer_id};
use crate::error::{Error, Result};

/// How the Stripe customer of a trace is found.
#[derive(Debug, Clone)]
pub struct CustomerRules {
    /// `CUSTOMER_METADATA_KEYS`, comma separated (default `stripeCustomerId,customerId`).
    pub metadata_keys: Vec<String>,
    /// `DEFAULT_CUSTOMER_ID`: used when nothing else maps (default none).
    pub default_customer: Option<String>,
}

/// Tuning of the processing function.
#[derive(Debug, Clone)]
pub struct ProcessTuning {
    /// `PROCESS_CONCURRENCY`: messages of a batch processed at once (default 8).
    pub concurrency: usize,
    /// `RETRY_BASE_SECONDS`: visibility delay after the first failed receive (default 30).
    pub retry_base_seconds: u32,
    /// `RETRY_MAX_SECONDS`: cap of the visibility delay (default 900, SQS allows 43200).
    pub retry_max_seconds: u32,
    /// `STRIPE_DEDUP_WINDOW_SECONDS`: a claim older than this that was never marked is
    /// ambiguous instead of resent (default 82800 = 23 h; Stripe dedups for at least 24 h).
    pub stripe_dedup_window: chrono::Duration,
    /// `LEASE_MARGIN_SECONDS`: added to the invocation deadline for a claim's lease (default 5).
    pub lease_margin: chrono::Duration,
    /// Time kept before the invocation's deadline: no slice of the batch starts that is not
    /// expected to end this long before it (`DEADLINE_MARGIN_SECONDS`, default 3).
    pub deadline_margin: chrono::Duration,
}

/// The process function's whole configuration.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Langfuse.
    pub langfuse: LangfuseConfig,
    /// Stripe.
    pub stripe: StripeConfig,
    /// `TABLE_NAME`: the DynamoDB ledger table.
    pub table_name: String,
    /// `QUEUE_URL`: the SQS meter queue.
    pub queue_url: String,
    /// Pricing (`CREDIT_PRICE_USD`, `MARGIN`, `COMPUTE_USD_PER_MINUTE`, `MAX_TRACE_COST_USD`).
    pub pricing: Pricing,
    /// `BYO_KEY_METADATA_KEY` / `BYO_KEY_METADATA_VALUE` (default `aiCredentialsOwnership` = `user`).
    pub byo_key: ByoKeyRule,
    /// Customer resolution.
    pub customers: CustomerRules,
    /// `DEFAULT_BUDGET_LIMIT` (credits, 0 or unset = no limit), `DEFAULT_BUDGET_PERIOD`
    /// (`day`/`week`/`month`, default month), `DEFAULT_BUDGET_MODE` (`hard`/`soft`, default
    /// hard), `BUDGET_ALERT_THRESHOLDS` (percent, default `50,80,100`).
    pub default_budget: BudgetPolicy,
    /// Processing tuning.
    pub process: ProcessTuning,
}

impl ProcessConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<ProcessConfig> {
        ProcessConfig::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<ProcessConfig> {
        let env = Env::new(lookup);
        // Fields are read in the order written: the first bad variable is the one reported.
        Ok(ProcessConfig {
            langfuse: LangfuseConfig::read(&env, true)?,
            stripe: StripeConfig::read(&env)?,
            pricing: pricing(&env)?,
            byo_key: byo_key(&env),
            customers: CustomerRules::read(&env)?,
            default_budget: default_budget(&env)?,
            process: ProcessTuning::read(&env)?,
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.url("QUEUE_URL", None)?,
        })
    }
}

fn pricing(env: &Env<'_>) -> Result<Pricing> {
    Ok(Pricing {
        credit_price_usd: env.positive_decimal("CREDIT_PRICE_USD", "0.00004")?,
        margin: env.positive_decimal("MARGIN", "1.0")?,
        compute_usd_per_minute: env.non_negative_decimal("COMPUTE_USD_PER_MINUTE", "0.05")?,
        max_trace_cost_usd: env.positive_decimal("MAX_TRACE_COST_USD", "1000")?,
    })
}

fn byo_key(env: &Env<'_>) -> ByoKeyRule {
    ByoKeyRule {
        key: env
            .optional("BYO_KEY_METADATA_KEY")
            .unwrap_or_else(|| "aiCredentialsOwnership".to_string()),
        value: env
            .optional("BYO_KEY_METADATA_VALUE")
            .unwrap_or_else(|| "user".to_string()),
    }
}

impl CustomerRules {
    fn read(env: &Env<'_>) -> Result<CustomerRules> {
        const NAME: &str = "CUSTOMER_METADATA_KEYS";
        let raw = env
            .optional(NAME)
            .unwrap_or_else(|| "stripeCustomerId,customerId".to_string());
        let mut metadata_keys = Vec::new();
        for (i, key) in raw.split(',').map(str::trim).enumerate() {
            if key.is_empty() {
                return Err(Error::Config(format!(
                    "{NAME}={raw:?} is not valid: item {} is empty; expected metadata keys, comma separated (stripeCustomerId,customerId)",
                    i + 1
                )));
            }
            metadata_keys.push(key.to_string());
        }
        let default_customer = env.optional("DEFAULT_CUSTOMER_ID");
        if let Some(id) = &default_customer
            && let Err(why) = check_customer_id(id)
        {
            return Err(Error::Config(format!(
                "DEFAULT_CUSTOMER_ID={id:?} is not valid: {why}; expected {CUSTOMER_ID_FORM}"
            )));
        }
        Ok(CustomerRules {
            metadata_keys,
            default_customer,
        })
    }
}

pub(super) fn default_budget(env: &Env<'_>) -> Result<BudgetPolicy> {
    let limit: u64 = env.parsed("DEFAULT_BUDGET_LIMIT", 0u64, "whole credits (0 = no limit)")?;
    let period = match env.optional("DEFAULT_BUDGET_PERIOD") {
        None => Period::Month,
        Some(raw) => Period::parse(&raw).ok_or_else(|| {
            Error::Config(format!(
                "DEFAULT_BUDGET_PERIOD={raw:?} is not valid: expected day, week or month"
            ))
        })?,
    };
    let mode = match env.optional("DEFAULT_BUDGET_MODE") {
        None => BudgetMode::Hard,
        Some(raw) => BudgetMode::parse(&raw).ok_or_else(|| {
            Error::Config(format!(
                "DEFAULT_BUDGET_MODE={raw:?} is not valid: expected hard or soft"
            ))
        })?,
    };
    Ok(BudgetPolicy {
        limit: (limit > 0).then_some(limit),
        period,
        mode,
        thresholds: thresholds(env, "BUDGET_ALERT_THRESHOLDS")?,
    })
}

/// Alert thresholds in percent, sorted and without repeats (default `50,80,100`; `none` for
/// no alerts): the rule `budget set --thresholds` uses too.
fn thresholds(env: &Env<'_>, name: &str) -> Result<Vec<u32>> {
    match env.optional(name) {
        None => Ok(vec![50, 80, 100]),
        Some(raw) => parse_thresholds(&raw)
            .map_err(|why| Error::Config(format!("{name}={raw:?} is not valid: {why}"))),
    }
}

impl ProcessTuning {
    fn read(env: &Env<'_>) -> Result<ProcessTuning> {
        let retry_base_seconds: u32 = env.parsed("RETRY_BASE_SECONDS", 30u32, "whole seconds")?;
        let retry_max_seconds: u32 = env.parsed("RETRY_MAX_SECONDS", 900u32, "whole seconds")?;
        if retry_max_seconds > 43_200 || retry_base_seconds > retry_max_seconds {
            return Err(Error::Config(format!(
                "RETRY_BASE_SECONDS={retry_base_seconds} / RETRY_MAX_SECONDS={retry_max_seconds} are not valid: need base <= max <= 43200 (the SQS visibility limit)"
            )));
        }
        let concurrency: usize = env.parsed("PROCESS_CONCURRENCY", 8usize, "a whole number")?;
        if concurrency == 0 || concurrency > 100 {
            return Err(Error::Config(format!(
                "PROCESS_CONCURRENCY={concurrency} is not valid: expected 1 to 100"
            )));
        }
        let dedup: i64 = env.parsed("STRIPE_DEDUP_WINDOW_SECONDS", 82_800i64, "whole seconds")?;
        if !(60..=86_400).contains(&dedup) {
            return Err(Error::Config(format!(
                "STRIPE_DEDUP_WINDOW_SECONDS={dedup} is not valid: Stripe dedups identifiers for about 24 h, expected 60 to 86400"
            )));
        }
        // A claim is resent only within Stripe's dedup window: a message that waits longer
        // than the window between tries, or a lease that outlives it, would leave every
        // interrupted claim for an operator instead of resuming it.
        if i64::from(retry_max_seconds) >= dedup {
            return Err(Error::Config(format!(
                "RETRY_MAX_SECONDS={retry_max_seconds} / STRIPE_DEDUP_WINDOW_SECONDS={dedup} contradict each other: a retry must come back within Stripe's dedup window (need RETRY_MAX_SECONDS < STRIPE_DEDUP_WINDOW_SECONDS)"
            )));
        }
        let lease_margin: i64 = env.parsed("LEASE_MARGIN_SECONDS", 5i64, "whole seconds")?;
        if lease_margin < 0 || lease_margin >= dedup {
            return Err(Error::Config(format!(
                "LEASE_MARGIN_SECONDS={lease_margin} is not valid: expected 0 to less than STRIPE_DEDUP_WINDOW_SECONDS={dedup}"
            )));
        }
        let deadline_margin: i64 = env.parsed("DEADLINE_MARGIN_SECONDS", 3i64, "whole seconds")?;
        if !(0..=600).contains(&deadline_margin) {
            return Err(Error::Config(format!(
                "DEADLINE_MARGIN_SECONDS={deadline_margin} is not valid: expected 0 to 600"
            )));
        }
        Ok(ProcessTuning {
            concurrency,
            retry_base_seconds,
            retry_max_seconds,
            stripe_dedup_window: chrono::Duration::seconds(dedup),
            lease_margin: chrono::Duration::seconds(lease_margin),
            deadline_margin: chrono::Duration::seconds(deadline_margin),
        })
    }
}
