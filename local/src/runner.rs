//! The local runner behind `make run` and `make serve` (binary `tracemeter-local`).
//!
//! - [`run`]: the whole pipeline on the local stack: moto (project venv) and the Langfuse and
//!   Stripe fakes on loopback, the resources of template.yaml, a sample workload, the ingest
//!   handler as the schedule runs it, the process handler driven from the queue as the SQS
//!   event source mapping drives it, then a billing summary. With `LANGFUSE_BASE_URL` (and
//!   keys) or `STRIPE_SECRET_KEY` (test mode only) in the environment, the real service is
//!   used instead of its fake.
//! - [`serve`]: the same stack kept up for `cargo lambda watch` / `invoke` and `sam local
//!   invoke`: it seeds the traces the `events/` fixtures name and writes the functions'
//!   environment to a file, then waits until it is stopped.

use crate::harness::{StackOptions, TestStack};
use crate::{summary, workload};
use anyhow::{Result, bail};
use chrono::{Duration, Utc};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Configuration variables passed through from the caller's environment to both functions
/// (pricing, customers, budgets): the same names the functions read.
const PASS_THROUGH: &[&str] = &[
    "LANGFUSE_API",
    "CREDIT_PRICE_USD",
    "MARGIN",
    "COMPUTE_USD_PER_MINUTE",
    "CUSTOMER_METADATA_KEYS",
    "DEFAULT_CUSTOMER_ID",
    "DEFAULT_BUDGET_LIMIT",
    "DEFAULT_BUDGET_PERIOD",
    "DEFAULT_BUDGET_MODE",
    "BUDGET_ALERT_THRESHOLDS",
    "BYO_KEY_METADATA_KEY",
    "BYO_KEY_METADATA_VALUE",
    "SETTLE_SECONDS",
    "RESCAN_SECONDS",
    "INGEST_START_LOOKBACK_SECONDS",
    "LANGFUSE_REQUESTS_PER_MINUTE",
];

/// Which outside services a run talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services {
    /// Real Langfuse (base URL) instead of the fake.
    pub real_langfuse: Option<String>,
    /// Real Stripe (test mode) instead of the fake.
    pub real_stripe: bool,
}

/// Reads which real services the caller asked for, refusing what would be unsafe: a Stripe
/// live key (a local run must never bill real customers) or half a configuration.
pub fn services_from(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Services> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let real_langfuse = match set("LANGFUSE_BASE_URL") {
        Some(url) => {
            for key in ["LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"] {
                if set(key).is_none() {
                    bail!("LANGFUSE_BASE_URL is set (real Langfuse) but {key} is not");
                }
            }
            Some(url)
        }
        None => None,
    };
    let real_stripe = match set("STRIPE_SECRET_KEY") {
        Some(key) => {
            if !(key.starts_with("sk_test_") || key.starts_with("rk_test_")) {
                bail!(
                    "STRIPE_SECRET_KEY is not a test-mode key (sk_test_… or rk_test_…): a local \
                     run never sends meter events to a live account"
                );
            }
            if set("STRIPE_METER_EVENT_NAME").is_none() {
                bail!("STRIPE_SECRET_KEY is set (real Stripe) but STRIPE_METER_EVENT_NAME is not");
            }
            true
        }
        None => false,
    };
    Ok(Services {
        real_langfuse,
        real_stripe,
    })
}

fn options_for(services: &Services, lookup: &dyn Fn(&str) -> Option<String>) -> StackOptions {
    let mut options = StackOptions {
        visibility_timeout: Some(60),
        ..StackOptions::default()
    }
    .var("RETRY_BASE_SECONDS", 1)
    .var("RETRY_MAX_SECONDS", 5)
    .var("LANGFUSE_SCORE_ENABLED", "true");
    let mut pass: Vec<&str> = PASS_THROUGH.to_vec();
    if services.real_langfuse.is_some() {
        pass.extend([
            "LANGFUSE_BASE_URL",
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
        ]);
        // Never write scores into a real project unless asked to.
        options = options.var(
            "LANGFUSE_SCORE_ENABLED",
            lookup("LANGFUSE_SCORE_ENABLED").unwrap_or_else(|| "false".into()),
        );
    }
    if services.real_stripe {
        pass.extend([
            "STRIPE_API_BASE",
            "STRIPE_SECRET_KEY",
            "STRIPE_METER_EVENT_NAME",
        ]);
    }
    for name in pass {
        if let Some(v) = lookup(name).filter(|v| !v.trim().is_empty()) {
            options = options.var(name, v);
        }
    }
    options
}

/// Runs the whole pipeline once with `traces` sample traces and prints the summary.
pub async fn run(traces: usize) -> Result<()> {
    let lookup = |name: &str| std::env::var(name).ok();
    let services = services_from(&lookup)?;
    let started = Instant::now();
    eprintln!("[1/5] starting the local stack (moto on 127.0.0.1, Langfuse and Stripe fakes)...");
    let stack = TestStack::start_with("local", options_for(&services, &lookup)).await?;
    eprintln!(
        "      moto {}  table {}  queue {}",
        stack.endpoint, stack.resources.table_name, stack.resources.queue_url
    );
    if let Some(url) = &services.real_langfuse {
        eprintln!("      Langfuse: the real service at {url} (nothing is seeded into it)");
    }
    if services.real_stripe {
        eprintln!(
            "      Stripe: the real API in test mode, meter {}",
            stack.config.stripe.meter_event_name
        );
    }
    let seeded = if services.real_langfuse.is_some() {
        eprintln!("[2/5] real Langfuse: ingest reads the project's own settled usage");
        workload::Seeded::default()
    } else {
        eprintln!("[2/5] seeding {traces} sample traces, budgets and user mappings...");
        workload::seed(&stack, traces, 7).await?
    };
    eprintln!(
        "[3/5] running the ingest function as the schedule would ({} settled, {} still settling)...",
        seeded.settled.len(),
        seeded.settling
    );
    // The first run reaches back 41 days so that the sample's too-old usage is found (and
    // then refused by the processor, as Stripe would refuse it).
    let lookback = lookup("INGEST_START_LOOKBACK_SECONDS").unwrap_or_else(|| {
        if services.real_langfuse.is_some() {
            "86400".into()
        } else {
            (41 * 86_400).to_string()
        }
    });
    let rpm = lookup("LANGFUSE_REQUESTS_PER_MINUTE").unwrap_or_else(|| {
        if services.real_langfuse.is_some() {
            "30".into()
        } else {
            "1000".into()
        }
    });
    let ingest = stack.ingest(&[
        ("LANGFUSE_REQUESTS_PER_MINUTE", &rpm),
        ("INGEST_START_LOOKBACK_SECONDS", &lookback),
        ("INGEST_TIME_BUDGET_MARGIN_SECONDS", "20"),
    ]);
    let progress = Progress {
        inner: &ingest.sqs,
        sent: std::sync::atomic::AtomicUsize::new(0),
    };
    let ingested = ingest.run_with(&stack, &progress, 900).await?;
    eprintln!();
    eprintln!(
        "      ingest: {:?}, {} Langfuse requests, {} traces found, {} enqueued, {} ms",
        ingested.outcome,
        ingested.requests,
        ingested.traces_found,
        ingested.enqueued,
        ingested.elapsed_ms
    );
    if services.real_langfuse.is_none() && ingested.enqueued != seeded.settled.len() as u64 {
        bail!(
            "ingest enqueued {} traces but {} settled traces were seeded",
            ingested.enqueued,
            seeded.settled.len()
        );
    }
    eprintln!("[4/5] processing the queue as the SQS event source mapping does...");
    let processing = Instant::now();
    let polls = workload::drain_concurrently(&stack, 5, ingested.enqueued as usize).await?;
    let secs = processing.elapsed().as_secs_f64();
    eprintln!("[5/5] reading the ledger, budgets and Stripe's received events...");
    let report = summary::collect(&stack).await?;
    println!(
        "{}",
        report.render(
            &seeded,
            &ingested,
            !services.real_stripe,
            polls,
            secs,
            started.elapsed().as_secs_f64()
        )
    );
    if !report.consistent(!services.real_stripe) {
        bail!("the summary is inconsistent: Stripe, ledger and budget totals differ");
    }
    Ok(())
}

/// The real SQS sender, printing how many messages went out (ingest's longest step on moto).
struct Progress<'a> {
    inner: &'a dyn tracemeter::ports::QueueSender,
    sent: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl tracemeter::ports::QueueSender for Progress<'_> {
    async fn send_batch(
        &self,
        messages: &[tracemeter::domain::message::OutgoingMessage],
    ) -> tracemeter::Result<Vec<tracemeter::domain::message::SendFailure>> {
        let failed = self.inner.send_batch(messages).await?;
        let n = messages.len() - failed.len();
        let before = self.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if (before + n) / 250 > before / 250 {
            eprint!("\r      {} trace ids enqueued", before + n);
        }
        Ok(failed)
    }
}

/// The trace ids that `events/sqs-batch.json` and `events/sqs-duplicate.json` name.
pub const FIXTURE_TRACES: [&str; 2] = ["trace-001", "trace-002"];

/// Keeps the local stack up for `cargo lambda watch` / `invoke`: seeds the fixtures' traces
/// (settled, billable), writes the functions' environment to `env_file` (`NAME=value` lines,
/// loopback only), and waits for Ctrl-C / SIGTERM; then prints what the Stripe fake
/// received and stops everything.
pub async fn serve(env_file: &Path) -> Result<()> {
    let stack = TestStack::start_with(
        "serve",
        StackOptions {
            visibility_timeout: Some(30),
            ..StackOptions::default()
        },
    )
    .await?;
    let at = Utc::now() - Duration::hours(1);
    for (i, id) in FIXTURE_TRACES.iter().enumerate() {
        stack.langfuse.add_trace(
            crate::fakes::langfuse::FakeTrace::new(*id, at + Duration::seconds(i as i64))
                .meta("stripeCustomerId", "cus_local")
                .observation(crate::fakes::langfuse::FakeObservation::generation(
                    format!("{id}-gen"),
                    *id,
                    at,
                    at + Duration::seconds(2),
                    "gpt-4o-mini",
                    1_200,
                    300,
                    0.004,
                )),
        );
    }
    let mut env: BTreeMap<String, String> = stack.env.clone().into_iter().collect();
    env.insert("LANGFUSE_REQUESTS_PER_MINUTE".into(), "1000".into());
    env.insert("INGEST_TIME_BUDGET_MARGIN_SECONDS".into(), "2".into());
    env.insert("RUST_LOG".into(), "info".into());
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    if let Some(dir) = env_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(env_file, text)?;
    println!(
        "local stack ready: moto {}, Langfuse fake {}, Stripe fake {}; environment in {}",
        stack.endpoint,
        stack.langfuse.base_url(),
        stack.stripe.base_url(),
        env_file.display()
    );
    println!("seeded traces: {}", FIXTURE_TRACES.join(", "));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let totals = stack.stripe.totals_by_customer();
    println!(
        "stripe fake received {} meter events; credits by customer: {totals:?}",
        stack.stripe.events().len()
    );
    let _ = std::fs::remove_file(env_file);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn fakes_are_the_default() {
        let s = services_from(&lookup(&[])).unwrap();
        assert_eq!(s.real_langfuse, None);
        assert!(!s.real_stripe);
    }

    #[test]
    fn a_live_stripe_key_is_refused() {
        let err = services_from(&lookup(&[
            ("STRIPE_SECRET_KEY", "sk_live_abc"),
            ("STRIPE_METER_EVENT_NAME", "m"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("STRIPE_SECRET_KEY"), "{err}");
        assert!(!err.contains("sk_live_abc"), "the key is not echoed: {err}");
    }

    #[test]
    fn half_configurations_name_the_missing_variable() {
        let err = services_from(&lookup(&[(
            "LANGFUSE_BASE_URL",
            "https://cloud.langfuse.com",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("LANGFUSE_PUBLIC_KEY"), "{err}");
        let err = services_from(&lookup(&[("STRIPE_SECRET_KEY", "sk_test_x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_METER_EVENT_NAME"), "{err}");
        let s = services_from(&lookup(&[
            ("STRIPE_SECRET_KEY", "rk_test_x"),
            ("STRIPE_METER_EVENT_NAME", "llm_credits"),
            ("LANGFUSE_BASE_URL", "https://cloud.langfuse.com"),
            ("LANGFUSE_PUBLIC_KEY", "pk"),
            ("LANGFUSE_SECRET_KEY", "sk"),
        ]))
        .unwrap();
        assert!(s.real_stripe);
        assert_eq!(
            s.real_langfuse.as_deref(),
            Some("https://cloud.langfuse.com")
        );
    }

    #[test]
    fn only_named_variables_pass_through() {
        let vars = lookup(&[
            ("DEFAULT_CUSTOMER_ID", "cus_default"),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("HOME", "/root"),
        ]);
        let fakes = Services {
            real_langfuse: None,
            real_stripe: false,
        };
        let o = options_for(&fakes, &vars);
        assert!(
            o.env
                .contains(&("DEFAULT_CUSTOMER_ID".into(), "cus_default".into()))
        );
        assert!(
            !o.env
                .iter()
                .any(|(k, _)| k == "STRIPE_SECRET_KEY" || k == "HOME")
        );
    }
}
