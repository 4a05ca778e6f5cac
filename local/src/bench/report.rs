//! The benchmark's figures and their printed report with the targets.

use super::BenchOptions;
use crate::counting_proxy::{Counts, OpCount};
use crate::function::Function;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

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
    /// Lambda's memory per vCPU: a function gets `memory / 1769` of a vCPU (AWS's figure),
    /// so CPU-bound work takes `1769 / memory` times its CPU time at 128 MB.
    pub const LAMBDA_MB_PER_VCPU: f64 = 1769.0;
}

/// Figures of one function.
#[derive(Debug, Clone, Default)]
pub struct FunctionFigures {
    /// Instances started.
    pub instances: usize,
    /// Invocations.
    pub invocations: u64,
    /// Messages handed to the invocations (each receive counts).
    pub records: u64,
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

impl FunctionFigures {
    /// The figures of `functions`, instances of `bootstrap` configured with `memory_mb`.
    pub fn of(functions: &[Function], bootstrap: &Path, memory_mb: i32) -> Result<FunctionFigures> {
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
            f.records += func.records;
            f.busy += func.busy;
            f.init = f.init.max(func.init_time());
        }
        Ok(f)
    }

    /// CPU milliseconds per message after each instance's first invocation.
    pub(super) fn warm_per_message(&self) -> f64 {
        self.warm_cpu.as_secs_f64() * 1000.0 / self.warm_records.max(1) as f64
    }

    /// GB-seconds of invocation time.
    fn gb_seconds(&self) -> f64 {
        self.busy.as_secs_f64() * f64::from(self.memory_mb) / 1024.0
    }

    /// GB-seconds of the invocations' CPU time at the CPU share of the configured memory
    /// (CPU time / (memory / 1769 MB), billed at the configured memory): what the CPU-bound
    /// part of the work costs on Lambda, without the waits on moto.
    fn cpu_share_gb_seconds(&self) -> f64 {
        let memory = f64::from(self.memory_mb);
        let share = (memory / prices::LAMBDA_MB_PER_VCPU).min(1.0);
        self.cpu.as_secs_f64() / share * memory / 1024.0
    }
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Settings.
    pub options: BenchOptions,
    /// Traces seeded.
    pub seeded: usize,
    /// Enqueued by ingest.
    pub enqueued: u64,
    /// Ledger entries metered.
    pub metered: u64,
    /// Ledger entries capped.
    pub capped: u64,
    /// Ledger entries failed.
    pub failed: u64,
    /// Messages left in the queue.
    pub left: i64,
    /// DLQ depth.
    pub dlq: i64,
    /// Ingest wall time.
    pub ingest_time: Duration,
    /// From the ingest invocation to the queue drained.
    pub end_to_end: Duration,
    /// Langfuse requests during ingest, and the 429 answers among them.
    pub langfuse_ingest: (u64, u64),
    /// Langfuse requests during processing and their 429s.
    pub langfuse_process: (u64, u64),
    /// Processing wall time.
    pub process_time: Duration,
    /// Stripe requests, and the 429 answers among them.
    pub stripe_requests: (u64, u64),
    /// AWS calls.
    pub aws: Counts,
    /// DynamoDB calls by operation and the item families they touched.
    pub aws_families: Counts,
    /// Process invocations that failed as a whole (timeouts: their batch comes back after
    /// the visibility timeout), and messages answered as batch item failures.
    pub returned: (u64, u64),
    /// Largest ledger table item, bytes (approximate, by DynamoDB's size rules).
    pub largest_item: (usize, String),
    /// Ingest figures.
    pub ingest: FunctionFigures,
    /// Process figures.
    pub process: FunctionFigures,
    /// Stripe = ledger = budgets per customer.
    pub consistent: bool,
}

/// Figures derived once from a report for the lines below.
pub(super) struct Derived {
    /// Metered traces (at least 1).
    pub(super) metered: f64,
    pub(super) langfuse_per: f64,
    pub(super) langfuse_per_processed: f64,
    pub(super) ingest_ratio: f64,
    pub(super) share_429: f64,
    pub(super) wcu: f64,
    pub(super) rcu: f64,
    pub(super) sqs_requests: f64,
}

/// Requests per minute.
fn per_minute(n: u64, d: Duration) -> f64 {
    n as f64 * 60.0 / d.as_secs_f64().max(1e-9)
}

/// `n` as a percentage of `of`.
pub(super) fn share(n: u64, of: u64) -> f64 {
    100.0 * n as f64 / of.max(1) as f64
}

impl BenchReport {
    pub(super) fn aws_sum(&self, prefix: &str, f: impl Fn(&OpCount) -> f64) -> f64 {
        self.aws
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, c)| f(c))
            .sum()
    }

    pub(super) fn derived(&self) -> Derived {
        let (li, li429) = self.langfuse_ingest;
        let (lp, lp429) = self.langfuse_process;
        let processed = (self.metered + self.capped + self.failed).max(1) as f64;
        let metered = self.metered.max(1) as f64;
        Derived {
            metered,
            langfuse_per: (li + lp) as f64 / metered,
            langfuse_per_processed: (li + lp) as f64 / processed,
            ingest_ratio: per_minute(li, self.ingest_time) / f64::from(self.options.langfuse_rpm),
            share_429: share(li429 + lp429, li + lp),
            wcu: self.aws_sum("DynamoDB", |c| c.wcu),
            rcu: self.aws_sum("DynamoDB", |c| c.rcu),
            sqs_requests: self.aws_sum("AmazonSQS", |c| (c.calls - c.empty) as f64),
        }
    }

    /// The printed report with the targets.
    pub fn render(&self) -> String {
        let d = self.derived();
        let mut lines = self.overview();
        lines.extend(self.per_trace(&d));
        lines.extend(self.functions());
        if self.options.ingest_only {
            lines.push("INGEST_ONLY: nothing was processed, so per-trace costs and targets are not computed".into());
        } else {
            let (cost_lines, total) = self.cost(&d);
            lines.extend(cost_lines);
            lines.push("targets:".into());
            let mut targets = self.targets(&d, total);
            if self.options.backlog {
                targets.extend(self.backlog_targets());
                targets.push(self.backlog_pace());
            }
            for (text, ok) in targets {
                lines.push(format!("  [{}] {text}", if ok { "PASS" } else { "MISS" }));
            }
        }
        let mut s = String::new();
        for line in lines {
            let _ = writeln!(s, "{line}");
        }
        s
    }

    /// Settings, traces, times and the Langfuse request rate.
    fn overview(&self) -> Vec<String> {
        let o = &self.options;
        let e2e = self.end_to_end.as_secs_f64();
        let (li, li429) = self.langfuse_ingest;
        let (lp, lp429) = self.langfuse_process;
        let rpm = f64::from(o.langfuse_rpm);
        vec![
            format!(
                "\ntracemeter benchmark: {} traces, Langfuse {} ({} ms per request, {} requests/min), {} process instances",
                o.traces,
                o.langfuse_api,
                o.langfuse_latency.as_millis(),
                o.langfuse_rpm,
                o.concurrency
            ),
            "machine: 2 cores, x86_64, moto server (Python) for DynamoDB and SQS; release bootstraps (x86_64 stands in for arm64)".into(),
            format!(
                "traces: {} seeded, {} enqueued by ingest, {} metered, {} capped, {} failed (permanent), {} left in the queue, DLQ {}; Stripe = ledger = budgets: {}",
                self.seeded,
                self.enqueued,
                self.metered,
                self.capped,
                self.failed,
                self.left,
                self.dlq,
                if self.consistent { "yes" } else { "NO" }
            ),
            format!(
                "process invocations: {}, of which {} failed as a whole (no answer within the function's timeout; the batch comes back after the visibility timeout); {} messages answered as batch item failures",
                self.process.invocations, self.returned.0, self.returned.1
            ),
            format!(
                "end to end: {:.1} s, {:.1} traces/s (ingest {:.1} s, processing {:.1} s)",
                e2e,
                self.enqueued as f64 / e2e.max(1e-9),
                self.ingest_time.as_secs_f64(),
                self.process_time.as_secs_f64()
            ),
            format!(
                "Stripe ({} mode, {} ms per request, one concurrent v1 call per customer enforced): {} requests, {} answered 429 ({:.2} %)",
                o.stripe_mode,
                o.stripe_latency.as_millis(),
                self.stripe_requests.0,
                self.stripe_requests.1,
                share(self.stripe_requests.1, self.stripe_requests.0)
            ),
            format!(
                "Langfuse rate: ingest {li} requests ({:.0}/min = {:.0} % of {}/min, 429s {:.2} %); processing {lp} requests ({:.0}/min = {:.0} % of the limit, 429s {:.2} %)",
                per_minute(li, self.ingest_time),
                100.0 * per_minute(li, self.ingest_time) / rpm,
                o.langfuse_rpm,
                share(li429, li),
                per_minute(lp, self.process_time),
                100.0 * per_minute(lp, self.process_time) / rpm,
                share(lp429, lp)
            ),
        ]
    }

    /// Calls and capacity units per metered trace, and the calls by operation.
    fn per_trace(&self, d: &Derived) -> Vec<String> {
        let m = d.metered;
        let ddb_calls = self.aws_sum("DynamoDB", |c| c.calls as f64);
        let sqs_empty = self.aws_sum("AmazonSQS", |c| c.empty as f64);
        let mut lines = vec![
            "per metered trace:".to_string(),
            format!(
                "  Langfuse requests {:.3} ({:.3} per trace processed: metered, capped or failed)   Stripe requests {:.3}   DynamoDB calls {:.2} (WCU {:.2}, RCU {:.2}; largest item {} B, a {} item; the units assume items within 1 KB written, 4 KB read)   SQS requests {:.2} (+{:.0} empty receives of the local pollers, not counted)",
                d.langfuse_per,
                d.langfuse_per_processed,
                self.stripe_requests.0 as f64 / m,
                ddb_calls / m,
                d.wcu / m,
                d.rcu / m,
                self.largest_item.0,
                self.largest_item.1,
                d.sqs_requests / m,
                sqs_empty
            ),
        ];
        for (op, c) in &self.aws {
            let empty = if c.empty > 0 {
                format!("  ({} empty)", c.empty)
            } else {
                String::new()
            };
            lines.push(format!(
                "    {op:<42} {:>7} calls  {:>8.1} WCU  {:>8.1} RCU{empty}",
                c.calls, c.wcu, c.rcu
            ));
            let short = op.trim_start_matches("DynamoDB_20120810.");
            for (family, c) in self
                .aws_families
                .iter()
                .filter(|(f, _)| f.split_once(' ').is_some_and(|(o, _)| o == short))
            {
                lines.push(format!(
                    "      {family:<40} {:>7} calls  {:>8.1} WCU  {:>8.1} RCU",
                    c.calls, c.wcu, c.rcu
                ));
            }
        }
        lines
    }

    /// One line per function: size, init, memory, CPU.
    fn functions(&self) -> Vec<String> {
        [
            ("ingest", &self.ingest, self.enqueued.max(1)),
            ("process", &self.process, self.metered.max(1)),
        ]
        .into_iter()
        .map(|(name, f, traces)| {
            let warm = if f.warm_records > 0 {
                format!(
                    "warm: {:.3} ms per message after each instance's first invocation",
                    f.warm_per_message()
                )
            } else {
                "one invocation".to_string()
            };
            format!(
                "{name}: bootstrap {:.2} MB, init {} ms ({} ms CPU per instance), peak RSS {:.1} MB, CPU in invocations {} ms = {:.3} ms per trace ({warm}), {} invocations in {} instance(s), {:.1} s busy, {} MB configured",
                f.bootstrap_bytes as f64 / 1e6,
                f.init.map_or("?".into(), |d| d.as_millis().to_string()),
                f.init_cpu.as_millis() / f.instances.max(1) as u128,
                f.peak_rss_kb as f64 / 1024.0,
                f.cpu.as_millis(),
                f.cpu.as_secs_f64() * 1000.0 / traces as f64,
                f.invocations,
                f.instances,
                f.busy.as_secs_f64(),
                f.memory_mb
            )
        })
        .collect()
    }

    /// The AWS cost per million metered traces from the measured calls and durations; the
    /// lines and the total.
    pub(super) fn cost(&self, d: &Derived) -> (Vec<String>, f64) {
        let requests = (self.ingest.invocations + self.process.invocations) as f64;
        let lambda_wall = (self.ingest.gb_seconds() + self.process.gb_seconds())
            * prices::LAMBDA_ARM64_GB_SECOND
            + requests * prices::LAMBDA_REQUEST;
        let lambda = (self.ingest.cpu_share_gb_seconds() + self.process.cpu_share_gb_seconds())
            * prices::LAMBDA_ARM64_GB_SECOND
            + requests * prices::LAMBDA_REQUEST;
        let ddb = d.wcu * prices::DYNAMODB_WRU + d.rcu * prices::DYNAMODB_RRU;
        let sqs = d.sqs_requests * prices::SQS_REQUEST;
        let per_million = |usd: f64| usd / d.metered * 1e6;
        let total = per_million(lambda + ddb + sqs);
        let lines = vec![
            format!(
                "AWS cost per million metered traces: {:.2} USD = Lambda {:.2} (CPU time at the CPU share of the configured memory, and the requests; {:.2} with the invocations' wall time against moto) + DynamoDB {:.2} + SQS {:.2}",
                total,
                per_million(lambda),
                per_million(lambda_wall),
                per_million(ddb),
                per_million(sqs)
            ),
            format!(
                "  prices (us-east-1 on-demand): Lambda arm64 {:.10} USD per GB-s + {:.2} USD per million requests, {:.0} MB per vCPU; DynamoDB {:.3} USD per million WRU, {:.3} per million RRU; SQS {:.2} USD per million requests",
                prices::LAMBDA_ARM64_GB_SECOND,
                prices::LAMBDA_REQUEST * 1e6,
                prices::LAMBDA_MB_PER_VCPU,
                prices::DYNAMODB_WRU * 1e6,
                prices::DYNAMODB_RRU * 1e6,
                prices::SQS_REQUEST * 1e6
            ),
        ];
        (lines, total)
    }
}

/// The headline figures of each run in one table (markdown), for the docs.
pub fn side_by_side(reports: &[BenchReport]) -> String {
    let mut s = String::from(
        "| Stripe mode | metered | Stripe 429s | Stripe req / metered | WCU / metered | RCU / metered | DynamoDB calls / metered | CPU ms / message | USD / million | traces/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        s.push_str(&r.headline());
        s.push('\n');
    }
    s
}
