//! Per-invocation state: the deadline, the receipt id, caches of budget policies and user
//! mappings (each read at most once per invocation, so one batch sees one policy per
//! customer, and read for the whole batch at once: [`Invocation::look_up`]; below them the deployed function keeps both across invocations for a minute:
//! `adapters::ledger_cache`), and the budgets already checked again for redelivered messages.

use crate::Deps;
use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracemeter::Result;
use tracemeter::domain::budget::BudgetPolicy;
use tracemeter::domain::ledger::receipt_id;
use tracemeter::domain::usage::TraceUsage;
use tracemeter::domain::{customer, deadline};
use tracing::warn;

/// Identifiers per receipt item: at most 100 characters each, so an item stays far below
/// DynamoDB's 400 KB.
const RECEIPT_CHUNK: usize = 1000;

pub(crate) struct Invocation {
    deadline: DateTime<Utc>,
    receipt: String,
    policies: Mutex<HashMap<String, BudgetPolicy>>,
    customers: Mutex<HashMap<String, Option<String>>>,
    rechecked: Mutex<HashSet<(String, String)>>,
    unpriced: AtomicUsize,
}

impl Invocation {
    pub(crate) fn new(deps: &Deps<'_>, records: &[SqsMessage], deadline: DateTime<Utc>) -> Self {
        let seed: Vec<&str> = records
            .iter()
            .filter_map(|r| r.receipt_handle.as_deref().or(r.message_id.as_deref()))
            .collect();
        Invocation {
            deadline,
            receipt: receipt_id(&seed, deps.clock.now()),
            policies: Mutex::default(),
            customers: Mutex::default(),
            rechecked: Mutex::default(),
            unpriced: AtomicUsize::new(0),
        }
    }

    /// Counts a trace priced with token usage left unpriced (billed compute only).
    pub(crate) fn count_unpriced(&self) {
        self.unpriced.fetch_add(1, Ordering::Relaxed);
    }

    /// Traces priced with unpriced token usage so far.
    pub(crate) fn unpriced(&self) -> usize {
        self.unpriced.load(Ordering::Relaxed)
    }

    /// This invocation's id (its receipt's, unique per invocation).
    pub(crate) fn id(&self) -> &str {
        &self.receipt
    }

    /// The receipt that records the delivery of the batch's `index`-th message.
    pub(crate) fn receipt_for(&self, index: usize) -> String {
        format!("{}-{}", self.receipt, index / RECEIPT_CHUNK)
    }

    /// How long a claim made now stays this invocation's: its deadline plus a margin.
    pub(crate) fn lease_until(&self, deps: &Deps<'_>) -> DateTime<Utc> {
        self.deadline + deps.config.process.lease_margin
    }

    /// True when work expected to take `estimate` can start now and end before the deadline
    /// with the configured margin.
    pub(crate) fn can_start(&self, deps: &Deps<'_>, estimate: std::time::Duration) -> bool {
        let estimate = chrono::Duration::from_std(estimate).unwrap_or(chrono::Duration::MAX);
        deadline::can_start(
            deps.clock.now(),
            self.deadline,
            estimate,
            deps.config.process.deadline_margin,
        )
    }

    /// The customer's budget policy: its own from the table, else the configured default.
    pub(crate) async fn policy(&self, deps: &Deps<'_>, customer_id: &str) -> Result<BudgetPolicy> {
        if let Some(p) = lock(&self.policies).get(customer_id) {
            return Ok(p.clone());
        }
        // The batch read of one (the same read unit as a `GetItem`): the processor reads
        // policies and mappings only so, and its role grants no other read of them.
        let one = [customer_id.to_string()];
        let policy = deps
            .ledger
            .budget_policies_of(&one)
            .await?
            .remove(customer_id)
            .flatten()
            .unwrap_or_else(|| deps.config.default_budget.clone());
        lock(&self.policies).insert(customer_id.to_string(), policy.clone());
        Ok(policy)
    }

    /// True the first time a customer's period is claimed for a re-check in this invocation
    /// (see [`crate::budget::recheck`]).
    pub(crate) fn first_recheck(&self, customer_id: &str, period: &str) -> bool {
        let key = (customer_id.to_string(), period.to_string());
        lock(&self.rechecked).insert(key)
    }

    /// Gives a re-check back after it failed, so that the next message tries again.
    pub(crate) fn forget_recheck(&self, customer_id: &str, period: &str) {
        let key = (customer_id.to_string(), period.to_string());
        lock(&self.rechecked).remove(&key);
    }

    /// The Stripe customer who pays for the trace (order: `domain::customer::resolve`).
    pub(crate) async fn customer(&self, deps: &Deps<'_>, usage: &TraceUsage) -> Result<String> {
        let keys = &deps.config.customers.metadata_keys;
        let mapped = match customer::user_to_look_up(usage, keys) {
            Some(user) => self.mapping(deps, user).await?,
            None => None,
        };
        resolve(deps, usage, mapped.as_deref())
    }

    /// Reads the user mappings, then the budget policies, that pricing `usages` will ask
    /// for, each in one batch read rather than one read per user and customer. Best effort:
    /// what this could not read is read again per trace, where an error names its trace.
    pub(crate) async fn look_up(&self, deps: &Deps<'_>, usages: &[&TraceUsage]) {
        let keys = &deps.config.customers.metadata_keys;
        let users: BTreeSet<String> = usages
            .iter()
            .filter_map(|u| customer::user_to_look_up(u, keys))
            .filter(|user| !lock(&self.customers).contains_key(*user))
            .map(str::to_string)
            .collect();
        if !users.is_empty() {
            let users: Vec<String> = users.into_iter().collect();
            match deps.ledger.customers_for_users(&users).await {
                Ok(found) => lock(&self.customers).extend(found),
                Err(e) => {
                    warn!(users = users.len(), error = %e, "could not read the batch's user mappings at once")
                }
            }
        }
        let customers: BTreeSet<String> = usages
            .iter()
            .filter_map(|u| self.known_customer(deps, u))
            .filter(|c| !lock(&self.policies).contains_key(c))
            .collect();
        if customers.is_empty() {
            return;
        }
        let customers: Vec<String> = customers.into_iter().collect();
        match deps.ledger.budget_policies_of(&customers).await {
            Ok(found) => {
                let default = &deps.config.default_budget;
                lock(&self.policies).extend(
                    found
                        .into_iter()
                        .map(|(c, p)| (c, p.unwrap_or_else(|| default.clone()))),
                );
            }
            Err(e) => {
                warn!(customers = customers.len(), error = %e, "could not read the batch's budget policies at once")
            }
        }
    }

    /// The trace's customer from what this invocation already knows, without a read.
    fn known_customer(&self, deps: &Deps<'_>, usage: &TraceUsage) -> Option<String> {
        let keys = &deps.config.customers.metadata_keys;
        let mapped = match customer::user_to_look_up(usage, keys) {
            Some(user) => lock(&self.customers).get(user)?.clone(),
            None => None,
        };
        resolve(deps, usage, mapped.as_deref()).ok()
    }

    async fn mapping(&self, deps: &Deps<'_>, user: &str) -> Result<Option<String>> {
        if let Some(m) = lock(&self.customers).get(user) {
            return Ok(m.clone());
        }
        let m = deps
            .ledger
            .customers_for_users(&[user.to_string()])
            .await?
            .remove(user)
            .flatten();
        lock(&self.customers).insert(user.to_string(), m.clone());
        Ok(m)
    }
}

/// The trace's customer by the configured rules, given its user's mapping.
fn resolve(deps: &Deps<'_>, usage: &TraceUsage, mapped: Option<&str>) -> Result<String> {
    let rules = &deps.config.customers;
    customer::resolve(
        usage,
        &rules.metadata_keys,
        mapped,
        rules.default_customer.as_deref(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
