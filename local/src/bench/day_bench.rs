//! `SCENARIO=day make bench`: the steady-state cost of ingest over a simulated day
//! ([`super::day`]): the handlers in process (the release bootstraps cannot be given a moved
//! clock), ingest's DynamoDB calls through one counting proxy and everything else through
//! another, so ingest's share is measured apart.

use super::day::{Day, DayFigures, DayOptions};
use super::prices;
use crate::counting_proxy::{CountingProxy, Counts, OpCount};
use crate::harness::{StackOptions, TestStack};
use crate::stack::{self, INGEST_FUNCTION, Moto, PROCESS_FUNCTION, Template};
use anyhow::Result;
use std::fmt::Write;

/// What the `day` scenario measured.
#[derive(Debug, Clone)]
pub struct DayBench {
    /// Settings.
    pub options: DayOptions,
    /// The day's figures.
    pub figures: DayFigures,
    /// Ingest's DynamoDB calls.
    pub ingest_aws: Counts,
    /// Every other AWS call (process, ingest's sends, the local pollers).
    pub other_aws: Counts,
    /// The tiers run, as `AGE:EVERY` seconds.
    pub tiers: String,
    /// Configured memory of ingest and process (MB).
    pub memory_mb: (i32, i32),
    /// Stripe = ledger = budgets.
    pub consistent: bool,
}

/// Runs the scenario.
pub async fn run(options: DayOptions) -> Result<DayBench> {
    let moto = Moto::try_shared()?;
    let ingest_proxy = CountingProxy::start(moto.endpoint()).await?;
    let other_proxy = CountingProxy::start(moto.endpoint()).await?;
    let stack = TestStack::start_with(
        "benchday",
        StackOptions {
            aws_endpoint: Some(other_proxy.url()),
            ..StackOptions::default()
        },
    )
    .await?;
    let ingest_dynamo =
        aws_sdk_dynamodb::Client::new(&stack::sdk_config(&ingest_proxy.url()).await);
    eprintln!(
        "[bench day] seeding a day and a half of history at {} traces a day, warm-up run and billing...",
        options.traces_per_day
    );
    let day = Day::start(&stack, options.clone(), &[], Some(ingest_dynamo)).await?;
    let tiers = day
        .rig()
        .config
        .rescan_tiers
        .iter()
        .map(|t| format!("{}:{}", t.age.num_seconds(), t.every.num_seconds()))
        .collect::<Vec<_>>()
        .join(",");
    ingest_proxy.reset();
    other_proxy.reset();
    eprintln!("[bench day] {} ticks...", options.ticks);
    let figures = day.run().await?;
    let template = Template::load()?;
    let consistent = crate::summary::collect(&stack).await?.consistent(true);
    Ok(DayBench {
        options,
        figures,
        ingest_aws: ingest_proxy.counts(),
        other_aws: other_proxy.counts(),
        tiers,
        memory_mb: (
            template.function_memory_mb(INGEST_FUNCTION)?,
            template.function_memory_mb(PROCESS_FUNCTION)?,
        ),
        consistent,
    })
}

/// `DAY_TRACES` (5000 a day), `LATE_EVERY` (10: one trace in 10 gets a late observation).
pub fn options_from_env() -> Result<DayOptions> {
    let num = |name: &str, default: usize| -> Result<usize> {
        std::env::var(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number"))
        })
    };
    Ok(DayOptions {
        traces_per_day: num("DAY_TRACES", 5_000)?,
        late_every: num("LATE_EVERY", 10)?,
        ..DayOptions::default()
    })
}

/// A day's AWS cost in USD, split as the report prints it.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    /// Ingest's Lambda requests and duration.
    ingest_lambda: f64,
    /// Ingest's lease and cursor (DynamoDB other than `BatchGetItem`).
    ingest_items: f64,
    /// Ingest's ledger look-ups (`BatchGetItem`).
    lookups: f64,
    /// Ingest's `SendMessageBatch`.
    sends: f64,
    /// The processor: Lambda, DynamoDB, SQS.
    process: f64,
    /// Of which Lambda.
    process_lambda: f64,
}

impl Cost {
    /// What does not grow with the traces: ingest's ticks.
    fn fixed(&self) -> f64 {
        self.ingest_lambda + self.ingest_items
    }
    fn ingest(&self) -> f64 {
        self.fixed() + self.lookups + self.sends
    }
    fn total(&self) -> f64 {
        self.ingest() + self.process
    }
}

fn dynamo_usd(c: &OpCount) -> f64 {
    c.wcu * prices::DYNAMODB_WRU + c.rcu * prices::DYNAMODB_RRU
}

fn lambda_usd(invocations: u64, busy: std::time::Duration, memory_mb: i32) -> f64 {
    invocations as f64 * prices::LAMBDA_REQUEST
        + busy.as_secs_f64() * f64::from(memory_mb) / 1024.0 * prices::LAMBDA_ARM64_GB_SECOND
}

impl DayBench {
    /// DynamoDB read units of the day, ingest and process.
    fn read_units(&self) -> f64 {
        self.ingest_aws
            .iter()
            .chain(self.other_aws.iter())
            .filter(|(op, _)| op.starts_with("DynamoDB"))
            .map(|(_, c)| c.rcu)
            .sum()
    }

    fn cost(&self) -> Cost {
        let f = &self.figures;
        let batch_get = |(op, _): &(&String, &OpCount)| op.ends_with(".BatchGetItem");
        let sqs = |keep: &dyn Fn(&str) -> bool| -> f64 {
            self.other_aws
                .iter()
                .filter(|(op, _)| op.starts_with("AmazonSQS") && keep(op))
                .map(|(_, c)| (c.calls - c.empty) as f64 * prices::SQS_REQUEST)
                .sum()
        };
        let process_dynamo: f64 = self
            .other_aws
            .iter()
            .filter(|(op, _)| op.starts_with("DynamoDB"))
            .map(|(_, c)| dynamo_usd(c))
            .sum();
        // The local pollers' depth checks are not Lambda's event source mapping.
        let process_sqs =
            sqs(&|op| !op.ends_with(".SendMessageBatch") && !op.ends_with(".GetQueueAttributes"));
        let process_lambda = lambda_usd(f.process_invocations, f.process_busy, self.memory_mb.1);
        Cost {
            process_lambda,
            ingest_lambda: lambda_usd(f.runs, f.ingest_busy, self.memory_mb.0),
            ingest_items: self
                .ingest_aws
                .iter()
                .filter(|e| !batch_get(e))
                .map(|(_, c)| dynamo_usd(c))
                .sum(),
            lookups: self
                .ingest_aws
                .iter()
                .filter(batch_get)
                .map(|(_, c)| dynamo_usd(c))
                .sum(),
            sends: sqs(&|op| op.ends_with(".SendMessageBatch")),
            process: process_dynamo + process_sqs + process_lambda,
        }
    }

    /// The printed report with PASS/MISS.
    pub fn render(&self) -> String {
        let (f, o, cost) = (&self.figures, &self.options, self.cost());
        let traces = f.traces.max(1) as f64;
        let per = |n: u64| n as f64 / traces;
        let per_million = |usd: f64| usd / traces * 1e6;
        let lookup_rcu: f64 = self
            .ingest_aws
            .iter()
            .filter(|(op, _)| op.ends_with(".BatchGetItem"))
            .map(|(_, c)| c.rcu)
            .sum();
        let rcu_per_key = lookup_rcu / f.lookup_keys.max(1) as f64;
        let before = 288.0 * rcu_per_key * prices::DYNAMODB_RRU * 1e6;
        let mut lines = vec![
            format!(
                "\ntracemeter benchmark, scenario day: {} ticks of {} min (the clock moved, not real time), {} traces a day ({} arrived in the day), tiers {}",
                o.ticks,
                o.tick.num_minutes(),
                o.traces_per_day,
                f.traces,
                self.tiers
            ),
            "machine: 2 cores; moto for DynamoDB and SQS; the ingest and process handlers in process (debug build), their Lambda durations measured against moto".into(),
            format!(
                "ingest: {} runs ({} not completed), {} tier ranges, {:.1} s busy; {} enqueued; process: {} invocations, {:.1} s busy; wall {:.0} s",
                f.runs, f.incomplete_runs, f.rescan_ranges, f.ingest_busy.as_secs_f64(), f.enqueued,
                f.process_invocations, f.process_busy.as_secs_f64(), f.wall.as_secs_f64()
            ),
            format!(
                "per trace a day: listings {:.2} (fresh {:.2}, re-scan tiers {:.2}; before: 288); ledger look-ups (BatchGetItem keys) {:.2} in {:.2} calls (before: 288); Langfuse requests: ingest {:.3}, process {:.3}",
                per(f.listings), per(f.listings - f.rescan_listings), per(f.rescan_listings),
                per(f.lookup_keys), per(f.lookup_calls), per(f.langfuse_ingest), per(f.langfuse_process)
            ),
            format!(
                "late observations: {} planted (by minutes late: {:?}), {} not billed; Stripe = ledger = budgets: {}",
                f.late_planted, f.late_by_delay, f.late_missed.len(), if self.consistent { "yes" } else { "NO" }
            ),
            format!(
                "AWS cost per million traces: {:.2} USD = ingest {:.2} (Lambda {:.2}, lease and cursor {:.2}, look-ups {:.3}, sends {:.2}) + process {:.2} (Lambda {:.2}: debug build in process against moto); before, 288 look-ups per trace would cost {:.2} in BatchGetItem alone",
                per_million(cost.total()), per_million(cost.ingest()), per_million(cost.ingest_lambda),
                per_million(cost.ingest_items), per_million(cost.lookups), per_million(cost.sends),
                per_million(cost.process), per_million(cost.process_lambda), before
            ),
        ];
        for volume in [10_000.0, 100_000.0] {
            let variable = (cost.total() - cost.fixed()) / traces;
            lines.push(format!(
                "  at {volume:.0} traces a day (ingest's ticks cost the same, the rest per trace): {:.2} USD per million (ingest {:.2})",
                (cost.fixed() / volume + variable) * 1e6,
                (cost.fixed() / volume + (cost.ingest() - cost.fixed()) / traces) * 1e6,
            ));
        }
        let messages_per_trace = per(f.enqueued);
        let langfuse_at = |volume: f64| {
            let process = (f.langfuse_process as f64).max(volume * messages_per_trace / 100.0);
            (f.langfuse_ingest as f64 + process) / volume
        };
        lines.push(format!(
            "  Langfuse requests per trace a day, ingest's ranges the same and one process request per tick or per 100 messages, whichever is more: {:.3} at 20,000 traces a day, {:.3} at 100,000 (floor: one ingest and one process request per tick, {} a day)",
            langfuse_at(20_000.0),
            langfuse_at(100_000.0),
            2 * o.ticks
        ));
        lines.push("targets:".into());
        for (text, ok) in self.targets(per_million(cost.total())) {
            lines.push(format!("  [{}] {text}", if ok { "PASS" } else { "MISS" }));
        }
        let mut s = String::new();
        for line in lines {
            let _ = writeln!(s, "{line}");
        }
        s
    }

    /// Each target's line and whether it was met, given the cost per million traces.
    fn targets(&self, per_million: f64) -> Vec<(String, bool)> {
        let f = &self.figures;
        let per = |n: u64| n as f64 / f.traces.max(1) as f64;
        let langfuse = per(f.langfuse_ingest + f.langfuse_process);
        let read_units = self.read_units() / f.traces.max(1) as f64;
        // Each tick lists the fresh range and each tick's messages need a batch read: with
        // fewer traces a day than this, 0.05 cannot be met by any schedule of these ticks.
        let reachable_from = 2.0 * self.options.ticks as f64 / 0.05;
        vec![
            (
                format!(
                    "Langfuse requests per trace a day (ingest + process) <= 0.05: {langfuse:.3} (reachable from {reachable_from:.0} traces a day: one listing and one batch read per tick)"
                ),
                langfuse <= 0.05,
            ),
            (
                format!("DynamoDB read units per trace a day <= 10: {read_units:.2}"),
                read_units <= 10.0,
            ),
            (
                format!(
                    "no billed trace enqueued again without new usage ({} with sub-ms times): {} enqueued again{}",
                    f.sub_ms_traces,
                    f.enqueued_again.len(),
                    match f.enqueued_again.is_empty() {
                        true => String::new(),
                        false => format!(
                            ", e.g. {:?}",
                            &f.enqueued_again[..f.enqueued_again.len().min(5)]
                        ),
                    }
                ),
                f.enqueued_again.is_empty() && f.sub_ms_traces > 0,
            ),
            (
                format!("listings per trace a day <= 10: {:.2}", per(f.listings)),
                per(f.listings) <= 10.0,
            ),
            (
                format!("look-ups per trace a day <= 10: {:.2}", per(f.lookup_keys)),
                per(f.lookup_keys) <= 10.0,
            ),
            (
                format!(
                    "every late observation within SETTLE_SECONDS + RESCAN_SECONDS billed: {} of {}",
                    f.late_planted - f.late_missed.len(),
                    f.late_planted
                ),
                f.late_missed.is_empty() && f.late_planted > 0 && self.consistent,
            ),
            (
                format!(
                    "AWS cost < 2.50 USD per million traces, ingest included: {:.2}",
                    per_million
                ),
                per_million < 2.5,
            ),
        ]
    }
}
