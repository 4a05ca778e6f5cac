//! [`MemoryLedger`]: the DynamoDB ledger's items and conditional writes, in memory.
//!
//! The state mirrors the table of [`crate::adapters::dynamo`] item by item: trace entries as
//! stored (a receipt is only read when an entry is), malformed-message records, delivery
//! receipts, budget counters, alerts, policies and user mappings. One mutex around all of it
//! makes every write (and every transaction) atomic, as DynamoDB's conditional writes and
//! `TransactWriteItems` are. Times are kept to the millisecond, as the table stores them.
//!
//! One file per port: [`claims`] (`ClaimStore`), [`deliveries`] (`DeliveryStore`),
//! [`budgets`] (`BudgetStore`, `CustomerDirectory`), and for operators [`admin`]
//! (`AttentionIndex`, `AmbiguousSettlement`, `CustomerAdmin`), [`rejections`]
//! (`StripeRejections`).

mod admin;
mod budgets;
mod claims;
mod deliveries;
mod prices;
mod rejections;

use super::lock;
use crate::domain::budget::BudgetPolicy;
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::domain::claim::BilledUsage;
use crate::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use crate::domain::price_book::{PriceScope, PriceVersion};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// The ledger table in memory. `Default` is an empty table.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    traces: BTreeMap<String, StoredTrace>,
    messages: BTreeMap<String, FailedMessage>,
    receipts: BTreeMap<String, BTreeSet<String>>,
    counters: BTreeMap<(String, String), Counter>,
    /// Budget events by their item's key (`budget_event_key`): one per key, as the
    /// conditional put keeps them.
    events: BTreeMap<(String, String), BudgetEvent>,
    policies: BTreeMap<String, BudgetPolicy>,
    users: BTreeMap<String, String>,
    /// Price versions (`PRICE#<scope>` / `FROM#<time>`).
    prices: BTreeMap<(PriceScope, DateTime<Utc>), PriceVersion>,
    /// The price book's index (`PRICE#default` / `SCOPES`): the customers added, and
    /// whether `build_index` has marked it complete.
    price_index: (BTreeSet<String>, bool),
}

/// A trace's ledger item as stored (`TRACE#<id>` / `LEDGER`): a claimed entry stays claimed
/// here even when its receipt lists it (only reading the entry folds the receipt in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrace {
    /// `state`.
    pub state: LedgerState,
    /// `ver`: every write adds one.
    pub version: u64,
    /// `revision`.
    pub revision: u32,
    /// `total_credits`.
    pub total_credits: u64,
    /// `billed_credits`.
    pub billed_credits: u64,
    /// `capped_credits`.
    pub capped_credits: u64,
    /// `customer_id`.
    pub customer_id: Option<String>,
    /// `period`: written when a revision is committed (capped, zero or marked metered).
    pub period: Option<String>,
    /// `usage_at`.
    pub usage_at: Option<DateTime<Utc>>,
    /// `last_observation_at`.
    pub last_observation_at: Option<DateTime<Utc>>,
    /// `cost_usd`, `latency_s`, `observations` (normalised decimals, as stored).
    pub seen: Option<BilledUsage>,
    /// The `p_*` attributes.
    pub pending: Option<PendingClaim>,
    /// `reason`.
    pub reason: Option<String>,
    /// `detail`.
    pub detail: Option<String>,
    /// `identifiers`: the delivered identifiers marked or folded into the item.
    pub identifiers: BTreeSet<String>,
    /// `rejected`: identifiers recorded as dropped by Stripe's asynchronous validation.
    pub rejected: BTreeSet<String>,
    /// `failures`: how many times a failure was recorded before any claim.
    pub failures: u64,
    /// `price_version`: the price version the claims recorded.
    pub price_version: Option<String>,
    /// `updated_at` of the writes that leave a `reason` (failures, ambiguity, settling): the
    /// sort key of the `attention` index.
    pub updated_at: Option<DateTime<Utc>>,
}

impl StoredTrace {
    /// A new item, before its first write sets anything but the state.
    fn new(state: LedgerState) -> StoredTrace {
        StoredTrace {
            state,
            version: 0,
            revision: 0,
            total_credits: 0,
            billed_credits: 0,
            capped_credits: 0,
            customer_id: None,
            period: None,
            usage_at: None,
            last_observation_at: None,
            seen: None,
            pending: None,
            reason: None,
            detail: None,
            identifiers: BTreeSet::new(),
            rejected: BTreeSet::new(),
            failures: 0,
            price_version: None,
            updated_at: None,
        }
    }

    /// The entry as `parse_entry` reads the item.
    fn view(&self, trace_id: &str) -> LedgerEntry {
        LedgerEntry {
            trace_id: trace_id.to_string(),
            state: self.state,
            version: self.version,
            revision: self.revision,
            total_credits: self.total_credits,
            billed_credits: self.billed_credits,
            capped_credits: self.capped_credits,
            customer_id: self.customer_id.clone(),
            last_observation_at: self.last_observation_at,
            pending: self.pending.clone(),
            reason: self.reason.clone(),
            detail: self.detail.clone(),
            receipted: None,
            price_version: self.price_version.clone(),
        }
    }
}

/// A budget counter (`BUDGET#<customer>` / `PERIOD#<period>`). `used` and `capped` are signed,
/// as DynamoDB numbers are: giving credits back to a counter that never had them goes below
/// zero, and such a value reads as 0 through [`crate::ports::BudgetStore::budget_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    /// `used`; `None` until a claim or a give-back adds to it.
    pub used: Option<i128>,
    /// `capped`.
    pub capped: Option<i128>,
    /// `exceeded`.
    pub exceeded: bool,
    /// `limit`: the policy's limit as the last claim stored it.
    pub limit: Option<u64>,
    /// `clears`: how many times the flag was cleared (the limit episode).
    pub clears: u64,
}

/// A budget alert record (`BUDGET#<customer>` / `ALERT#<period>#<percent>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The customer.
    pub customer_id: String,
    /// The period key.
    pub period: String,
    /// The threshold in percent.
    pub threshold_pct: u32,
    /// Credits used when it was created.
    pub used: u64,
    /// The limit then.
    pub limit: u64,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Alert {
    /// The alert record of a `Budget Threshold Crossed` event.
    fn of(event: &BudgetEvent) -> Option<Alert> {
        let BudgetEventKind::ThresholdCrossed { percent } = event.kind else {
            return None;
        };
        Some(Alert {
            customer_id: event.customer_id.clone(),
            period: event.period.clone(),
            threshold_pct: percent,
            used: event.used,
            limit: event.limit,
            created_at: event.at,
        })
    }
}

/// A malformed message's record (`MESSAGE#<id>` / `FAILED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedMessage {
    /// `reason`.
    pub reason: String,
    /// `detail` (truncated to 1000 bytes).
    pub detail: String,
    /// `body` (truncated to 2048 bytes).
    pub body: String,
    /// `ver`.
    pub version: u64,
    /// `failures`.
    pub failures: u64,
    /// `updated_at`.
    pub updated_at: DateTime<Utc>,
}

impl State {
    /// The entry as `DynamoLedger::entry` reads it: a claimed entry whose receipt lists its
    /// pending identifier reads as delivered.
    fn entry(&self, trace_id: &str) -> Option<LedgerEntry> {
        let entry = self.traces.get(trace_id)?.view(trace_id);
        if entry.state == LedgerState::Claimed
            && let Some(p) = &entry.pending
            && let Some(receipt) = &p.receipt
            && self
                .receipts
                .get(receipt)
                .is_some_and(|ids| ids.contains(&p.identifier))
        {
            return Some(entry.delivered());
        }
        Some(entry)
    }
}

/// Test-only seeding and inspection.
impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Writes a customer's budget policy (as `DynamoLedger::put_budget_policy`).
    pub fn put_budget_policy(&self, customer: &str, policy: &BudgetPolicy) {
        self.state()
            .policies
            .insert(customer.to_string(), policy.clone());
    }

    /// Maps a Langfuse user id to a Stripe customer (as `DynamoLedger::put_user_mapping`).
    pub fn put_user_mapping(&self, user_id: &str, customer: &str) {
        self.state()
            .users
            .insert(user_id.to_string(), customer.to_string());
    }

    /// A trace's item as stored (no receipt folded in).
    pub fn stored(&self, trace_id: &str) -> Option<StoredTrace> {
        self.state().traces.get(trace_id).cloned()
    }

    /// Every trace entry, as [`crate::ports::ClaimStore::entry`] reads it, by trace id.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        let state = self.state();
        state
            .traces
            .keys()
            .filter_map(|id| state.entry(id))
            .collect()
    }

    /// A budget counter as stored.
    pub fn counter(&self, customer: &str, period: &str) -> Option<Counter> {
        let key = (customer.to_string(), period.to_string());
        self.state().counters.get(&key).cloned()
    }

    /// Every alert record (a `Budget Threshold Crossed` event), by customer, period and
    /// threshold.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self.state().events.values().filter_map(Alert::of).collect();
        alerts.sort_by(|a, b| {
            let key = |a: &Alert| (a.customer_id.clone(), a.period.clone(), a.threshold_pct);
            key(a).cmp(&key(b))
        });
        alerts
    }

    /// Every budget event recorded (each once), by item key.
    pub fn budget_events(&self) -> Vec<BudgetEvent> {
        self.state().events.values().cloned().collect()
    }

    /// The identifiers a receipt records as delivered (`None`: no such receipt).
    pub fn receipt(&self, receipt: &str) -> Option<Vec<String>> {
        let state = self.state();
        state
            .receipts
            .get(receipt)
            .map(|ids| ids.iter().cloned().collect())
    }

    /// A malformed message's record.
    pub fn failed_message(&self, message_id: &str) -> Option<FailedMessage> {
        self.state().messages.get(message_id).cloned()
    }
}

/// A time as the table keeps it: whole milliseconds.
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `truncate` of the DynamoDB adapter: at most `max` bytes on a char boundary, then `…`.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The error DynamoDB answers a request it refuses outright (a transient error, as the
/// adapter maps every SDK error).
fn refused(op: &str, detail: impl std::fmt::Display) -> crate::Error {
    crate::Error::transient("dynamodb", format!("{op}: {detail}"))
}
