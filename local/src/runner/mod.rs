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

mod serve;
mod services;

pub use serve::{FIXTURE_TRACES, serve};
pub use services::{Services, services_from};

use crate::counting_proxy::CountingProxy;
use crate::drain::{Deadline, Drain, Drained};
use crate::harness::{IngestRig, StackOptions, TestStack};
use crate::stack::Moto;
use crate::summary::RunFigures;
use crate::{progress, summary, workload};
use anyhow::{Result, bail};
use indicatif::ProgressBar;
use services::options_for;
use std::time::{Duration, Instant};
use tracemeter::domain::message::{OutgoingMessage, SendFailure};
use tracemeter::ports::QueueSender;

/// The default sample of `make run`: enough traces for every case the summary shows (see
/// [`workload`]), few enough for a run of about half a minute on moto.
pub const DEFAULT_TRACES: usize = 250;

/// The seed of `make run`'s sample (the same sample every run).
pub const SAMPLE_SEED: u64 = 7;

/// Runs the whole pipeline once with `traces` sample traces and prints the summary.
pub async fn run(traces: usize) -> Result<()> {
    let lookup = |name: &str| std::env::var(name).ok();
    let services = services_from(&lookup)?;
    let started = Instant::now();
    let local = LocalRun::start(services, &lookup).await?;
    let failed = crate::operator::doctor(&local.stack).await?;
    if !failed.is_empty() && local.services.real_langfuse.is_none() && !local.services.real_stripe {
        bail!(
            "tracemeter doctor failed on the local stack: {}",
            failed.join("; ")
        );
    }
    let seeded = local.seed(traces).await?;
    let ingested = local.ingest(&seeded, &lookup).await?;
    let processing = Instant::now();
    let mut drained = local.process(&ingested).await?;
    let late = local.late_cost(&seeded, &ingested).await?;
    if let Some((_, more)) = &late {
        drained.polls.extend(more.polls.iter().cloned());
    }
    let processing_secs = processing.elapsed().as_secs_f64();
    eprintln!("[6/6] reading the ledger, budgets and Stripe's received events...");
    let report = summary::collect(&local.stack).await?;
    let figures = RunFigures {
        seeded: &seeded,
        ingest: &ingested.summary,
        stripe_fake: !local.services.real_stripe,
        batches: drained.polls.len(),
        processing_secs,
        total_secs: started.elapsed().as_secs_f64(),
        late_cost: late.as_ref().map(|(n, _)| *n),
        aws: local.proxy.counts(),
    };
    println!("{}", report.render(&figures));
    if !report.consistent(figures.stripe_fake) {
        bail!("the summary is inconsistent: Stripe, ledger and budget totals differ");
    }
    if figures.stripe_fake {
        crate::operator::reconcile(&local.stack).await?;
    }
    Ok(())
}

/// A local run's stack: moto behind a counting proxy, the fakes (or real services), the
/// resources of template.yaml.
struct LocalRun {
    services: Services,
    proxy: CountingProxy,
    stack: TestStack,
}

/// What the first ingest run did, and the messages other producers added.
struct Ingested {
    summary: ingest::IngestSummary,
    /// Messages in the queue for the processor: ingest's and the foreign ones.
    queued: u64,
    /// The ingest function's adapters (for the late-cost run).
    rig: IngestRig,
}

impl LocalRun {
    async fn start(
        services: Services,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LocalRun> {
        eprintln!(
            "[1/6] starting the local stack (moto on 127.0.0.1, Langfuse and Stripe fakes)..."
        );
        let spinner =
            progress::spinner("starting moto and creating the resources of template.yaml");
        let moto = Moto::try_shared()?;
        let proxy = CountingProxy::start(moto.endpoint()).await?;
        let options = StackOptions {
            aws_endpoint: Some(proxy.url()),
            ..options_for(&services, lookup)
        };
        let stack = TestStack::start_with("local", options).await?;
        spinner.finish_and_clear();
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
        Ok(LocalRun {
            services,
            proxy,
            stack,
        })
    }

    fn fake_langfuse(&self) -> bool {
        self.services.real_langfuse.is_none()
    }

    async fn seed(&self, traces: usize) -> Result<workload::Seeded> {
        if !self.fake_langfuse() {
            eprintln!("[2/6] real Langfuse: ingest reads the project's own settled usage");
            return Ok(workload::Seeded::default());
        }
        eprintln!(
            "[2/6] seeding {traces} sample traces, budgets and user mappings (TRACES=N for more)..."
        );
        let mut seeded = workload::seed_with(&self.stack, traces, SAMPLE_SEED, traces).await?;
        seeded.prices = crate::prices::seed_prices(&self.stack, chrono::Utc::now()).await?;
        Ok(seeded)
    }

    /// The ingest function, as the schedule runs it; then the foreign messages.
    async fn ingest(
        &self,
        seeded: &workload::Seeded,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Ingested> {
        eprintln!(
            "[3/6] running the ingest function as the schedule would ({} settled, {} still settling)...",
            seeded.settled.len(),
            seeded.settling
        );
        let vars = ingest_vars(self.fake_langfuse(), lookup);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let rig = self.stack.ingest(&vars);
        let bar = match self.fake_langfuse() {
            true => progress::bar(seeded.settled.len() as u64, "trace ids enqueued"),
            false => progress::counter("trace ids enqueued"),
        };
        let sender = Enqueued {
            inner: &rig.sqs,
            bar: &bar,
        };
        let summary = rig.run_with(&self.stack, &sender, 900).await?;
        bar.finish_and_clear();
        eprintln!(
            "      ingest: {:?}, {} Langfuse requests, {} traces found, {} enqueued, {} ms",
            summary.outcome,
            summary.requests,
            summary.traces_found,
            summary.enqueued,
            summary.elapsed_ms
        );
        if self.fake_langfuse() && summary.enqueued != seeded.settled.len() as u64 {
            bail!(
                "ingest enqueued {} traces but {} settled traces were seeded",
                summary.enqueued,
                seeded.settled.len()
            );
        }
        let mut queued = summary.enqueued;
        if self.fake_langfuse() {
            let foreign = workload::foreign_messages();
            eprintln!(
                "      another producer sends {} messages: a trace Langfuse does not know, a body that is not a meter message",
                foreign.len()
            );
            self.stack.send_bodies(&foreign).await?;
            queued += foreign.len() as u64;
        }
        Ok(Ingested {
            summary,
            queued,
            rig,
        })
    }

    /// Drains the queue as the SQS event source mapping does, with 5 concurrent pollers.
    async fn process(&self, ingested: &Ingested) -> Result<Drained> {
        eprintln!("[4/6] processing the queue as the SQS event source mapping does (5 pollers)...");
        self.drain(ingested.queued, "messages processed").await
    }

    async fn drain(&self, expected: u64, what: &str) -> Result<Drained> {
        let options = Drain {
            pollers: 5,
            deadline: Some(Deadline::Fail(Instant::now() + Duration::from_secs(600))),
            progress: Some(progress::bar(expected, what)),
            ..Drain::default()
        };
        let drained = self.stack.drain_with(&options).await?;
        if let Some(bar) = &options.progress {
            bar.finish_and_clear();
        }
        Ok(drained)
    }

    /// Late cost: a few billed traces get another model call; the next ingest run's re-scan
    /// finds them, and the processor bills the difference as revision 2. None with the real
    /// Langfuse (nothing of it is changed).
    async fn late_cost(
        &self,
        seeded: &workload::Seeded,
        ingested: &Ingested,
    ) -> Result<Option<(u64, Drained)>> {
        let late: Vec<String> = seeded.unlimited.iter().take(3).cloned().collect();
        if !self.fake_langfuse() || late.is_empty() {
            eprintln!("[5/6] late cost: skipped (real Langfuse, or no billed trace to add to)");
            return Ok(None);
        }
        eprintln!(
            "[5/6] late cost: {} billed traces get another model call; ingest re-scans, the processor bills the difference...",
            late.len()
        );
        workload::add_late_cost(&self.stack, &late);
        // The late observations start up to 6 hours back: the re-scan tiers read that range
        // again once it is old enough (docs/configuration.md, "Ingest's steady state"), so the clock moves
        // 7 hours on, as if ingest had ticked until then.
        self.stack.clock.advance(chrono::Duration::hours(7));
        let again = ingested
            .rig
            .run_with(&self.stack, &ingested.rig.sqs, 900)
            .await?;
        eprintln!(
            "      ingest: {:?}, {} enqueued again by the re-scan tiers ({} more settled meanwhile), {} skipped as already billed",
            again.outcome,
            again.rescan_enqueued,
            again.enqueued - again.rescan_enqueued,
            again.skipped_covered
        );
        let drained = self
            .drain(again.enqueued, "late revisions processed")
            .await?;
        Ok(Some((again.rescan_enqueued, drained)))
    }
}

/// Ingest's variables for a local run. The first run reaches back 41 days so that the
/// sample's too-old usage is found (and then refused by the processor, as Stripe would
/// refuse it); Langfuse's rate limit is the Hobby plan's for the real service.
fn ingest_vars(fake: bool, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    let lookback = lookup("INGEST_START_LOOKBACK_SECONDS")
        .unwrap_or_else(|| if fake { 41 * 86_400 } else { 86_400 }.to_string());
    let rpm = lookup("LANGFUSE_REQUESTS_PER_MINUTE")
        .unwrap_or_else(|| if fake { "1000" } else { "30" }.to_string());
    vec![
        ("LANGFUSE_REQUESTS_PER_MINUTE", rpm),
        ("INGEST_START_LOOKBACK_SECONDS", lookback),
        ("INGEST_TIME_BUDGET_MARGIN_SECONDS", "20".to_string()),
    ]
}

/// The real SQS sender, advancing a progress bar by the messages that went out (ingest's
/// longest step on moto).
struct Enqueued<'a> {
    inner: &'a dyn QueueSender,
    bar: &'a ProgressBar,
}

#[async_trait::async_trait]
impl QueueSender for Enqueued<'_> {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> tracemeter::Result<Vec<SendFailure>> {
        let failed = self.inner.send_batch(messages).await?;
        self.bar.inc((messages.len() - failed.len()) as u64);
        Ok(failed)
    }
}
