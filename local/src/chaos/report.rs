//! The figures of a reliability run and their printed report.

use crate::drain::Drained;
use crate::summary::fmt_map;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One checked invariant.
#[derive(Debug, Clone)]
pub struct Invariant {
    /// What it promises.
    pub name: &'static str,
    /// Whether it held.
    pub holds: bool,
    /// Figures, or what broke it.
    pub detail: String,
}

/// The figures of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// Traces seeded, of which settled (enqueued by ingest), still settling, with bad data.
    pub seeded: usize,
    /// Settled traces.
    pub settled: usize,
    /// Traces still settling.
    pub settling: usize,
    /// Traces seeded with bad data.
    pub bad_data: usize,
    /// The fault rate.
    pub rate: f64,
    /// Faults injected, by boundary and kind.
    pub faults: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Calls each boundary saw while its faults were on (invocations for `process`).
    pub calls: BTreeMap<&'static str, u64>,
    /// Ingest runs, and those that returned an error.
    pub ingest_runs: u64,
    /// Ingest runs that failed.
    pub ingest_errors: u64,
    /// Messages enqueued by ingest (duplicates included).
    pub enqueued: u64,
    /// Process invocations.
    pub invocations: u64,
    /// Invocations that died (injected aborts).
    pub aborted: u64,
    /// Messages returned to the queue for a retry (partial batch failures).
    pub retried: u64,
    /// Event source mapping calls (receive, delete) that failed.
    pub esm_errors: u64,
    /// Messages found in the dead-letter queue, over all redrive rounds.
    pub dlq: u64,
    /// Redrive rounds.
    pub redrives: u64,
    /// Final ledger states.
    pub states: BTreeMap<String, u64>,
    /// Permanent failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Credits billed in total (Stripe).
    pub credits: u64,
    /// Log lines scanned for secrets.
    pub log_lines: u64,
    /// The invariants.
    pub invariants: Vec<Invariant>,
    /// Wall time.
    pub seconds: f64,
}

impl ChaosReport {
    /// Adds a drain's figures.
    pub(super) fn add(&mut self, drained: &Drained) {
        self.invocations += drained.invocations;
        self.aborted += drained.failed_invocations;
        self.retried += drained.retried;
        self.esm_errors += drained.esm_errors;
    }

    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        !self.invariants.is_empty() && self.invariants.iter().all(|i| i.holds)
    }

    /// The printed summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\ntracemeter reliability run: {} traces seeded ({} settled, {} settling, {} with bad data), fault rate {:.0} % per boundary, {:.1} s",
            self.seeded,
            self.settled,
            self.settling,
            self.bad_data,
            self.rate * 100.0,
            self.seconds
        );
        let _ = writeln!(s, "faults injected:");
        for (boundary, kinds) in &self.faults {
            let total: u64 = kinds.values().sum();
            let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let calls = self.calls.get(boundary).copied().unwrap_or(0);
            let share = if calls > 0 {
                100.0 * total as f64 / calls as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "  {boundary:<9} {total:>6} of {calls:>7} calls ({share:>4.1} %)  ({})",
                list.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "retries: {} messages returned to the queue, {} invocations aborted of {}, {} event-source call errors, {} ingest runs ({} failed, {} messages enqueued)",
            self.retried,
            self.aborted,
            self.invocations,
            self.esm_errors,
            self.ingest_runs,
            self.ingest_errors,
            self.enqueued
        );
        let _ = writeln!(
            s,
            "dead-letter queue: {} messages over {} redrive rounds",
            self.dlq, self.redrives
        );
        let _ = writeln!(
            s,
            "ledger: {}; permanent failures: {}; {} credits billed; {} log lines scanned",
            fmt_map(&self.states),
            fmt_map(&self.failures),
            self.credits,
            self.log_lines
        );
        let _ = writeln!(s, "invariants:");
        for i in &self.invariants {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if i.holds { "ok" } else { "FAILED" },
                i.name,
                i.detail
            );
        }
        let _ = writeln!(s, "result: {}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }
}
