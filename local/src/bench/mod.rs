//! The benchmark behind `make bench`: the real release bootstraps of both functions, run as
//! Lambda runs them (Runtime API emulator, a clean environment pointing only at loopback),
//! against moto behind a counting proxy and the Langfuse and Stripe fakes, with a sample
//! workload of N traces. It measures what the issue asks and prints it with the targets.
//!
//! What is observed, not assumed: Langfuse and Stripe requests (the fakes record them), AWS
//! calls and DynamoDB capacity units (the counting proxy), peak RSS and CPU time of the
//! function processes (`/proc/<pid>`), init time (spawn until the first `/invocation/next`),
//! invocation durations, bootstrap sizes.

use crate::counting_proxy::{CountingProxy, Counts};
use crate::esm::EventSourceMapping;
use crate::harness::{StackOptions, TestStack};
use crate::runtime_api::RuntimeApi;
use crate::stack::{self, INGEST_FUNCTION, PROCESS_FUNCTION, Template};
use crate::{summary, workload};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// On-demand list prices used for the cost figure (us-east-1, USD).
pub mod prices {
    /// Lambda arm64, per GB-second.
    pub const LAMBDA_ARM64_GB_SECOND: f64 = 0.000_013_333_4;
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// DynamoDB on-demand, per write request unit.
    pub const DYNAMODB_WRU: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit.
    pub const DYNAMODB_RRU: f64 = 0.125 / 1e6;
    /// SQS standard, per request (64 KB chunk).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Traces seeded.
    pub traces: usize,
    /// Langfuse fake latency per request.
    pub langfuse_latency: Duration,
    /// Langfuse rate limit (requests per minute), enforced by the fake and configured in
    /// ingest's request budget.
    pub langfuse_rpm: u32,
    /// Concurrent process function instances (the event source mapping's MaximumConcurrency).
    pub concurrency: usize,
    /// Stop processing after this long.
    pub time_limit: Duration,
    /// `v2` or `legacy`.
    pub langfuse_api: String,
    /// Extra function variables (e.g. a Stripe mode).
    pub extra_env: Vec<(String, String)>,
    /// Run ingest only (for ingest's memory at large N): no process instances.
    pub ingest_only: bool,
}

/// One function process under the Runtime API emulator.
struct Function {
    // The child is declared (so dropped, i.e. killed) before its Runtime API stops answering.
    child: tokio::process::Child,
    name: &'static str,
    api: RuntimeApi,
    /// CPU time spent in init (read before the first invocation).
    init_cpu: Option<Duration>,
    /// CPU time when the first invocation ended (it pays for lazily built TLS roots etc.).
    first_cpu: Option<Duration>,
    /// Messages handled after the first invocation.
    warm_records: u64,
    spawned: Instant,
    invocations: u64,
    busy: Duration,
}

impl Function {
    fn spawn(
        name: &'static str,
        binary: &Path,
        env: &HashMap<String, String>,
        api: RuntimeApi,
        memory_mb: i32,
    ) -> Result<Function> {
        let spawned = Instant::now();
        let child = tokio::process::Command::new(binary)
            .env_clear()
            .envs(env.iter())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Function {
            child,
            name,
            api,
            init_cpu: None,
            first_cpu: None,
            warm_records: 0,
            spawned,
            invocations: 0,
            busy: Duration::ZERO,
        })
    }

    async fn invoke(
        &mut self,
        event: serde_json::Value,
        records: u64,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        if self.init_cpu.is_none() {
            // Take init's CPU time apart from the invocations'.
            self.wait_for_init().await;
            self.init_cpu = Some(self.usage()?.1);
        }
        let started = Instant::now();
        let reply = self.api.invoke(event, timeout).await?;
        self.busy += started.elapsed();
        self.invocations += 1;
        if self.first_cpu.is_none() {
            self.first_cpu = Some(self.usage()?.1);
        } else {
            self.warm_records += records;
        }
        reply.map_err(|e| anyhow::anyhow!("{} returned an error: {e}", self.name))
    }

    /// Waits (up to 10 s) until the function polls for its first invocation.
    async fn wait_for_init(&self) {
        let waited = Instant::now();
        while self.api.first_poll().is_none() && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// (peak RSS in KB, CPU time) of the process so far.
    fn usage(&self) -> Result<(u64, Duration)> {
        let pid = self.child.id().context("the function process exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((hwm, Duration::from_millis(ticks * 1000 / clock_ticks())))
    }

    fn init_time(&self) -> Option<Duration> {
        self.api.first_poll().map(|t| t - self.spawned)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (asked once).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Figures of one function.
#[derive(Debug, Clone, Default)]
pub struct FunctionFigures {
    /// Instances started.
    pub instances: usize,
    /// Invocations.
    pub invocations: u64,
    /// Summed invocation wall time.
    pub busy: Duration,
    /// Largest peak RSS of an instance, KB.
    pub peak_rss_kb: u64,
    /// CPU time of all instances in invocations (init excluded).
    pub cpu: Duration,
    /// CPU time of all instances in init.
    pub init_cpu: Duration,
    /// CPU time after each instance's first invocation.
    pub warm_cpu: Duration,
    /// Messages handled after each instance's first invocation.
    pub warm_records: u64,
    /// Slowest init of an instance.
    pub init: Option<Duration>,
    /// Bootstrap size in bytes.
    pub bootstrap_bytes: u64,
    /// Configured memory (MB).
    pub memory_mb: i32,
}

async fn figures(
    functions: &[Function],
    bootstrap: &Path,
    memory_mb: i32,
) -> Result<FunctionFigures> {
    let mut f = FunctionFigures {
        instances: functions.len(),
        bootstrap_bytes: std::fs::metadata(bootstrap)?.len(),
        memory_mb,
        ..FunctionFigures::default()
    };
    for func in functions {
        let (hwm, cpu) = func.usage()?;
        let init_cpu = func.init_cpu.unwrap_or_default();
        f.peak_rss_kb = f.peak_rss_kb.max(hwm);
        f.cpu += cpu.saturating_sub(init_cpu);
        f.init_cpu += init_cpu;
        f.warm_cpu += func
            .first_cpu
            .map_or(Duration::ZERO, |c| cpu.saturating_sub(c));
        f.warm_records += func.warm_records;
        f.invocations += func.invocations;
        f.busy += func.busy;
        f.init = f.init.max(func.init_time());
    }
    Ok(f)
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Settings.
    pub options: BenchOptions,
    /// Traces seeded, settled (billable or permanently failing), enqueued by ingest.
    pub seeded: usize,
    /// Enqueued by ingest.
    pub enqueued: u64,
    /// Ledger entries metered.
    pub metered: u64,
    /// Ledger entries capped / failed.
    pub capped: u64,
    /// Ledger entries failed.
    pub failed: u64,
    /// Messages left in the queue / DLQ.
    pub left: i64,
    /// DLQ depth.
    pub dlq: i64,
    /// Ingest wall time and end-to-end wall time.
    pub ingest_time: Duration,
    /// From the ingest invocation to the queue drained.
    pub end_to_end: Duration,
    /// Langfuse requests during ingest / processing, and 429 answers of each.
    pub langfuse_ingest: (u64, u64),
    /// Langfuse requests during processing and their 429s.
    pub langfuse_process: (u64, u64),
    /// Processing wall time.
    pub process_time: Duration,
    /// Stripe requests.
    pub stripe_requests: u64,
    /// AWS calls.
    pub aws: Counts,
    /// Largest ledger table item, bytes (approximate, by DynamoDB's size rules).
    pub largest_item: usize,
    /// Ingest figures.
    pub ingest: FunctionFigures,
    /// Process figures.
    pub process: FunctionFigures,
    /// Stripe = ledger = budgets per customer.
    pub consistent: bool,
}

/// Runs the benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchReport> {
    let root = stack::repo_root();
    let ingest_bin = bootstrap("ingest");
    let process_bin = bootstrap("process");
    for b in [&ingest_bin, &process_bin] {
        if !b.exists() {
            bail!(
                "{} is missing: run `make build ARCH=x86_64` first",
                b.display()
            );
        }
    }
    let template = Template::load()?;
    let stack = TestStack::start_with(
        "bench",
        StackOptions {
            visibility_timeout: Some(60),
            ..StackOptions::default()
        }
        .var("LANGFUSE_API", &options.langfuse_api)
        .var("RETRY_BASE_SECONDS", 2)
        .var("RETRY_MAX_SECONDS", 10),
    )
    .await?;
    stack.langfuse.set_latency(options.langfuse_latency);
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
    for (k, v) in &options.extra_env {
        env.insert(k.clone(), v.clone());
    }
    let sdk = stack::sdk_config(&proxy.url()).await;
    let esm = EventSourceMapping {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        ..stack.esm.clone()
    };

    eprintln!("[bench] ingest (release bootstrap, cold start)...");
    let mut ingest = Function::spawn(
        "ingest",
        &ingest_bin,
        &env,
        RuntimeApi::start().await?,
        template.function_memory_mb(INGEST_FUNCTION)?,
    )?;
    let started = Instant::now();
    let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("events/scheduled.json"),
    )?)?;
    let out = ingest
        .invoke(event, 1, Duration::from_secs(900))
        .await
        .context("ingest invocation")?;
    let ingest_time = started.elapsed();
    let enqueued = out.get("enqueued").and_then(|v| v.as_u64()).unwrap_or(0);
    let ingest_requests = stack.langfuse.requests();
    let langfuse_ingest = (
        ingest_requests.len() as u64,
        ingest_requests.iter().filter(|r| r.status == 429).count() as u64,
    );
    stack.langfuse.clear_requests();
    eprintln!(
        "[bench] ingest: {enqueued} enqueued in {:.1} s; processing with {} instances...",
        ingest_time.as_secs_f64(),
        options.concurrency
    );

    let processing = Instant::now();
    let mut instances = Vec::new();
    let instance_count = if options.ingest_only {
        0
    } else {
        options.concurrency
    };
    for _ in 0..instance_count {
        let f = Function::spawn(
            "process",
            &process_bin,
            &env,
            RuntimeApi::start().await?,
            template.function_memory_mb(PROCESS_FUNCTION)?,
        )?;
        // One at a time, as Lambda scales out: each init is measured without the others.
        f.wait_for_init().await;
        instances.push(f);
    }
    let timeout = Duration::from_secs(
        u64::try_from(template.function_timeout(PROCESS_FUNCTION)?).unwrap_or(30),
    );
    let until = processing + options.time_limit;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let pollers = instances.iter_mut().map(|f| {
        let esm = &esm;
        let done = &done;
        async move {
            loop {
                if Instant::now() > until {
                    return Ok::<(), anyhow::Error>(());
                }
                match esm.receive(1).await? {
                    Some(event) => {
                        let records = event.records.len() as u64;
                        let result = f
                            .invoke(serde_json::to_value(&event)?, records, timeout)
                            .await;
                        let response = result.and_then(|v| {
                            serde_json::from_value::<
                                aws_lambda_events::event::sqs::SqsBatchResponse,
                            >(v)
                            .map_err(anyhow::Error::from)
                        });
                        let report = esm.complete(&event, &response).await?;
                        let d = done
                            .fetch_add(report.deleted, std::sync::atomic::Ordering::Relaxed)
                            + report.deleted;
                        if d / 250 > (d - report.deleted) / 250 {
                            eprint!("\r[bench] {d}/{enqueued} messages done");
                        }
                    }
                    None => {
                        let (visible, in_flight) = esm.depth(&esm.queue_url).await?;
                        if visible == 0 && in_flight == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    });
    for r in futures::future::join_all(pollers).await {
        r?;
    }
    eprintln!();
    let process_time = processing.elapsed();
    let end_to_end = started.elapsed();
    let process_requests = stack.langfuse.requests();
    let langfuse_process = (
        process_requests.len() as u64,
        process_requests.iter().filter(|r| r.status == 429).count() as u64,
    );
    let aws = proxy.counts();
    let ingest_figures = figures(
        std::slice::from_ref(&ingest),
        &ingest_bin,
        template.function_memory_mb(INGEST_FUNCTION)?,
    )
    .await?;
    let process_figures = figures(
        &instances,
        &process_bin,
        template.function_memory_mb(PROCESS_FUNCTION)?,
    )
    .await?;
    let report = summary::collect(&stack).await?;
    let state = |s: &str| report.states.get(s).copied().unwrap_or(0);
    Ok(BenchReport {
        seeded: seeded.settled.len() + seeded.settling,
        enqueued,
        metered: state("metered"),
        capped: state("capped"),
        failed: state("failed"),
        left: report.queued,
        dlq: report.dlq,
        ingest_time,
        end_to_end,
        langfuse_ingest,
        langfuse_process,
        process_time,
        stripe_requests: stack.stripe.request_count() as u64,
        aws,
        largest_item: largest_item(&stack).await?,
        ingest: ingest_figures,
        process: process_figures,
        consistent: report.consistent(true),
        options,
    })
}

/// The largest item in the ledger table, by DynamoDB's size rules (attribute names + values).
async fn largest_item(stack: &TestStack) -> Result<usize> {
    use aws_sdk_dynamodb::types::AttributeValue;
    fn size(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len().div_ceil(2) + 1,
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| k.len() + size(v) + 1).sum::<usize>(),
            AttributeValue::L(l) => 3 + l.iter().map(|v| size(v) + 1).sum::<usize>(),
            AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
            _ => 16,
        }
    }
    let mut largest = 0;
    let mut start = None;
    loop {
        let out = stack
            .ledger
            .client()
            .scan()
            .table_name(&stack.resources.table_name)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("Scan")?;
        for item in out.items() {
            largest = largest.max(item.iter().map(|(k, v)| k.len() + size(v)).sum());
        }
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(largest);
        }
    }
}

impl BenchReport {
    fn aws_sum(&self, prefix: &str, f: impl Fn(&crate::counting_proxy::OpCount) -> f64) -> f64 {
        self.aws
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, c)| f(c))
            .sum()
    }

    /// Prints the report with the targets.
    pub fn render(&self) -> String {
        let o = &self.options;
        let m = self.metered.max(1) as f64;
        let mut s = String::new();
        let mut line = |t: String| {
            let _ = writeln!(s, "{t}");
        };
        let check = |ok: bool| if ok { "PASS" } else { "MISS" };
        line(format!(
            "\ntracemeter benchmark: {} traces, Langfuse {} ({} ms per request, {} requests/min), {} process instances",
            o.traces,
            o.langfuse_api,
            o.langfuse_latency.as_millis(),
            o.langfuse_rpm,
            o.concurrency
        ));
        line("machine: 2 cores, x86_64, moto server (Python) for DynamoDB and SQS; release bootstraps (x86_64 stands in for arm64)".into());
        line(format!(
            "traces: {} seeded, {} enqueued by ingest, {} metered, {} capped, {} failed (permanent), {} left in the queue, DLQ {}; Stripe = ledger = budgets: {}",
            self.seeded,
            self.enqueued,
            self.metered,
            self.capped,
            self.failed,
            self.left,
            self.dlq,
            if self.consistent { "yes" } else { "NO" }
        ));
        let e2e = self.end_to_end.as_secs_f64();
        line(format!(
            "end to end: {:.1} s, {:.1} traces/s (ingest {:.1} s, processing {:.1} s)",
            e2e,
            self.enqueued as f64 / e2e.max(1e-9),
            self.ingest_time.as_secs_f64(),
            self.process_time.as_secs_f64()
        ));
        let rate = |n: u64, d: Duration| n as f64 * 60.0 / d.as_secs_f64().max(1e-9);
        let (li, li429) = self.langfuse_ingest;
        let (lp, lp429) = self.langfuse_process;
        let share = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
        line(format!(
            "Langfuse rate: ingest {li} requests ({:.0}/min = {:.0} % of {}/min, 429s {:.2} %); processing {lp} requests ({:.0}/min = {:.0} % of the limit, 429s {:.2} %)",
            rate(li, self.ingest_time),
            100.0 * rate(li, self.ingest_time) / f64::from(o.langfuse_rpm),
            o.langfuse_rpm,
            share(li429, li),
            rate(lp, self.process_time),
            100.0 * rate(lp, self.process_time) / f64::from(o.langfuse_rpm),
            share(lp429, lp)
        ));
        let langfuse_per = (li + lp) as f64 / m;
        let processed = (self.metered + self.capped + self.failed).max(1) as f64;
        let billed = (self.metered + self.capped).max(1) as f64;
        let langfuse_per_processed = (li + lp) as f64 / processed;
        let ddb_calls = self.aws_sum("DynamoDB", |c| c.calls as f64);
        let wcu = self.aws_sum("DynamoDB", |c| c.wcu);
        let rcu = self.aws_sum("DynamoDB", |c| c.rcu);
        let sqs_calls = self.aws_sum("AmazonSQS", |c| c.calls as f64);
        let sqs_empty = self.aws_sum("AmazonSQS", |c| c.empty as f64);
        line("per metered trace:".into());
        line(format!(
            "  Langfuse requests {:.3} ({:.3} per trace processed: metered, capped or failed)   Stripe requests {:.3}   DynamoDB calls {:.2} (WCU {:.2}, RCU {:.2}; largest item {} B)   SQS requests {:.2} (+{:.0} empty receives of the local pollers, not counted)",
            langfuse_per,
            langfuse_per_processed,
            self.stripe_requests as f64 / m,
            ddb_calls / m,
            wcu / m,
            rcu / m,
            self.largest_item,
            (sqs_calls - sqs_empty) / m,
            sqs_empty
        ));
        for (op, c) in &self.aws {
            line(format!(
                "    {op:<42} {:>7} calls  {:>8.1} WCU  {:>8.1} RCU{}",
                c.calls,
                c.wcu,
                c.rcu,
                if c.empty > 0 {
                    format!("  ({} empty)", c.empty)
                } else {
                    String::new()
                }
            ));
        }
        for (name, f, traces) in [
            ("ingest", &self.ingest, self.enqueued.max(1)),
            ("process", &self.process, self.metered.max(1)),
        ] {
            line(format!(
                "{name}: bootstrap {:.2} MB, init {} ms ({} ms CPU per instance), peak RSS {:.1} MB, CPU in invocations {} ms = {:.3} ms per trace ({}), {} invocations in {} instance(s), {:.1} s busy, {} MB configured",
                f.bootstrap_bytes as f64 / 1e6,
                f.init.map_or("?".into(), |d| d.as_millis().to_string()),
                f.init_cpu.as_millis() / f.instances.max(1) as u128,
                f.peak_rss_kb as f64 / 1024.0,
                f.cpu.as_millis(),
                f.cpu.as_secs_f64() * 1000.0 / traces as f64,
                if f.warm_records > 0 {
                    format!(
                        "warm: {:.3} ms per message after each instance's first invocation",
                        warm_per_message(f)
                    )
                } else {
                    "one invocation".to_string()
                },
                f.invocations,
                f.instances,
                f.busy.as_secs_f64(),
                f.memory_mb
            ));
        }
        if o.ingest_only {
            line("INGEST_ONLY: nothing was processed, so per-trace costs and targets are not computed".into());
            return s;
        }
        // Cost per million metered traces, from the measured calls and durations.
        let gb_s = |f: &FunctionFigures| f.busy.as_secs_f64() * f64::from(f.memory_mb) / 1024.0;
        let lambda = (gb_s(&self.ingest) + gb_s(&self.process)) * prices::LAMBDA_ARM64_GB_SECOND
            + (self.ingest.invocations + self.process.invocations) as f64 * prices::LAMBDA_REQUEST;
        let lambda_cpu = (self.ingest.cpu.as_secs_f64() * f64::from(self.ingest.memory_mb)
            + self.process.cpu.as_secs_f64() * f64::from(self.process.memory_mb))
            / 1024.0
            * prices::LAMBDA_ARM64_GB_SECOND
            + (self.ingest.invocations + self.process.invocations) as f64 * prices::LAMBDA_REQUEST;
        let ddb = wcu * prices::DYNAMODB_WRU + rcu * prices::DYNAMODB_RRU;
        let sqs = (sqs_calls - sqs_empty) * prices::SQS_REQUEST;
        let per_million = |usd: f64| usd / m * 1e6;
        let total = per_million(lambda + ddb + sqs);
        line(format!(
            "AWS cost per million metered traces: {:.2} USD = Lambda {:.2} (durations measured against moto; {:.2} with CPU time as duration) + DynamoDB {:.2} + SQS {:.2}",
            total,
            per_million(lambda),
            per_million(lambda_cpu),
            per_million(ddb),
            per_million(sqs)
        ));
        line(format!(
            "  prices (us-east-1 on-demand): Lambda arm64 {:.10} USD per GB-s + {:.2} USD per million requests; DynamoDB {:.3} USD per million WRU, {:.3} per million RRU; SQS {:.2} USD per million requests",
            prices::LAMBDA_ARM64_GB_SECOND,
            prices::LAMBDA_REQUEST * 1e6,
            prices::DYNAMODB_WRU * 1e6,
            prices::DYNAMODB_RRU * 1e6,
            prices::SQS_REQUEST * 1e6
        ));
        line("targets:".into());
        let ingest_ratio = rate(li, self.ingest_time) / f64::from(o.langfuse_rpm);
        let all_429 = share(li429 + lp429, li + lp);
        let targets: Vec<(String, bool)> = vec![
            (
                format!(
                    "Langfuse requests per metered trace <= 1.05 (v2): {langfuse_per:.3} per metered, {langfuse_per_processed:.3} per processed trace (the sample's permanent failures need their fetch too)"
                ),
                langfuse_per_processed <= 1.05,
            ),
            (
                format!(
                    ">= 90 % of the Langfuse limit used with < 1 % 429s: ingest {:.0} %, 429s {all_429:.2} % overall",
                    100.0 * ingest_ratio
                ),
                ingest_ratio >= 0.9 && all_429 < 1.0,
            ),
            (
                format!(
                    "DynamoDB WCU per metered trace <= 3.5: {:.2} per trace metered or capped ({:.2} per metered trace only; the sample's permanent failures and capped traces write too)",
                    wcu / billed,
                    wcu / m
                ),
                wcu / billed <= 3.5,
            ),
            (
                format!(
                    "ingest peak RSS < 40 MB: {:.1} MB",
                    self.ingest.peak_rss_kb as f64 / 1024.0
                ),
                self.ingest.peak_rss_kb < 40 * 1024,
            ),
            (
                format!(
                    "process CPU < 1 ms per trace: {:.3} ms per message warm ({:.3} ms per metered trace counting each instance's first invocation)",
                    warm_per_message(&self.process),
                    self.process.cpu.as_secs_f64() * 1000.0 / m
                ),
                self.process.warm_records > 0 && warm_per_message(&self.process) < 1.0,
            ),
            (
                format!(
                    "cold start init < 50 ms: ingest {} ms, process {} ms",
                    self.ingest.init.map_or(0, |d| d.as_millis()),
                    self.process.init.map_or(0, |d| d.as_millis())
                ),
                self.ingest
                    .init
                    .is_some_and(|d| d < Duration::from_millis(50))
                    && self
                        .process
                        .init
                        .is_some_and(|d| d < Duration::from_millis(50)),
            ),
            (
                format!(
                    "bootstraps < 8 MB: ingest {:.2} MB, process {:.2} MB (x86_64)",
                    self.ingest.bootstrap_bytes as f64 / 1e6,
                    self.process.bootstrap_bytes as f64 / 1e6
                ),
                self.ingest.bootstrap_bytes < 8_000_000 && self.process.bootstrap_bytes < 8_000_000,
            ),
            (
                format!("AWS cost < 2.50 USD per million metered traces: {total:.2}"),
                total < 2.5,
            ),
        ];
        for (text, ok) in targets {
            line(format!("  [{}] {text}", check(ok)));
        }
        s
    }
}

/// The benchmark's settings from the environment (`TRACES`, `LANGFUSE_LATENCY_MS`,
/// `LANGFUSE_RPM`, `CONCURRENCY`, `TIME_LIMIT_SECONDS`, `LANGFUSE_API`, `BENCH_ENV`
/// as `NAME=value,NAME=value`, `INGEST_ONLY=1`).
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
    Ok(BenchOptions {
        traces: num("TRACES", 1_000)?,
        langfuse_latency: Duration::from_millis(num("LANGFUSE_LATENCY_MS", 20)?),
        langfuse_rpm: num("LANGFUSE_RPM", 1_000)?,
        concurrency: num("CONCURRENCY", 5)?,
        time_limit: Duration::from_secs(num("TIME_LIMIT_SECONDS", 1_200)?),
        langfuse_api: std::env::var("LANGFUSE_API").unwrap_or_else(|_| "v2".into()),
        extra_env,
        ingest_only: std::env::var("INGEST_ONLY").is_ok_and(|v| v == "1" || v == "true"),
    })
}

/// Where `make build` puts a function's release bootstrap.
pub fn bootstrap(function: &str) -> PathBuf {
    stack::repo_root().join(format!("target/lambda/{function}/bootstrap"))
}

/// CPU milliseconds per message after each instance's first invocation.
fn warm_per_message(f: &FunctionFigures) -> f64 {
    f.warm_cpu.as_secs_f64() * 1000.0 / f.warm_records.max(1) as f64
}
