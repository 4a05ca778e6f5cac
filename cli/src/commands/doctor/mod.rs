//! `tracemeter doctor`: one deployment's configuration checked against the live services
//! and the AWS resources it can see, before anything runs. One line per check (OK, WARN,
//! FAIL) with the fix; `--json` for scripts; exit 0 only when nothing fails.
//!
//! It reads the variables the functions and the other verbs read (the Langfuse and Stripe
//! variables, TABLE_NAME, QUEUE_URL, DLQ_URL, STRIPE_METER_ID), plus
//! PROCESS_TIMEOUT_SECONDS (the process function's timeout, default 30 as template.yaml
//! deploys it). A variable that is missing or malformed is a FAIL of its own, and the checks
//! that need it are left out.

mod dynamodb;
mod lambda;
mod langfuse;
mod report;
mod secrets;
mod sqs;
mod stripe;

pub use report::{Check, Report, Status};

use std::io::Write;
use std::sync::Arc;
use tracemeter::adapters::secrets::SecretsManagerSource;
use tracemeter::config::{LangfuseConfig, StripeConfig};
use tracemeter::ports::SecretSource;

const LANGFUSE_JSON: &str = r#"{"public_key": "pk-lf-...", "secret_key": "sk-lf-..."}"#;
const STRIPE_JSON: &str = r#"{"secret_key": "sk_..."}"#;
/// The process function's timeout as template.yaml deploys it.
const DEFAULT_PROCESS_TIMEOUT: u32 = 30;

/// Runs every check with the variables `lookup` gives and the AWS configuration `aws`,
/// writes the report (JSON with `json`) and returns the exit code: 0 when nothing failed,
/// 1 when a check failed or the report could not be written.
pub async fn doctor(
    lookup: &dyn Fn(&str) -> Option<String>,
    aws: &aws_config::SdkConfig,
    json: bool,
    out: &mut dyn Write,
) -> u8 {
    let report = examine(lookup, aws).await;
    let written = match json {
        true => writeln!(out, "{}", report.json()),
        false => write!(out, "{}", report.human()),
    };
    match (written, report.count(Status::Fail)) {
        (Ok(()), 0) => 0,
        _ => 1,
    }
}

/// Every check, in order: secrets and Langfuse, Stripe, DynamoDB, SQS, Lambda and schedule.
pub async fn examine(
    lookup: &dyn Fn(&str) -> Option<String>,
    aws: &aws_config::SdkConfig,
) -> Report {
    let secrets = SecretsManagerSource::shared(aws);
    let mut checks = Vec::new();
    checks.extend(langfuse_checks(lookup, secrets.clone()).await);
    checks.extend(stripe_checks(lookup, secrets).await);
    match lookup("TABLE_NAME") {
        Some(table) => {
            let client = aws_sdk_dynamodb::Client::new(aws);
            checks.extend(dynamodb::check(&client, &table).await);
        }
        None => checks.push(unset("dynamodb.table", "TABLE_NAME", "the ledger table")),
    }
    let timeout = match process_timeout(lookup) {
        Ok(t) => t,
        Err(check) => {
            checks.push(check);
            DEFAULT_PROCESS_TIMEOUT
        }
    };
    match lookup("QUEUE_URL") {
        Some(url) => {
            let client = aws_sdk_sqs::Client::new(aws);
            let dlq = lookup("DLQ_URL");
            checks.extend(sqs::check(&client, &url, dlq.as_deref(), timeout).await);
        }
        None => checks.push(unset("sqs.queue", "QUEUE_URL", "the meter queue's URL")),
    }
    checks.extend(lambda::check(timeout));
    Report { checks }
}

async fn langfuse_checks(
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: Arc<dyn SecretSource>,
) -> Vec<Check> {
    let cfg = match LangfuseConfig::from_lookup(lookup) {
        Ok(cfg) => cfg,
        Err(e) => return vec![config_failure("config.langfuse", e, "Langfuse")],
    };
    let (check, keys) = secrets::check("secrets.langfuse", &cfg.keys, LANGFUSE_JSON, secrets).await;
    let mut checks = vec![check];
    if let Some(keys) = keys {
        checks.extend(langfuse::check(&cfg, keys).await);
    }
    checks
}

async fn stripe_checks(
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: Arc<dyn SecretSource>,
) -> Vec<Check> {
    let cfg = match StripeConfig::from_lookup(lookup) {
        Ok(cfg) => cfg,
        Err(e) => return vec![config_failure("config.stripe", e, "Stripe")],
    };
    let (check, key) = secrets::check("secrets.stripe", &cfg.key, STRIPE_JSON, secrets).await;
    let mut checks = vec![check];
    if let Some(key) = key {
        let meter = lookup("STRIPE_METER_ID");
        checks.extend(stripe::check(&cfg, key, meter.as_deref()).await);
    }
    checks
}

/// A configuration error: the service's checks cannot run.
fn config_failure(name: &'static str, e: tracemeter::Error, service: &str) -> Check {
    Check::fail(
        name,
        format!("{e} (the {service} checks need it)"),
        "export the variables the functions have (docs/deploying.md, step 4)",
    )
}

fn unset(name: &'static str, variable: &str, what: &str) -> Check {
    Check::fail(
        name,
        format!("{variable} is not set"),
        format!("set {variable} to {what} (the outputs of sam deploy)"),
    )
}

/// `PROCESS_TIMEOUT_SECONDS` (1 to 900), or the template's 30.
fn process_timeout(lookup: &dyn Fn(&str) -> Option<String>) -> Result<u32, Check> {
    let Some(raw) = lookup("PROCESS_TIMEOUT_SECONDS") else {
        return Ok(DEFAULT_PROCESS_TIMEOUT);
    };
    match raw.trim().parse::<u32>() {
        Ok(t) if (1..=900).contains(&t) => Ok(t),
        _ => Err(Check::fail(
            "config.process_timeout",
            format!(
                "PROCESS_TIMEOUT_SECONDS={raw:?} is not valid: expected seconds, 1 to 900 (the process function's timeout)"
            ),
            "set it to the process function's Timeout, or unset it for template.yaml's 30",
        )),
    }
}
