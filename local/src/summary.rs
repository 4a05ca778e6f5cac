//! The billing summary of a local run, read back from the ledger table, the budget counters
//! and what the Stripe fake received.

use crate::harness::TestStack;
use crate::workload::Seeded;
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use tracemeter::adapters::dynamo::{get_s, get_u64, parse_entry, receipt_delivered};
use tracemeter::domain::ledger::LedgerState;

/// Per customer figures.
#[derive(Debug, Default, Clone)]
pub struct CustomerLine {
    /// Traces with a ledger entry billed to the customer.
    pub traces: u64,
    /// Credits billed according to the ledger.
    pub ledger_credits: u64,
    /// Credits capped according to the ledger.
    pub capped: u64,
    /// Meter events Stripe received.
    pub stripe_events: u64,
    /// Credits Stripe received.
    pub stripe_credits: u64,
    /// Budget counters summed over periods: used, capped.
    pub budget_used: u64,
    /// The limit of the latest period counter, if any.
    pub limit: Option<u64>,
    /// Alert records (period#percent).
    pub alerts: Vec<String>,
    /// Whether a hard limit was reached.
    pub exceeded: bool,
}

/// The whole summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// By customer.
    pub customers: BTreeMap<String, CustomerLine>,
    /// Permanent failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Ledger entries by state.
    pub states: BTreeMap<String, u64>,
    /// Messages in the dead-letter queue.
    pub dlq: i64,
    /// Messages still in the queue.
    pub queued: i64,
    /// Every trace's ledger entry, with receipted deliveries folded in.
    pub entries: Vec<tracemeter::domain::ledger::LedgerEntry>,
    /// Every budget period counter: (customer, period key, used, limit).
    pub periods: Vec<(String, String, u64, Option<u64>)>,
}

impl Summary {
    /// True when the ledger and the budget counters agree for every customer, and so does
    /// what the Stripe fake received (`with_stripe`; a real Stripe account is checked in its
    /// Dashboard).
    pub fn consistent(&self, with_stripe: bool) -> bool {
        self.customers.values().all(|c| {
            c.ledger_credits == c.budget_used
                && (!with_stripe || c.ledger_credits == c.stripe_credits)
        })
    }

    /// The printed report.
    pub fn render(
        &self,
        seeded: &Seeded,
        ingest: &ingest::IngestSummary,
        stripe_fake: bool,
        batches: usize,
        processing_secs: f64,
        total_secs: f64,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\ntracemeter local run: billing summary");
        let _ = writeln!(s, "=====================================");
        let _ = writeln!(
            s,
            "{:<14} {:>7} {:>12} {:>8} {:>12} {:>12} {:>12} {:>10}  alerts",
            "customer",
            "traces",
            "credits",
            "events",
            "budget used",
            "limit",
            "remaining",
            "capped"
        );
        let budgets: BTreeMap<&str, _> = seeded
            .budgets
            .iter()
            .map(|(c, p)| (c.as_str(), p))
            .collect();
        for (customer, c) in &self.customers {
            let policy = budgets.get(customer.as_str()).and_then(|p| p.as_ref());
            let limit = policy.and_then(|p| p.limit);
            let label = match policy {
                Some(p) => format!(
                    "{}/{}",
                    limit.map(|l| l.to_string()).unwrap_or("-".into()),
                    p.period.as_str()
                ),
                None => "none".to_string(),
            };
            let remaining = match (policy.map(|p| p.period), limit) {
                (Some(tracemeter::domain::budget::Period::Month), Some(l)) => {
                    l.saturating_sub(c.budget_used).to_string()
                }
                (Some(_), Some(_)) => "per period".to_string(),
                _ => "-".to_string(),
            };
            let mode = policy.map(|p| p.mode.as_str()).unwrap_or("");
            let _ = writeln!(
                s,
                "{:<14} {:>7} {:>12} {:>8} {:>12} {:>12} {:>12} {:>10}  {}{}",
                customer,
                c.traces,
                c.ledger_credits,
                c.stripe_events,
                c.budget_used,
                label,
                remaining,
                c.capped,
                if c.alerts.is_empty() {
                    "-".to_string()
                } else {
                    c.alerts.join(",")
                },
                if c.exceeded {
                    format!(" (hard limit reached, {mode})")
                } else {
                    String::new()
                }
            );
        }
        let total_credits: u64 = self.customers.values().map(|c| c.ledger_credits).sum();
        let stripe_total: u64 = self.customers.values().map(|c| c.stripe_credits).sum();
        if stripe_fake {
            let _ = writeln!(
                s,
                "\ntotal credits billed: ledger {total_credits}, Stripe received {stripe_total}, budget counters {}",
                self.customers.values().map(|c| c.budget_used).sum::<u64>()
            );
            let _ = writeln!(
                s,
                "consistent (Stripe = ledger = budgets, per customer): {}",
                if self.consistent(true) { "yes" } else { "NO" }
            );
        } else {
            let _ = writeln!(
                s,
                "\ntotal credits billed: ledger {total_credits}, budget counters {} (real Stripe: compare with the meter's event summaries in the Dashboard)",
                self.customers.values().map(|c| c.budget_used).sum::<u64>()
            );
            let _ = writeln!(
                s,
                "consistent (ledger = budgets, per customer): {}",
                if self.consistent(false) { "yes" } else { "NO" }
            );
        }
        let _ = writeln!(s, "ledger states: {}", fmt_map(&self.states));
        let _ = writeln!(
            s,
            "permanent failures by reason: {}",
            if self.failures.is_empty() {
                "none".into()
            } else {
                fmt_map(&self.failures)
            }
        );
        let _ = writeln!(
            s,
            "pending: {} traces still settling (not enqueued), {} messages in the queue",
            seeded.settling, self.queued
        );
        let _ = writeln!(s, "dead-letter queue depth: {}", self.dlq);
        let _ = writeln!(
            s,
            "ingest ({}): {:?}, {} Langfuse requests ({} rate-limited), {} traces found, {} enqueued, {} skipped, {} ms",
            ingest.api,
            ingest.outcome,
            ingest.requests,
            ingest.rate_limited,
            ingest.traces_found,
            ingest.enqueued,
            ingest.skipped_covered + ingest.skipped_operator + ingest.skipped_repeat,
            ingest.elapsed_ms
        );
        let n = ingest.enqueued as f64;
        let _ = writeln!(
            s,
            "throughput: {} messages in {batches} batches, {:.1} s processing ({:.0} traces/s); total run {:.1} s",
            ingest.enqueued,
            processing_secs,
            if processing_secs > 0.0 {
                n / processing_secs
            } else {
                0.0
            },
            total_secs
        );
        s
    }
}

fn fmt_map(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the summary back from the stack.
pub async fn collect(stack: &TestStack) -> Result<Summary> {
    let mut summary = Summary::default();
    let client = stack.ledger.client();
    let mut start = None;
    // Entries still `claimed` whose receipt lists them are metered: resolved after the scan.
    let mut entries = Vec::new();
    let mut delivered: HashSet<(String, String)> = HashSet::new();
    loop {
        let out = client
            .scan()
            .table_name(stack.ledger.table())
            .set_exclusive_start_key(start.take())
            .consistent_read(true)
            .send()
            .await?;
        for item in out.items() {
            let pk = get_s(item, "pk").unwrap_or_default();
            let sk = get_s(item, "sk").unwrap_or_default();
            if pk.starts_with("TRACE#") {
                if let Some(entry) = parse_entry(item) {
                    entries.push(entry);
                }
            } else if let Some(receipt) = pk.strip_prefix("RECEIPT#") {
                for id in receipt_delivered(item) {
                    delivered.insert((receipt.to_string(), id.clone()));
                }
            } else if pk.starts_with("MESSAGE#") {
                *summary
                    .failures
                    .entry(get_s(item, "reason").unwrap_or("unknown").to_string())
                    .or_default() += 1;
            } else if let Some(customer) = pk.strip_prefix("BUDGET#") {
                let line = summary.customers.entry(customer.to_string()).or_default();
                if let Some(period) = sk.strip_prefix("PERIOD#") {
                    summary.periods.push((
                        customer.to_string(),
                        period.to_string(),
                        get_u64(item, "used").unwrap_or(0),
                        get_u64(item, "limit"),
                    ));
                    line.budget_used += get_u64(item, "used").unwrap_or(0);
                    line.limit = get_u64(item, "limit").or(line.limit);
                    if item
                        .get("exceeded")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false)
                    {
                        line.exceeded = true;
                    }
                } else if let Some(alert) = sk.strip_prefix("ALERT#") {
                    let pct = alert
                        .rsplit('#')
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches('0');
                    line.alerts.push(format!("{pct}%"));
                }
            }
        }
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    for entry in entries {
        let receipted = entry.state == LedgerState::Claimed
            && entry.pending.as_ref().is_some_and(|p| {
                p.receipt
                    .as_ref()
                    .is_some_and(|r| delivered.contains(&(r.clone(), p.identifier.clone())))
            });
        let entry = if receipted { entry.delivered() } else { entry };
        *summary
            .states
            .entry(entry.state.as_str().to_string())
            .or_default() += 1;
        if entry.state == LedgerState::Failed
            && let Some(r) = &entry.reason
        {
            *summary.failures.entry(r.clone()).or_default() += 1;
        }
        if let Some(c) = &entry.customer_id
            && entry.revision > 0
        {
            let line = summary.customers.entry(c.clone()).or_default();
            line.traces += 1;
            line.ledger_credits += entry.billed_credits;
            line.capped += entry.capped_credits;
        }
        summary.entries.push(entry);
    }
    for e in stack.stripe.events() {
        let line = summary.customers.entry(e.customer.clone()).or_default();
        line.stripe_events += 1;
        line.stripe_credits += e.value;
    }
    let (visible, in_flight) = stack.esm.depth(&stack.resources.queue_url).await?;
    summary.queued = visible + in_flight;
    summary.dlq = stack.dlq_depth().await?;
    Ok(summary)
}
