//! The benchmark behind `make bench`: the real release bootstraps of both functions, run as
//! Lambda runs them (Runtime API emulator, a clean environment pointing only at loopback),
//! against moto behind a counting proxy and the Langfuse and Stripe fakes, with a sample
//! workload of N traces. It measures what the issue asks and prints it with the targets.
//!
//! What is observed, not assumed: Langfuse and Stripe requests (the fakes record them), AWS
//! calls and DynamoDB capacity units (the counting proxy), peak RSS and CPU time of the
//! function processes (`/proc/<pid>`), init time (spawn until the first `/invocation/next`),
//! invocation durations, bootstrap sizes.

pub mod day;
pub mod day_bench;
pub mod enqueues;
mod report;
mod targets;

pub use report::{BenchReport, FunctionFigures, prices, side_by_side};

use crate::counting_proxy::CountingProxy;
use crate::drain::{self, Deadline, Drain};
use crate::esm::EventSourceMapping;
use crate::function::{self, Function};
use crate::harness::{StackOptions, TestStack};
use crate::stack::{self, INGEST_FUNCTION, PROCESS_FUNCTION, Template};
use crate::write_meter::item_size;
use crate::{progress, summary, workload};
use anyhow::{Context, Result, bail};
use aws_lambda_events::event::sqs::SqsBatchResponse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Traces seeded.
    pub traces: usize,
    /// Langfuse fake latency per request.
    pub langfuse_latency: Duration,
    /// Stripe fake latency per meter event request: the time a v1 request holds its
    /// customer's one concurrent slot.
    pub stripe_latency: Duration,
    /// Langfuse rate limit (requests per minute), enforced by the fake and configured in
    /// ingest's request budget.
    pub langfuse_rpm: u32,
    /// Concurrent process function instances (the event source mapping's MaximumConcurrency).
    pub concurrency: usize,
    /// Stop processing after this long.
    pub time_limit: Duration,
    /// `v2` or `legacy`.
    pub langfuse_api: String,
    /// `STRIPE_API_MODE` of the process function: `v1` or `v2_stream`.
    pub stripe_mode: String,
    /// Extra function variables.
    pub extra_env: Vec<(String, String)>,
    /// Run ingest only (for ingest's memory at large N): no process instances.
    pub ingest_only: bool,
    /// `SCENARIO=backlog`: a large backlog on Langfuse's Hobby plan (5,000 traces, 30
    /// requests/min by default), judged on dead letters, 429s and the use of the budget.
    pub backlog: bool,
    /// `BATCH_SIZE`: the event source mapping's batch size instead of the template's.
    pub batch_size: Option<i32>,
}

/// The benchmark's local stack: moto, the fakes, the counting proxy and the functions'
/// environment (pointing at the proxy).
struct Bench {
    options: BenchOptions,
    template: Template,
    stack: TestStack,
    proxy: CountingProxy,
    env: HashMap<String, String>,
    /// The event source mapping, through the proxy.
    esm: EventSourceMapping,
    seeded: usize,
    /// Invocations that failed as a whole (no answer within the function's timeout: the
    /// batch comes back after the visibility timeout), and messages answered as failures.
    returned: std::sync::Mutex<(u64, u64)>,
}

/// What ingest did.
struct Ingested {
    function: Function,
    time: Duration,
    enqueued: u64,
}

/// Whether a Langfuse request is one of ingest's listings (a time range: v2 observations
/// `fromStartTime`, legacy traces `fromTimestamp`), not a processor's read.
fn is_listing(request: &crate::fakes::RecordedRequest) -> bool {
    let query = request.query.as_deref().unwrap_or_default();
    query.contains("fromStartTime") || query.contains("fromTimestamp")
}

/// Runs the benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchReport> {
    let bootstraps = [
        function::bootstrap("ingest"),
        function::bootstrap("process"),
    ];
    for b in &bootstraps {
        if !b.exists() {
            bail!(
                "{} is missing: run `make build ARCH=x86_64` first",
                b.display()
            );
        }
    }
    let bench = Bench::start(options).await?;
    let started = Instant::now();
    let (ingested, instances, process_time) = if bench.options.backlog {
        bench.ingest_and_process(&bootstraps).await?
    } else {
        let ingested = bench.ingest(&bootstraps[0]).await?;
        let processing = Instant::now();
        let instances = bench.process(&bootstraps[1], ingested.enqueued).await?;
        (ingested, instances, processing.elapsed())
    };
    let end_to_end = started.elapsed();
    let figures = [
        FunctionFigures::of(
            std::slice::from_ref(&ingested.function),
            &bootstraps[0],
            bench.template.function_memory_mb(INGEST_FUNCTION)?,
        )?,
        FunctionFigures::of(
            &instances,
            &bootstraps[1],
            bench.template.function_memory_mb(PROCESS_FUNCTION)?,
        )?,
    ];
    bench
        .report(ingested, figures, process_time, end_to_end)
        .await
}

impl Bench {
    async fn start(options: BenchOptions) -> Result<Bench> {
        let stack = TestStack::start_with(
            "bench",
            StackOptions {
                // The template's visibility timeout (6 x the function timeout).
                visibility_timeout: Some(180),
                ..StackOptions::default()
            }
            .var("LANGFUSE_API", &options.langfuse_api)
            .var("STRIPE_API_MODE", &options.stripe_mode),
        )
        .await?;
        stack.langfuse.set_latency(options.langfuse_latency);
        stack.stripe.set_latency(options.stripe_latency);
        eprintln!("[bench] seeding {} traces...", options.traces);
        let seeded = workload::seed(&stack, options.traces, 11).await?;
        stack.langfuse.set_rate_limit(Some(options.langfuse_rpm));
        stack.langfuse.clear_requests();
        let proxy = CountingProxy::start(&stack.endpoint).await?;
        let mut env = stack.env.clone();
        env.insert("AWS_ENDPOINT_URL".into(), proxy.url());
        env.insert(
            "LANGFUSE_REQUESTS_PER_MINUTE".into(),
            options.langfuse_rpm.to_string(),
        );
        env.insert(
            "INGEST_START_LOOKBACK_SECONDS".into(),
            (41 * 86_400).to_string(),
        );
        env.insert("INGEST_TIME_BUDGET_MARGIN_SECONDS".into(), "5".into());
        env.extend(options.extra_env.iter().cloned());
        let esm = EventSourceMapping {
            sqs: aws_sdk_sqs::Client::new(&stack::sdk_config(&proxy.url()).await),
            batch_size: options.batch_size.unwrap_or(stack.esm.batch_size),
            // The template's batching window, as Lambda's poller waits it.
            batching_window: Duration::from_secs(
                u64::try_from(
                    Template::load()?
                        .sqs_event_source(PROCESS_FUNCTION)?
                        .maximum_batching_window_seconds,
                )
                .unwrap_or(0),
            ),
            ..stack.esm.clone()
        };
        Ok(Bench {
            options,
            template: Template::load()?,
            seeded: seeded.settled.len() + seeded.settling,
            stack,
            proxy,
            env,
            esm,
            returned: std::sync::Mutex::new((0, 0)),
        })
    }

    /// One ingest invocation (release bootstrap, cold start), as a scheduled tick.
    async fn ingest(&self, bootstrap: &std::path::Path) -> Result<Ingested> {
        eprintln!("[bench] ingest (release bootstrap, cold start)...");
        let memory = self.template.function_memory_mb(INGEST_FUNCTION)?;
        let mut function = Function::spawn("ingest", bootstrap, &self.env, memory).await?;
        let started = Instant::now();
        let out = function
            .invoke(function::scheduled_event()?, 1, Duration::from_secs(900))
            .await
            .context("ingest invocation")?;
        let time = started.elapsed();
        let enqueued = out.get("enqueued").and_then(|v| v.as_u64()).unwrap_or(0);
        eprintln!(
            "[bench] ingest: {enqueued} enqueued in {:.1} s; processing with {} instances...",
            time.as_secs_f64(),
            self.options.concurrency
        );
        Ok(Ingested {
            function,
            time,
            enqueued,
        })
    }

    /// The backlog as Lambda runs it: the process instances started (their inits measured
    /// one at a time), then ingest's invocation, with the instances draining the queue as its
    /// messages arrive (the event source mapping does not wait for ingest to end), until
    /// ingest has ended and the queue is empty. Returns the processing time too (from
    /// ingest's start).
    async fn ingest_and_process(
        &self,
        [ingest, process]: &[std::path::PathBuf; 2],
    ) -> Result<(Ingested, Vec<Function>, Duration)> {
        let deadline = Instant::now() + self.options.time_limit;
        let instances = self.start_instances(process).await?;
        let started = Instant::now();
        let ingest_ended = AtomicBool::new(false);
        let ingesting = async {
            let ingested = self.ingest(ingest).await;
            ingest_ended.store(true, Ordering::SeqCst);
            ingested
        };
        let draining = async {
            loop {
                let last = ingest_ended.load(Ordering::SeqCst);
                self.drain(&instances, self.options.traces as u64, deadline)
                    .await?;
                if last || Instant::now() >= deadline {
                    return anyhow::Ok(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let (ingested, drained) = tokio::join!(ingesting, draining);
        let instances = instances.into_iter().map(|m| m.into_inner()).collect();
        Ok((ingested?, instances, drained?))
    }

    /// Langfuse requests of ingest (its listings) and of the processor (batch and per-trace
    /// reads), each with the 429s among them.
    fn langfuse_requests(&self) -> ((u64, u64), (u64, u64)) {
        let requests = self.stack.langfuse.requests();
        let count = |ingest: bool| {
            let of = requests.iter().filter(|r| is_listing(r) == ingest);
            let (n, limited) = of.fold((0, 0), |(n, l), r| (n + 1, l + u64::from(r.status == 429)));
            (n, limited)
        };
        (count(true), count(false))
    }

    /// Stripe requests and the 429 answers among them.
    fn stripe_requests(&self) -> (u64, u64) {
        let requests = self.stack.stripe.requests();
        let limited = requests.iter().filter(|r| r.status == 429).count();
        (requests.len() as u64, limited as u64)
    }

    /// Starts the process instances and drains the queue with them; returns them.
    async fn process(&self, bootstrap: &std::path::Path, enqueued: u64) -> Result<Vec<Function>> {
        let deadline = Instant::now() + self.options.time_limit;
        if self.options.ingest_only {
            return Ok(Vec::new());
        }
        let instances = self.start_instances(bootstrap).await?;
        self.drain(&instances, enqueued, deadline).await?;
        Ok(instances.into_iter().map(|m| m.into_inner()).collect())
    }

    /// Starts the process instances one at a time, as Lambda scales out (each init is
    /// measured without the others).
    async fn start_instances(
        &self,
        bootstrap: &std::path::Path,
    ) -> Result<Vec<tokio::sync::Mutex<Function>>> {
        let memory = self.template.function_memory_mb(PROCESS_FUNCTION)?;
        let mut instances = Vec::new();
        for _ in 0..self.options.concurrency {
            let f = Function::spawn("process", bootstrap, &self.env, memory).await?;
            f.wait_for_init().await;
            instances.push(tokio::sync::Mutex::new(f));
        }
        Ok(instances)
    }

    /// Drains the queue, poller `i` invoking instance `i`, until it is empty or the time
    /// limit passes.
    async fn drain(
        &self,
        instances: &[tokio::sync::Mutex<Function>],
        enqueued: u64,
        deadline: Instant,
    ) -> Result<()> {
        let timeout = Duration::from_secs(
            u64::try_from(self.template.function_timeout(PROCESS_FUNCTION)?).unwrap_or(30),
        );
        let options = Drain {
            pollers: instances.len(),
            deadline: Some(Deadline::Stop(deadline)),
            progress: Some(progress::bar(enqueued, "messages processed")),
            ..Drain::default()
        };
        let drained = drain::drain(&self.esm, &options, |i, event| async move {
            let records = event.records.len() as u64;
            let reply = instances[i]
                .lock()
                .await
                .invoke(serde_json::to_value(&event)?, records, timeout)
                .await?;
            Ok::<SqsBatchResponse, anyhow::Error>(serde_json::from_value(reply)?)
        })
        .await?;
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        returned.0 += drained.failed_invocations;
        returned.1 += drained.retried;
        if let Some(bar) = &options.progress {
            bar.finish();
        }
        Ok(())
    }

    async fn report(
        self,
        ingested: Ingested,
        [ingest, process]: [FunctionFigures; 2],
        process_time: Duration,
        end_to_end: Duration,
    ) -> Result<BenchReport> {
        let (langfuse_ingest, langfuse_process) = self.langfuse_requests();
        let returned = *self.returned.lock().unwrap_or_else(|e| e.into_inner());
        let summary = summary::collect(&self.stack).await?;
        let state = |s: &str| summary.states.get(s).copied().unwrap_or(0);
        Ok(BenchReport {
            seeded: self.seeded,
            enqueued: ingested.enqueued,
            metered: state("metered"),
            capped: state("capped"),
            failed: state("failed"),
            left: summary.queued,
            dlq: summary.dlq,
            ingest_time: ingested.time,
            end_to_end,
            langfuse_ingest,
            langfuse_process,
            process_time,
            stripe_requests: self.stripe_requests(),
            aws: self.proxy.counts(),
            aws_families: self.proxy.by_family(),
            returned,
            largest_item: largest_item(&self.stack).await?,
            ingest,
            process,
            consistent: summary.consistent(true),
            options: self.options,
        })
    }
}

/// The largest item in the ledger table, by DynamoDB's size rules (attribute names + values),
/// with its family (`TRACE#`, `RECEIPT#`, the partition key's prefix).
async fn largest_item(stack: &TestStack) -> Result<(usize, String)> {
    let mut largest = (0, String::new());
    summary::scan_table(stack, |item| {
        let size = item_size(item);
        if size > largest.0 {
            let pk = item.get("pk").and_then(|v| v.as_s().ok());
            let family = crate::counting_proxy::item_family(pk.map(String::as_str));
            largest = (size, family);
        }
    })
    .await?;
    Ok(largest)
}

/// The benchmark's settings from the environment (`TRACES`, `LANGFUSE_LATENCY_MS`,
/// `LANGFUSE_RPM`, `CONCURRENCY`, `TIME_LIMIT_SECONDS`, `LANGFUSE_API`, `BENCH_ENV`
/// as `NAME=value,NAME=value`, `INGEST_ONLY=1`, `SCENARIO=backlog`, `BATCH_SIZE`).
pub fn options_from_env() -> Result<BenchOptions> {
    fn num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
        match std::env::var(name) {
            Ok(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
            Err(_) => Ok(default),
        }
    }
    let extra_env = std::env::var("BENCH_ENV")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("BENCH_ENV entry {p:?} is not NAME=value"))
        })
        .collect::<Result<Vec<_>>>()?;
    let backlog = std::env::var("SCENARIO").is_ok_and(|v| v == "backlog");
    Ok(BenchOptions {
        traces: num("TRACES", if backlog { 5_000 } else { 1_000 })?,
        langfuse_latency: Duration::from_millis(num("LANGFUSE_LATENCY_MS", 20)?),
        stripe_latency: Duration::from_millis(num("STRIPE_LATENCY_MS", 100)?),
        langfuse_rpm: num("LANGFUSE_RPM", if backlog { 30 } else { 1_000 })?,
        concurrency: num("CONCURRENCY", 5)?,
        time_limit: Duration::from_secs(num("TIME_LIMIT_SECONDS", 1_200)?),
        langfuse_api: std::env::var("LANGFUSE_API").unwrap_or_else(|_| "v2".into()),
        stripe_mode: match std::env::var("STRIPE_API_MODE") {
            Ok(mode) => mode,
            Err(_) => Template::load()?
                .parameter_default("StripeApiMode")
                .ok_or_else(|| anyhow::anyhow!("template.yaml: StripeApiMode has no default"))?,
        },
        extra_env,
        ingest_only: std::env::var("INGEST_ONLY").is_ok_and(|v| v == "1" || v == "true"),
        backlog,
        batch_size: std::env::var("BATCH_SIZE")
            .ok()
            .map(|v| {
                v.parse()
                    .map_err(|_| anyhow::anyhow!("BATCH_SIZE={v:?} is not a number"))
            })
            .transpose()?,
    })
}
