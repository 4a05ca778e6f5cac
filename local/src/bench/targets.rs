//! The benchmark's targets, each with its PASS/MISS, and the headline row of a run.

use super::report::{BenchReport, Derived, FunctionFigures, share};
use std::time::Duration;

impl BenchReport {
    /// Each target's line and whether it was met.
    pub(super) fn targets(&self, d: &Derived, total: f64) -> Vec<(String, bool)> {
        let (stripe, limited) = self.stripe_requests;
        let calls = self.aws_sum("DynamoDB", |c| c.calls as f64) / d.metered;
        let mut targets = vec![
            (
                format!(
                    "Langfuse requests per metered trace <= 1.05 (v2): {:.3} per metered, {:.3} per processed trace (the sample's permanent failures need their fetch too)",
                    d.langfuse_per, d.langfuse_per_processed
                ),
                d.langfuse_per_processed <= 1.05,
            ),
            (
                format!(
                    ">= 90 % of the Langfuse limit used with < 1 % 429s: ingest {:.0} %, 429s {:.2} % overall",
                    100.0 * d.ingest_ratio,
                    d.share_429
                ),
                d.ingest_ratio >= 0.9 && d.share_429 < 1.0,
            ),
            (
                format!(
                    "Stripe 429 share < 1 %: {:.2} % ({limited} of {stripe} requests; {:.3} requests per metered trace, {} mode)",
                    share(limited, stripe),
                    stripe as f64 / d.metered,
                    self.options.stripe_mode
                ),
                share(limited, stripe) < 1.0,
            ),
            (
                format!(
                    "DynamoDB WCU per metered trace <= 2.3: {:.2}",
                    d.wcu / d.metered
                ),
                d.wcu / d.metered <= 2.3,
            ),
            (
                format!(
                    "DynamoDB RCU per metered trace <= 1.0: {:.2}",
                    d.rcu / d.metered
                ),
                d.rcu / d.metered <= 1.0,
            ),
            (
                format!("DynamoDB calls per metered trace <= 0.3: {calls:.3}"),
                calls <= 0.3,
            ),
        ];
        targets.extend(self.function_targets(d, total));
        targets
    }

    /// The functions' targets (memory, CPU, init, size) and the cost's.
    fn function_targets(&self, d: &Derived, total: f64) -> Vec<(String, bool)> {
        let (ingest, process) = (&self.ingest, &self.process);
        let fast_init = |f: &FunctionFigures| f.init.is_some_and(|i| i < Duration::from_millis(50));
        vec![
            (
                format!(
                    "ingest peak RSS < 40 MB: {:.1} MB",
                    ingest.peak_rss_kb as f64 / 1024.0
                ),
                ingest.peak_rss_kb < 40 * 1024,
            ),
            (
                format!(
                    "process CPU < 1 ms per message: {:.3} ms per message warm ({:.3} ms per metered trace counting each instance's first invocation)",
                    process.warm_per_message(),
                    process.cpu.as_secs_f64() * 1000.0 / d.metered
                ),
                process.warm_records > 0 && process.warm_per_message() < 1.0,
            ),
            (
                format!(
                    "cold start init < 50 ms: ingest {} ms, process {} ms",
                    ingest.init.map_or(0, |d| d.as_millis()),
                    process.init.map_or(0, |d| d.as_millis())
                ),
                fast_init(ingest) && fast_init(process),
            ),
            (
                format!(
                    "bootstraps < 8 MB: ingest {:.2} MB, process {:.2} MB (x86_64)",
                    ingest.bootstrap_bytes as f64 / 1e6,
                    process.bootstrap_bytes as f64 / 1e6
                ),
                ingest.bootstrap_bytes < 8_000_000 && process.bootstrap_bytes < 8_000_000,
            ),
            (
                format!("AWS cost <= 2.00 USD per million metered traces: {total:.2}"),
                total <= 2.0,
            ),
        ]
    }

    /// One row of [`side_by_side`]: the mode and its headline figures.
    pub(super) fn headline(&self) -> String {
        let d = self.derived();
        let (stripe, limited) = self.stripe_requests;
        let calls = self.aws_sum("DynamoDB", |c| c.calls as f64) / d.metered;
        let (_, total) = self.cost(&d);
        format!(
            "| {} | {} | {:.2} % | {:.3} | {:.2} | {:.2} | {calls:.3} | {:.3} | {total:.2} | {:.1} |",
            self.options.stripe_mode,
            self.metered,
            share(limited, stripe),
            stripe as f64 / d.metered,
            d.wcu / d.metered,
            d.rcu / d.metered,
            self.process.warm_per_message(),
            self.enqueued as f64 / self.end_to_end.as_secs_f64().max(1e-9),
        )
    }

    /// The backlog scenario's targets: every trace processed with no dead letter and no 429.
    pub(super) fn backlog_targets(&self) -> Vec<(String, bool)> {
        let (li, li429) = self.langfuse_ingest;
        let (lp, lp429) = self.langfuse_process;
        let done = self.metered + self.capped + self.failed;
        let receives = self.process.records as f64 / self.enqueued.max(1) as f64;
        let billed = (self.metered + self.capped).max(1) as f64;
        let calls = self.aws_sum("DynamoDB", |c| c.calls as f64) / billed;
        vec![
            (
                format!(
                    "backlog: <= 2 receives per message: {receives:.2} ({} messages handed to the process function for {} enqueued; a deferral comes back as a new message)",
                    self.process.records, self.enqueued
                ),
                receives <= 2.0,
            ),
            (
                format!(
                    "backlog: <= 3 DynamoDB calls per billed trace: {calls:.2} (metered or capped)"
                ),
                calls <= 3.0,
            ),
            (
                format!(
                    "backlog: every trace processed, none dead-lettered: {done} of {} processed, {} left, DLQ {}",
                    self.enqueued, self.left, self.dlq
                ),
                self.dlq == 0 && self.left == 0 && done >= self.enqueued,
            ),
            (
                format!(
                    "backlog: no Langfuse 429: {} of {} requests",
                    li429 + lp429,
                    li + lp
                ),
                li429 + lp429 == 0,
            ),
        ]
    }

    /// The backlog's drain time against the physical bound: the Langfuse requests it needed
    /// at the limit's rate (tracemeter's budget runs at 6/7 of it at most: `domain::quota`).
    pub(super) fn backlog_pace(&self) -> (String, bool) {
        let requests = self.langfuse_ingest.0 + self.langfuse_process.0;
        let rpm = f64::from(self.options.langfuse_rpm);
        let minutes = self.end_to_end.as_secs_f64() / 60.0;
        let bound = requests as f64 / rpm;
        (
            format!(
                "backlog: drain time within 1.2x the physical bound: {minutes:.1} min for {requests} Langfuse requests at {rpm:.0}/min (bound {bound:.1} min, ratio {:.2}; batch size {}; where the ratio is far above, the local stack, not Langfuse, bound the pace)",
                minutes / bound.max(1e-9),
                self.options
                    .batch_size
                    .map_or("the template's".to_string(), |b| b.to_string()),
            ),
            minutes <= 1.2 * bound,
        )
    }
}
