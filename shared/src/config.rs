//! Typed configuration, read once at cold start from environment variables.
//!
//! A missing or malformed value fails at start with a message that names the variable.
//! Secrets are wrapped in [`Secret`], whose `Debug` never shows them.

use crate::domain::budget::{BudgetMode, BudgetPolicy, Period};
use crate::domain::credits::{ByoKeyRule, Pricing};
use crate::error::{Error, Result};
use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A secret value: shown as `***` in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which Langfuse API generation to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LangfuseApi {
    /// `GET /api/public/v2/observations` (Langfuse Cloud and v4).
    V2,
    /// `GET /api/public/traces` and `/traces/{id}` (self-hosted v3).
    Legacy,
}

/// Langfuse connection settings.
#[derive(Debug, Clone)]
pub struct LangfuseConfig {
    /// `LANGFUSE_BASE_URL`, e.g. `https://cloud.langfuse.com`.
    pub base_url: String,
    /// `LANGFUSE_PUBLIC_KEY`.
    pub public_key: String,
    /// `LANGFUSE_SECRET_KEY`.
    pub secret_key: Secret,
    /// `LANGFUSE_API` (`v2` or `legacy`, default `v2`).
    pub api: LangfuseApi,
    /// `LANGFUSE_TIMEOUT_MS` (default 10000).
    pub timeout: Duration,
    /// `LANGFUSE_SCORE_ENABLED`: mark billed traces with a score (default false).
    pub score_enabled: bool,
}

/// How meter events reach Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeApiMode {
    /// `POST /v1/billing/meter_events`: one event per request, validated synchronously, one
    /// concurrent request per customer and meter.
    V1,
    /// `POST /v2/billing/meter_event_session` then `POST /v2/billing/meter_event_stream`: up
    /// to 100 events per request, validated asynchronously.
    V2Stream,
}

/// Stripe connection settings.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`).
    pub api_base: String,
    /// `STRIPE_API_MODE` (`v1` or `v2_stream`, default `v1`).
    pub api_mode: StripeApiMode,
    /// `STRIPE_METER_EVENTS_BASE`: the host of the v2 meter event stream (default
    /// `https://meter-events.stripe.com`).
    pub meter_events_base: String,
    /// `STRIPE_SECRET_KEY`.
    pub secret_key: Secret,
    /// `STRIPE_METER_EVENT_NAME`.
    pub meter_event_name: String,
    /// `STRIPE_TIMEOUT_MS` (default 10000).
    pub timeout: Duration,
}

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
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Langfuse.
    pub langfuse: LangfuseConfig,
    /// Stripe.
    pub stripe: StripeConfig,
    /// `TABLE_NAME`: the DynamoDB ledger table.
    pub table_name: String,
    /// `QUEUE_URL`: the SQS meter queue.
    pub queue_url: String,
    /// `SETTLE_SECONDS`: how old usage must be before it is billed (default 900).
    pub settle_seconds: u64,
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

/// Reads configuration values by name.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<String> {
        self.optional(name).ok_or_else(|| {
            Error::Config(format!(
                "{name} is not set; it is required (see README, Configuration)"
            ))
        })
    }

    fn parsed<T: FromStr>(&self, name: &str, default: T, what: &str) -> Result<T> {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse::<T>().map_err(|_| {
                Error::Config(format!("{name}={raw:?} is not valid: expected {what}"))
            }),
        }
    }

    fn url(&self, name: &str, default: Option<&str>) -> Result<String> {
        let raw = match (self.optional(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => self.required(name)?,
        };
        validate_url(name, &raw)?;
        Ok(raw.trim_end_matches('/').to_string())
    }
}

/// Checks that `raw` is an absolute http(s) URL, and HTTPS unless it points at loopback.
pub fn validate_url(name: &str, raw: &str) -> Result<()> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| Error::Config(format!("{name}={raw:?} is not a valid URL: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = is_loopback_host(host);
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(Error::Config(format!(
            "{name}={raw:?} uses plain http to a non-loopback host; use https"
        ))),
        other => Err(Error::Config(format!(
            "{name}={raw:?} has scheme {other:?}; expected https"
        ))),
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn positive_decimal(env: &Env<'_>, name: &str, default: &str) -> Result<Decimal> {
    let raw = env.optional(name).unwrap_or_else(|| default.to_string());
    let value = Decimal::from_str(&raw).map_err(|_| {
        Error::Config(format!(
            "{name}={raw:?} is not valid: expected a decimal number"
        ))
    })?;
    if value <= Decimal::ZERO {
        return Err(Error::Config(format!(
            "{name}={raw:?} is not valid: it must be greater than 0"
        )));
    }
    Ok(value)
}

fn non_negative_decimal(env: &Env<'_>, name: &str, default: &str) -> Result<Decimal> {
    let raw = env.optional(name).unwrap_or_else(|| default.to_string());
    let value = Decimal::from_str(&raw).map_err(|_| {
        Error::Config(format!(
            "{name}={raw:?} is not valid: expected a decimal number"
        ))
    })?;
    if value < Decimal::ZERO {
        return Err(Error::Config(format!(
            "{name}={raw:?} is not valid: it must not be negative"
        )));
    }
    Ok(value)
}

fn thresholds(env: &Env<'_>, name: &str) -> Result<Vec<u32>> {
    let Some(raw) = env.optional(name) else {
        return Ok(vec![50, 80, 100]);
    };
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let pct: u32 = part.parse().map_err(|_| {
            Error::Config(format!(
                "{name}={raw:?} is not valid: {part:?} is not a whole percentage"
            ))
        })?;
        if pct == 0 || pct > 1000 {
            return Err(Error::Config(format!(
                "{name}={raw:?} is not valid: {pct} must be between 1 and 1000"
            )));
        }
        out.push(pct);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A client timeout in milliseconds (default 10 s): at least 100 ms (a request needs the
/// time to happen) and at most 900,000 (a Lambda never runs longer).
fn timeout_ms(env: &Env<'_>, name: &str) -> Result<Duration> {
    let ms: u64 = env.parsed(name, 10_000u64, "milliseconds as a whole number")?;
    if !(100..=900_000).contains(&ms) {
        return Err(Error::Config(format!(
            "{name}={ms} is not valid: expected 100 to 900000 milliseconds"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// The Langfuse variables, shared by both functions (`scores`: read `LANGFUSE_SCORE_ENABLED`).
fn langfuse_config(env: &Env<'_>, scores: bool) -> Result<LangfuseConfig> {
    let api = match env.optional("LANGFUSE_API").as_deref() {
        None | Some("v2") => LangfuseApi::V2,
        Some("legacy") => LangfuseApi::Legacy,
        Some(other) => {
            return Err(Error::Config(format!(
                "LANGFUSE_API={other:?} is not valid: expected v2 or legacy"
            )));
        }
    };
    Ok(LangfuseConfig {
        base_url: env.url("LANGFUSE_BASE_URL", None)?,
        public_key: env.required("LANGFUSE_PUBLIC_KEY")?,
        secret_key: Secret::new(env.required("LANGFUSE_SECRET_KEY")?),
        api,
        timeout: timeout_ms(env, "LANGFUSE_TIMEOUT_MS")?,
        score_enabled: scores && env.parsed("LANGFUSE_SCORE_ENABLED", false, "true or false")?,
    })
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let env = Env { lookup };
        let langfuse = langfuse_config(&env, true)?;
        let stripe_key = env.required("STRIPE_SECRET_KEY")?;
        if !(stripe_key.starts_with("sk_") || stripe_key.starts_with("rk_")) {
            return Err(Error::Config(
                "STRIPE_SECRET_KEY is not valid: expected a Stripe secret or restricted key (sk_... or rk_...)"
                    .to_string(),
            ));
        }
        let api_mode = match env.optional("STRIPE_API_MODE").as_deref() {
            None | Some("v1") => StripeApiMode::V1,
            Some("v2_stream") => StripeApiMode::V2Stream,
            Some(other) => {
                return Err(Error::Config(format!(
                    "STRIPE_API_MODE={other:?} is not valid: expected v1 or v2_stream"
                )));
            }
        };
        let stripe = StripeConfig {
            api_base: env.url("STRIPE_API_BASE", Some("https://api.stripe.com"))?,
            api_mode,
            meter_events_base: env.url(
                "STRIPE_METER_EVENTS_BASE",
                Some("https://meter-events.stripe.com"),
            )?,
            secret_key: Secret::new(stripe_key),
            meter_event_name: env.required("STRIPE_METER_EVENT_NAME")?,
            timeout: timeout_ms(&env, "STRIPE_TIMEOUT_MS")?,
        };
        let pricing = Pricing {
            credit_price_usd: positive_decimal(&env, "CREDIT_PRICE_USD", "0.00004")?,
            margin: positive_decimal(&env, "MARGIN", "1.0")?,
            compute_usd_per_minute: non_negative_decimal(&env, "COMPUTE_USD_PER_MINUTE", "0.05")?,
            max_trace_cost_usd: positive_decimal(&env, "MAX_TRACE_COST_USD", "1000")?,
        };
        let byo_key = ByoKeyRule {
            key: env
                .optional("BYO_KEY_METADATA_KEY")
                .unwrap_or_else(|| "aiCredentialsOwnership".to_string()),
            value: env
                .optional("BYO_KEY_METADATA_VALUE")
                .unwrap_or_else(|| "user".to_string()),
        };
        let metadata_keys: Vec<String> = env
            .optional("CUSTOMER_METADATA_KEYS")
            .unwrap_or_else(|| "stripeCustomerId,customerId".to_string())
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        let customers = CustomerRules {
            metadata_keys,
            default_customer: env.optional("DEFAULT_CUSTOMER_ID"),
        };
        let limit: u64 =
            env.parsed("DEFAULT_BUDGET_LIMIT", 0u64, "whole credits (0 = no limit)")?;
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
        let default_budget = BudgetPolicy {
            limit: (limit > 0).then_some(limit),
            period,
            mode,
            thresholds: thresholds(&env, "BUDGET_ALERT_THRESHOLDS")?,
        };
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
        let process = ProcessTuning {
            concurrency,
            retry_base_seconds,
            retry_max_seconds,
            stripe_dedup_window: chrono::Duration::seconds(dedup),
            lease_margin: chrono::Duration::seconds(lease_margin),
        };
        Ok(Config {
            langfuse,
            stripe,
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.url("QUEUE_URL", None)?,
            settle_seconds: env.parsed("SETTLE_SECONDS", 900u64, "whole seconds")?,
            pricing,
            byo_key,
            customers,
            default_budget,
            process,
        })
    }
}

/// Configuration of the ingest function, read on its own so that ingest needs no Stripe
/// secrets: Langfuse, the table, the queue, settling and the ingest tuning.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Langfuse (`LANGFUSE_BASE_URL`, `LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY`,
    /// `LANGFUSE_API`, `LANGFUSE_TIMEOUT_MS`).
    pub langfuse: LangfuseConfig,
    /// `TABLE_NAME`: the ledger table, which also holds ingest's lease and cursor.
    pub table_name: String,
    /// `QUEUE_URL`: the meter queue.
    pub queue_url: String,
    /// `SETTLE_SECONDS` (default 900): usage younger than this is left for a later run.
    pub settle: chrono::Duration,
    /// `RESCAN_SECONDS` (default 86400): each run also re-reads this much before the
    /// watermark, to find late observations (0 = no re-scan).
    pub rescan: chrono::Duration,
    /// `INGEST_START_LOOKBACK_SECONDS` (default 86400): how far back the very first run (no
    /// watermark yet) starts.
    pub start_lookback: chrono::Duration,
    /// `LANGFUSE_REQUESTS_PER_MINUTE` (default 30): the request budget of one run. 30 fits
    /// the smallest Langfuse Cloud plan (Hobby: 30/min on the public API); raise it on paid
    /// plans (1000) or self-hosted (no limit).
    pub requests_per_minute: u32,
    /// `INGEST_TIME_BUDGET_MARGIN_SECONDS` (default 20): a run stops, checkpoints and releases
    /// its lease this long before the Lambda's deadline.
    pub time_budget_margin: chrono::Duration,
    /// `INGEST_SEND_ATTEMPTS` (default 4): tries per SQS entry before it is reported failed.
    pub send_attempts: u32,
    /// `INGEST_LANGFUSE_ATTEMPTS` (default 4): tries per Langfuse page on 5xx or transport
    /// errors (429s are waited out and not counted).
    pub langfuse_attempts: u32,
    /// `INGEST_PROGRESS_EVERY_PAGES` (default 10): a progress line every N pages.
    pub progress_every_pages: u32,
}

impl IngestConfig {
    /// Reads the ingest configuration from the process environment.
    pub fn from_env() -> Result<IngestConfig> {
        IngestConfig::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the ingest configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<IngestConfig> {
        let env = Env { lookup };
        // Ingest never writes scores.
        let langfuse = langfuse_config(&env, false)?;
        let seconds = |name: &str, default: i64, max: i64| -> Result<chrono::Duration> {
            let v: i64 = env.parsed(name, default, "whole seconds")?;
            if !(0..=max).contains(&v) {
                return Err(Error::Config(format!(
                    "{name}={v} is not valid: expected 0 to {max} seconds"
                )));
            }
            Ok(chrono::Duration::seconds(v))
        };
        let count = |name: &str, default: u32, max: u32| -> Result<u32> {
            let v: u32 = env.parsed(name, default, "a whole number")?;
            if !(1..=max).contains(&v) {
                return Err(Error::Config(format!(
                    "{name}={v} is not valid: expected 1 to {max}"
                )));
            }
            Ok(v)
        };
        Ok(IngestConfig {
            langfuse,
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.url("QUEUE_URL", None)?,
            settle: seconds("SETTLE_SECONDS", 900, 7 * 86_400)?,
            rescan: seconds("RESCAN_SECONDS", 86_400, 30 * 86_400)?,
            start_lookback: seconds("INGEST_START_LOOKBACK_SECONDS", 86_400, 366 * 86_400)?,
            requests_per_minute: count("LANGFUSE_REQUESTS_PER_MINUTE", 30, 1_000_000)?,
            time_budget_margin: seconds("INGEST_TIME_BUDGET_MARGIN_SECONDS", 20, 600)?,
            send_attempts: count("INGEST_SEND_ATTEMPTS", 4, 20)?,
            langfuse_attempts: count("INGEST_LANGFUSE_ATTEMPTS", 4, 20)?,
            progress_every_pages: count("INGEST_PROGRESS_EVERY_PAGES", 10, 1_000_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("LANGFUSE_BASE_URL", "http://127.0.0.1:3000"),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-test"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-secret"),
            ("STRIPE_SECRET_KEY", "sk_test_secret"),
            ("STRIPE_METER_EVENT_NAME", "llm_credits"),
            ("TABLE_NAME", "ledger"),
            ("QUEUE_URL", "http://127.0.0.1:5000/123456789012/meter"),
        ])
    }

    fn load(vars: &HashMap<&'static str, &'static str>) -> Result<Config> {
        Config::from_lookup(&|k| vars.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn defaults_follow_the_seed_system() {
        let cfg = load(&base()).expect("valid");
        assert_eq!(
            cfg.pricing.credit_price_usd,
            Decimal::from_str("0.00004").expect("dec")
        );
        assert_eq!(
            cfg.pricing.compute_usd_per_minute,
            Decimal::from_str("0.05").expect("dec")
        );
        assert_eq!(cfg.stripe.api_base, "https://api.stripe.com");
        assert_eq!(cfg.stripe.api_mode, StripeApiMode::V1);
        assert_eq!(
            cfg.stripe.meter_events_base,
            "https://meter-events.stripe.com"
        );
        assert_eq!(cfg.langfuse.api, LangfuseApi::V2);
        assert_eq!(cfg.default_budget.thresholds, vec![50, 80, 100]);
        assert_eq!(cfg.default_budget.limit, None);
        assert_eq!(
            cfg.customers.metadata_keys,
            vec!["stripeCustomerId", "customerId"]
        );
    }

    #[test]
    fn each_missing_variable_is_named() {
        for name in [
            "LANGFUSE_BASE_URL",
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
            "STRIPE_SECRET_KEY",
            "STRIPE_METER_EVENT_NAME",
            "TABLE_NAME",
            "QUEUE_URL",
        ] {
            let mut vars = base();
            vars.remove(name);
            let err = load(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_named() {
        for (name, value) in [
            ("LANGFUSE_API", "v3"),
            ("CREDIT_PRICE_USD", "abc"),
            ("CREDIT_PRICE_USD", "0"),
            ("MARGIN", "-1"),
            ("DEFAULT_BUDGET_PERIOD", "year"),
            ("DEFAULT_BUDGET_MODE", "medium"),
            ("DEFAULT_BUDGET_LIMIT", "ten"),
            ("BUDGET_ALERT_THRESHOLDS", "50,eighty"),
            ("PROCESS_CONCURRENCY", "0"),
            ("SETTLE_SECONDS", "-5"),
            ("LANGFUSE_BASE_URL", "http://langfuse.example.com"),
            ("STRIPE_API_BASE", "ftp://127.0.0.1"),
            ("STRIPE_SECRET_KEY", "pk_test_123"),
            ("RETRY_MAX_SECONDS", "50000"),
            ("STRIPE_API_MODE", "v2"),
            ("STRIPE_API_MODE", "stream"),
            (
                "STRIPE_METER_EVENTS_BASE",
                "http://meter-events.example.com",
            ),
            ("STRIPE_METER_EVENTS_BASE", "not a url"),
        ] {
            let mut vars = base();
            vars.insert(name, value);
            let err = load(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn the_v2_stream_is_chosen_by_configuration() {
        let mut vars = base();
        vars.insert("STRIPE_API_MODE", "v2_stream");
        vars.insert("STRIPE_METER_EVENTS_BASE", "http://127.0.0.1:4242/");
        let cfg = load(&vars).expect("valid");
        assert_eq!(cfg.stripe.api_mode, StripeApiMode::V2Stream);
        assert_eq!(cfg.stripe.meter_events_base, "http://127.0.0.1:4242");
        vars.insert("STRIPE_API_MODE", "v1");
        assert_eq!(
            load(&vars).expect("valid").stripe.api_mode,
            StripeApiMode::V1
        );
    }

    #[test]
    fn every_outside_url_is_https_unless_loopback() {
        for name in ["LANGFUSE_BASE_URL", "STRIPE_API_BASE", "QUEUE_URL"] {
            for bad in [
                "http://example.com",
                "http://10.0.0.1:8080",
                "file:///etc/passwd",
                "not a url",
            ] {
                let mut vars = base();
                vars.insert(name, bad);
                let err = load(&vars).expect_err(bad).to_string();
                assert!(err.contains(name), "{name}={bad}: {err}");
                assert!(!err.contains("sk-lf-secret") && !err.contains("sk_test_secret"));
            }
            let mut vars = base();
            vars.insert(name, "https://example.com");
            load(&vars).expect("https is accepted");
        }
    }

    #[test]
    fn contradictory_retry_window_is_named() {
        let mut vars = base();
        vars.insert("RETRY_BASE_SECONDS", "600");
        vars.insert("RETRY_MAX_SECONDS", "60");
        let err = load(&vars).expect_err("base > max").to_string();
        assert!(
            err.contains("RETRY_BASE_SECONDS") && err.contains("RETRY_MAX_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn every_contradiction_and_bad_value_names_its_variables() {
        // (variables set, the names the error must mention)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (&[("LANGFUSE_TIMEOUT_MS", "0")], &["LANGFUSE_TIMEOUT_MS"]),
            (&[("STRIPE_TIMEOUT_MS", "3600000")], &["STRIPE_TIMEOUT_MS"]),
            (
                &[
                    ("STRIPE_DEDUP_WINDOW_SECONDS", "600"),
                    ("RETRY_MAX_SECONDS", "900"),
                ],
                &["RETRY_MAX_SECONDS", "STRIPE_DEDUP_WINDOW_SECONDS"],
            ),
            (&[("LEASE_MARGIN_SECONDS", "-1")], &["LEASE_MARGIN_SECONDS"]),
            (
                &[
                    ("STRIPE_DEDUP_WINDOW_SECONDS", "3600"),
                    ("RETRY_MAX_SECONDS", "60"),
                    ("LEASE_MARGIN_SECONDS", "3600"),
                ],
                &["LEASE_MARGIN_SECONDS", "STRIPE_DEDUP_WINDOW_SECONDS"],
            ),
            (&[("MARGIN", "0")], &["MARGIN"]),
            (&[("CREDIT_PRICE_USD", "abc")], &["CREDIT_PRICE_USD"]),
            (&[("STRIPE_API_MODE", "v3")], &["STRIPE_API_MODE"]),
            (
                &[("DEFAULT_BUDGET_MODE", "strict")],
                &["DEFAULT_BUDGET_MODE"],
            ),
            (
                &[("BUDGET_ALERT_THRESHOLDS", "50,0")],
                &["BUDGET_ALERT_THRESHOLDS"],
            ),
            (&[("PROCESS_CONCURRENCY", "0")], &["PROCESS_CONCURRENCY"]),
            (
                &[("STRIPE_SECRET_KEY", "pk_test_public")],
                &["STRIPE_SECRET_KEY"],
            ),
        ];
        for (set, named) in cases {
            let mut vars = base();
            for (k, v) in *set {
                vars.insert(k, v);
            }
            let err = load(&vars).expect_err("refused").to_string();
            for name in *named {
                assert!(err.contains(name), "{set:?}: {err}");
            }
            assert!(!err.contains("sk_test_secret"), "no secret echoed: {err}");
        }
        for missing in [
            "LANGFUSE_BASE_URL",
            "STRIPE_METER_EVENT_NAME",
            "TABLE_NAME",
            "QUEUE_URL",
        ] {
            let mut vars = base();
            vars.remove(missing);
            let err = load(&vars).expect_err("missing").to_string();
            assert!(err.contains(missing), "{err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let cfg = load(&base()).expect("valid");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sk-lf-secret"));
        assert!(!shown.contains("sk_test_secret"));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("127.3.2.1"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("10.0.0.1"));
        assert!(!is_loopback_host("api.stripe.com"));
    }
}

#[cfg(test)]
mod ingest_tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("LANGFUSE_BASE_URL", "http://127.0.0.1:3000"),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-test"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-secret"),
            ("TABLE_NAME", "ledger"),
            ("QUEUE_URL", "http://127.0.0.1:5000/123456789012/meter"),
        ])
    }

    fn load(vars: &HashMap<&'static str, &'static str>) -> Result<IngestConfig> {
        IngestConfig::from_lookup(&|k| vars.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn ingest_defaults_need_no_stripe_settings() {
        let cfg = load(&base()).expect("valid");
        assert_eq!(cfg.settle, chrono::Duration::seconds(900));
        assert_eq!(cfg.rescan, chrono::Duration::seconds(86_400));
        assert_eq!(cfg.requests_per_minute, 30);
        assert_eq!(cfg.time_budget_margin, chrono::Duration::seconds(20));
        assert_eq!(cfg.langfuse.api, LangfuseApi::V2);
        assert!(!format!("{cfg:?}").contains("sk-lf-secret"));
    }

    #[test]
    fn ingest_missing_and_malformed_values_are_named() {
        for name in [
            "LANGFUSE_BASE_URL",
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
            "TABLE_NAME",
            "QUEUE_URL",
        ] {
            let mut vars = base();
            vars.remove(name);
            let err = load(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
        }
        for (name, value) in [
            ("RESCAN_SECONDS", "a day"),
            ("RESCAN_SECONDS", "-1"),
            ("SETTLE_SECONDS", "x"),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "0"),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "lots"),
            ("INGEST_TIME_BUDGET_MARGIN_SECONDS", "-3"),
            ("INGEST_SEND_ATTEMPTS", "0"),
            ("LANGFUSE_API", "v1"),
        ] {
            let mut vars = base();
            vars.insert(name, value);
            let err = load(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
