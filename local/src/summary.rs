//! The billing summary of a local run, read back from the ledger table, the budget counters
//! and what the Stripe fake received.

use crate::counting_proxy::Counts;
use crate::harness::TestStack;
use crate::workload::Seeded;
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use tracemeter::adapters::dynamo::{get_s, get_u64, parse_entry, receipt_delivered};
use tracemeter::domain::budget::{BudgetPolicy, Period};
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
    pub fn render(&self, run: &RunFigures) -> String {
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
        for (customer, line) in &self.customers {
            let policy = run
                .seeded
                .budgets
                .iter()
                .find(|(c, _)| c == customer)
                .and_then(|(_, p)| p.as_ref());
            let _ = writeln!(s, "{}", line.render(customer, policy));
        }
        for line in self.totals(run.stripe_fake) {
            let _ = writeln!(s, "{line}");
        }
        for line in self.outcomes(run) {
            let _ = writeln!(s, "{line}");
        }
        s
    }

    /// The credit totals and whether they agree.
    fn totals(&self, stripe_fake: bool) -> [String; 2] {
        let sum = |f: fn(&CustomerLine) -> u64| self.customers.values().map(f).sum::<u64>();
        let (ledger, budgets) = (sum(|c| c.ledger_credits), sum(|c| c.budget_used));
        let agree = |yes: bool| if yes { "yes" } else { "NO" };
        if stripe_fake {
            [
                format!(
                    "\ntotal credits billed: ledger {ledger}, Stripe received {}, budget counters {budgets}",
                    sum(|c| c.stripe_credits)
                ),
                format!(
                    "consistent (Stripe = ledger = budgets, per customer): {}",
                    agree(self.consistent(true))
                ),
            ]
        } else {
            [
                format!(
                    "\ntotal credits billed: ledger {ledger}, budget counters {budgets} (real Stripe: compare with the meter's event summaries in the Dashboard)"
                ),
                format!(
                    "consistent (ledger = budgets, per customer): {}",
                    agree(self.consistent(false))
                ),
            ]
        }
    }

    /// What became of the traces, and what the run cost.
    fn outcomes(&self, run: &RunFigures) -> Vec<String> {
        let ingest = run.ingest;
        let revised = self.entries.iter().filter(|e| e.revision >= 2).count();
        let mut lines = vec![
            format!("ledger states: {}", fmt_map(&self.states)),
            format!("permanent failures by reason: {}", fmt_map(&self.failures)),
        ];
        lines.extend(self.prices(run));
        if let Some(enqueued) = run.late_cost {
            lines.push(format!(
                "late cost: {enqueued} billed traces enqueued again by ingest's re-scan, {revised} billed the difference as revision 2"
            ));
        }
        lines.extend([
            format!(
                "pending: {} traces still settling (not enqueued), {} messages in the queue",
                run.seeded.settling, self.queued
            ),
            format!("dead-letter queue depth: {}", self.dlq),
            format!(
                "ingest ({}): {:?}, {} Langfuse requests ({} rate-limited), {} traces found, {} enqueued, {} skipped, {} ms",
                ingest.api,
                ingest.outcome,
                ingest.requests,
                ingest.rate_limited,
                ingest.traces_found,
                ingest.enqueued,
                ingest.skipped_covered + ingest.skipped_operator + ingest.skipped_repeat,
                ingest.elapsed_ms
            ),
            run.throughput(),
            run.aws_calls(self.entries.len()),
        ]);
        lines
    }
}

impl Summary {
    /// The price book's versions and what each priced: traces and credits billed.
    fn prices(&self, run: &RunFigures) -> Vec<String> {
        if run.seeded.prices.is_empty() {
            return Vec::new();
        }
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for e in self.entries.iter().filter(|e| e.revision > 0) {
            let key = e.price_version.clone().unwrap_or_else(|| "-".into());
            let (traces, credits) = by.entry(key).or_default();
            *traces += 1;
            *credits += e.billed_credits;
        }
        let mut lines = vec!["price book:".to_string()];
        lines.extend(run.seeded.prices.iter().map(|p| format!("  {p}")));
        lines.extend(
            by.iter()
                .map(|(v, (t, c))| format!("  priced with {v}: {t} traces, {c} credits billed")),
        );
        lines
    }
}

impl CustomerLine {
    /// The customer's row of the table.
    fn render(&self, customer: &str, policy: Option<&BudgetPolicy>) -> String {
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
            (Some(Period::Month), Some(l)) => l.saturating_sub(self.budget_used).to_string(),
            (Some(_), Some(_)) => "per period".to_string(),
            _ => "-".to_string(),
        };
        let alerts = if self.alerts.is_empty() {
            "-".to_string()
        } else {
            self.alerts.join(",")
        };
        let exceeded = match (self.exceeded, policy) {
            (true, Some(p)) => format!(" (hard limit reached, {})", p.mode.as_str()),
            (true, None) => " (hard limit reached)".to_string(),
            _ => String::new(),
        };
        format!(
            "{:<14} {:>7} {:>12} {:>8} {:>12} {:>12} {:>12} {:>10}  {alerts}{exceeded}",
            customer,
            self.traces,
            self.ledger_credits,
            self.stripe_events,
            self.budget_used,
            label,
            remaining,
            self.capped,
        )
    }
}

/// The figures of a local run beside the summary.
#[derive(Debug, Clone)]
pub struct RunFigures<'a> {
    /// What was seeded.
    pub seeded: &'a Seeded,
    /// The first ingest run.
    pub ingest: &'a ingest::IngestSummary,
    /// Stripe is the fake (its totals are compared).
    pub stripe_fake: bool,
    /// Batches the processor was invoked with.
    pub batches: usize,
    /// Seconds from the first batch to the queue drained (late-cost round included).
    pub processing_secs: f64,
    /// Seconds of the whole run.
    pub total_secs: f64,
    /// Traces enqueued again for late cost (None: no late-cost round).
    pub late_cost: Option<u64>,
    /// The functions' and the event source mapping's AWS calls, by operation.
    pub aws: Counts,
}

impl RunFigures<'_> {
    fn throughput(&self) -> String {
        let n = self.ingest.enqueued as f64;
        let rate = if self.processing_secs > 0.0 {
            n / self.processing_secs
        } else {
            0.0
        };
        format!(
            "throughput: {} messages in {} batches, {:.1} s processing ({rate:.0} traces/s); total run {:.1} s",
            self.ingest.enqueued, self.batches, self.processing_secs, self.total_secs
        )
    }

    /// moto calls in all and per trace with a ledger entry.
    fn aws_calls(&self, traces: usize) -> String {
        let calls = |prefix: &str| -> u64 {
            self.aws
                .iter()
                .filter(|(op, _)| op.starts_with(prefix))
                .map(|(_, c)| c.calls)
                .sum()
        };
        let (dynamo, sqs) = (calls("DynamoDB"), calls("AmazonSQS"));
        let per = |n: u64| n as f64 / traces.max(1) as f64;
        format!(
            "moto calls: {} DynamoDB ({:.1} per trace), {} SQS ({:.1} per trace)",
            dynamo,
            per(dynamo),
            sqs,
            per(sqs)
        )
    }
}

/// `key value, key value` in key order; `none` when empty.
pub fn fmt_map<V: std::fmt::Display>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the summary back from the stack.
pub async fn collect(stack: &TestStack) -> Result<Summary> {
    let mut scan = Scan::default();
    scan_table(stack, |item| scan.add(item)).await?;
    let mut summary = scan.summary;
    for entry in scan.entries {
        summary.add_entry(entry, &scan.delivered);
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

/// Calls `each` on every item of the stack's table (consistent reads, page after page).
pub async fn scan_table(stack: &TestStack, mut each: impl FnMut(&Item)) -> Result<()> {
    let mut start = None;
    loop {
        let out = stack
            .dynamo
            .scan()
            .table_name(&stack.resources.table_name)
            .set_exclusive_start_key(start.take())
            .consistent_read(true)
            .send()
            .await?;
        out.items().iter().for_each(&mut each);
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(()),
        }
    }
}

/// The table's items as read so far. Entries still `claimed` whose receipt lists them are
/// metered: they are resolved after the scan.
#[derive(Default)]
struct Scan {
    summary: Summary,
    entries: Vec<tracemeter::domain::ledger::LedgerEntry>,
    /// (receipt id, identifier) of every delivery a receipt records.
    delivered: HashSet<(String, String)>,
}

/// A DynamoDB item.
pub type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

impl Scan {
    fn add(&mut self, item: &Item) {
        let pk = get_s(item, "pk").unwrap_or_default();
        let sk = get_s(item, "sk").unwrap_or_default();
        if pk.starts_with("TRACE#") {
            self.entries.extend(parse_entry(item));
        } else if let Some(receipt) = pk.strip_prefix("RECEIPT#") {
            for id in receipt_delivered(item) {
                self.delivered.insert((receipt.to_string(), id.clone()));
            }
        } else if pk.starts_with("MESSAGE#") {
            let reason = get_s(item, "reason").unwrap_or("unknown").to_string();
            *self.summary.failures.entry(reason).or_default() += 1;
        } else if let Some(customer) = pk.strip_prefix("BUDGET#") {
            self.summary.add_budget_item(customer, sk, item);
        }
    }
}

impl Summary {
    /// A budget counter (`PERIOD#…`) or alert (`ALERT#…#percent`) of `customer`.
    fn add_budget_item(&mut self, customer: &str, sk: &str, item: &Item) {
        let line = self.customers.entry(customer.to_string()).or_default();
        if let Some(period) = sk.strip_prefix("PERIOD#") {
            let used = get_u64(item, "used").unwrap_or(0);
            let limit = get_u64(item, "limit");
            self.periods
                .push((customer.to_string(), period.to_string(), used, limit));
            line.budget_used += used;
            line.limit = limit.or(line.limit);
            let exceeded = item.get("exceeded").and_then(|v| v.as_bool().ok());
            line.exceeded |= exceeded.copied().unwrap_or(false);
        } else if let Some(alert) = sk.strip_prefix("ALERT#") {
            let pct = alert
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .trim_start_matches('0');
            line.alerts.push(format!("{pct}%"));
        }
    }

    /// A trace's ledger entry, a claim its receipt lists as delivered read as delivered.
    fn add_entry(
        &mut self,
        entry: tracemeter::domain::ledger::LedgerEntry,
        delivered: &HashSet<(String, String)>,
    ) {
        let receipted = entry.state == LedgerState::Claimed
            && entry.pending.as_ref().is_some_and(|p| {
                p.receipt
                    .as_ref()
                    .is_some_and(|r| delivered.contains(&(r.clone(), p.identifier.clone())))
            });
        let entry = if receipted { entry.delivered() } else { entry };
        *self
            .states
            .entry(entry.state.as_str().to_string())
            .or_default() += 1;
        if entry.state == LedgerState::Failed
            && let Some(r) = &entry.reason
        {
            *self.failures.entry(r.clone()).or_default() += 1;
        }
        if let Some(c) = &entry.customer_id
            && entry.revision > 0
        {
            let line = self.customers.entry(c.clone()).or_default();
            line.traces += 1;
            line.ledger_credits += entry.billed_credits;
            line.capped += entry.capped_credits;
        }
        self.entries.push(entry);
    }
}
