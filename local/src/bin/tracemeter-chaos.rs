//! `tracemeter-chaos`: the reliability suite (see `tracemeter_local::chaos`).
//!
//! Settings from the environment: `CHAOS_TRACES` (default 300), `CHAOS_RATE` (fault rate
//! per boundary, default 0.1), `CHAOS_SEED` (42), `CHAOS_POLLERS` (4), `CHAOS_MINUTES`
//! (time limit, 15), `CHAOS_INVOCATION_SECONDS` (each invocation's deadline, 10; the
//! visibility timeout is 2 s more), `CHAOS_LOG` (log file, default `target/chaos.log`), `LANGFUSE_API`
//! (`v2`, or `legacy`), `STRIPE_API_MODE` (`v2_stream`, the template's default, or `v1`) and
//! `LANGFUSE_REQUESTS_PER_MINUTE` (the shared request budget, 30 as the template's
//! default, or `unlimited`). Prints the
//! figures and the invariants; exits 1 when one did not hold.

use anyhow::{Context, Result, bail};
use std::time::Duration;
use tracemeter_local::chaos::{self, ChaosOptions};
use tracemeter_local::logscan::Scanning;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        _ => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let defaults = ChaosOptions::default();
    let rate: f64 = setting("CHAOS_RATE", defaults.rate)?;
    if !(0.0..=1.0).contains(&rate) {
        bail!("CHAOS_RATE={rate} must be between 0 and 1");
    }
    let options = ChaosOptions {
        traces: setting("CHAOS_TRACES", defaults.traces)?,
        rate,
        seed: setting("CHAOS_SEED", defaults.seed)?,
        pollers: setting("CHAOS_POLLERS", defaults.pollers)?,
        time_limit: Duration::from_secs(60 * setting("CHAOS_MINUTES", 15u64)?),
        langfuse_api: setting("LANGFUSE_API", defaults.langfuse_api)?,
        stripe_mode: setting("STRIPE_API_MODE", defaults.stripe_mode)?,
        langfuse_requests_per_minute: setting(
            "LANGFUSE_REQUESTS_PER_MINUTE",
            defaults.langfuse_requests_per_minute,
        )?,
        invocation_seconds: setting("CHAOS_INVOCATION_SECONDS", defaults.invocation_seconds)?,
    };
    let log_path = setting("CHAOS_LOG", "target/chaos.log".to_string())?;
    let log = std::fs::File::create(&log_path).with_context(|| format!("CHAOS_LOG={log_path}"))?;
    // Every line the functions log goes to the file through the secret scanner.
    tracing_subscriber::fmt()
        .with_writer(Scanning(std::sync::Mutex::new(log)))
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,tracemeter=debug,process=debug,ingest=debug,aws_smithy_runtime=warn,aws_config=warn,hyper=warn",
        ))
        .init();
    eprintln!(
        "tracemeter-chaos: {} traces, fault rate {:.0} % per boundary, seed {}, {} pollers, Langfuse {}, Stripe {}, logs in {log_path}",
        options.traces,
        options.rate * 100.0,
        options.seed,
        options.pollers,
        options.langfuse_api,
        options.stripe_mode
    );
    let report = chaos::run(&options).await?;
    println!("{}", report.render());
    if !report.passed() {
        bail!("an invariant did not hold (see above and {log_path})");
    }
    Ok(())
}
