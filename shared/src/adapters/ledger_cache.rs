//! The processor's ledger through a cross-invocation memory, kept for [`LOOKUP_CACHE_TTL`]:
//! - each customer's budget policy and each user's customer mapping (found or not) is read
//!   at most once per TTL by a function instance, where a batch of 100 traces read both for
//!   every invocation;
//! - a budget event known to be recorded (this instance wrote it, or its conditional put
//!   was refused because it exists) is not put again: a threshold reached stays reached for
//!   the rest of the period, and every later check would otherwise spend a refused write.
//!
//! Many of them are read together when a batch asks for them at once (one `BatchGetItem`
//! for all of a batch's users, one for their customers' policies).
//!
//! A `tracemeter budget set` or `tracemeter customer map` therefore takes effect for the
//! processor within [`LOOKUP_CACHE_TTL`] (60 seconds). Everything else is passed through
//! unchanged: entries, claims, counters and deliveries are never cached.

use crate::clock::Clock;
use crate::domain::budget::{BudgetPolicy, BudgetUsage};
use crate::domain::budget_event::BudgetEvent;
use crate::domain::claim::{ClaimBatch, ClaimResult, FailureKey};
use crate::domain::ledger::{LedgerEntry, PendingClaim};
use crate::error::{FailureReason, Result};
use crate::ports::{BudgetStore, ClaimStore, CustomerDirectory, DeliveryStore};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// How long a budget policy or a user mapping is used once read: 60 seconds.
pub const LOOKUP_CACHE_TTL: Duration = Duration::seconds(60);

/// Values by key, each with the time it was read.
struct Held<V>(Mutex<HashMap<String, (DateTime<Utc>, V)>>);

impl<V: Clone> Held<V> {
    fn new() -> Held<V> {
        Held(Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &str, now: DateTime<Utc>, ttl: Duration) -> Option<V> {
        let held = lock(&self.0);
        let (read_at, value) = held.get(key)?;
        (now - *read_at < ttl).then(|| value.clone())
    }

    fn put(&self, key: &str, read_at: DateTime<Utc>, value: V) {
        lock(&self.0).insert(key.to_string(), (read_at, value));
    }

    /// The values of `keys`: those held, and the rest read together by `read` (one batch
    /// read) and held from `now`.
    /// Held while missing values are read (`filling`, shared by the cache's maps), so that
    /// the traces of a batch that all miss at once make one read, not one each.
    async fn many<F, Fut>(
        &self,
        keys: &[String],
        clock: &dyn Clock,
        ttl: Duration,
        filling: &tokio::sync::Mutex<()>,
        read: F,
    ) -> Result<HashMap<String, V>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<HashMap<String, V>>>,
    {
        let mut out = HashMap::new();
        let mut missing = self.split(keys, clock.now(), ttl, &mut out);
        if missing.is_empty() {
            return Ok(out);
        }
        let _filling = filling.lock().await;
        let now = clock.now();
        missing = self.split(&missing, now, ttl, &mut out);
        if !missing.is_empty() {
            for (key, v) in read(missing).await? {
                self.put(&key, now, v.clone());
                out.insert(key, v);
            }
        }
        Ok(out)
    }

    /// Moves the held values of `keys` into `out`; the keys not held.
    fn split(
        &self,
        keys: &[String],
        now: DateTime<Utc>,
        ttl: Duration,
        out: &mut HashMap<String, V>,
    ) -> Vec<String> {
        let mut missing = Vec::new();
        for key in keys {
            match self.get(key, now, ttl) {
                Some(v) => {
                    out.insert(key.clone(), v);
                }
                None => missing.push(key.clone()),
            }
        }
        missing
    }
}

/// The ledger `L` with budget policies and user mappings cached across invocations, and the
/// budget events known to exist remembered.
pub struct LedgerCache<L> {
    ledger: L,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    policies: Held<Option<BudgetPolicy>>,
    mappings: Held<Option<String>>,
    recorded: Mutex<HashSet<String>>,
    /// Held while a missing value is read, so that the traces of a batch that all miss at
    /// once (priced concurrently) make one read, not one each.
    filling: tokio::sync::Mutex<()>,
}

impl<L> LedgerCache<L> {
    /// `ledger` with each policy and mapping kept for `ttl`.
    pub fn new(ledger: L, clock: Arc<dyn Clock>, ttl: Duration) -> LedgerCache<L> {
        LedgerCache {
            ledger,
            clock,
            ttl,
            policies: Held::new(),
            mappings: Held::new(),
            recorded: Mutex::new(HashSet::new()),
            filling: tokio::sync::Mutex::new(()),
        }
    }
}

/// What makes a budget event the same event: its customer, period, kind and limit episode.
fn event_key(event: &BudgetEvent) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{:?}\u{1f}{}",
        event.customer_id, event.period, event.kind, event.episode
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl<L: BudgetStore> BudgetStore for LedgerCache<L> {
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>> {
        let one = [customer_id.to_string()];
        Ok(self
            .budget_policies_of(&one)
            .await?
            .remove(customer_id)
            .flatten())
    }

    async fn budget_policies_of(
        &self,
        customer_ids: &[String],
    ) -> Result<HashMap<String, Option<BudgetPolicy>>> {
        let (clock, filling) = (self.clock.as_ref(), &self.filling);
        self.policies
            .many(
                customer_ids,
                clock,
                self.ttl,
                filling,
                |missing| async move { self.ledger.budget_policies_of(&missing).await },
            )
            .await
    }

    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        self.ledger.budget_usage(customer_id, period).await
    }

    async fn budget_usages(
        &self,
        counters: &[(String, String)],
    ) -> Result<HashMap<(String, String), BudgetUsage>> {
        self.ledger.budget_usages(counters).await
    }

    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool> {
        let key = event_key(event);
        if lock(&self.recorded).contains(&key) {
            return Ok(false);
        }
        let created = self.ledger.record_budget_event(event).await?;
        lock(&self.recorded).insert(key);
        Ok(created)
    }

    async fn clear_exceeded(&self, event: &BudgetEvent) -> Result<bool> {
        self.ledger.clear_exceeded(event).await
    }

    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        episode: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.ledger
            .set_exceeded(customer_id, period, episode, now)
            .await
    }
}

#[async_trait]
impl<L: CustomerDirectory> CustomerDirectory for LedgerCache<L> {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        let one = [user_id.to_string()];
        Ok(self
            .customers_for_users(&one)
            .await?
            .remove(user_id)
            .flatten())
    }

    async fn customers_for_users(
        &self,
        user_ids: &[String],
    ) -> Result<HashMap<String, Option<String>>> {
        let (clock, filling) = (self.clock.as_ref(), &self.filling);
        self.mappings
            .many(user_ids, clock, self.ttl, filling, |missing| async move {
                self.ledger.customers_for_users(&missing).await
            })
            .await
    }
}

#[async_trait]
impl<L: ClaimStore> ClaimStore for LedgerCache<L> {
    async fn entry(&self, trace_id: &str) -> Result<Option<LedgerEntry>> {
        self.ledger.entry(trace_id).await
    }

    async fn entries(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerEntry>> {
        self.ledger.entries(trace_ids).await
    }

    async fn claim_batch(&self, batch: &ClaimBatch) -> Result<ClaimResult> {
        self.ledger.claim_batch(batch).await
    }

    async fn take_over(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.ledger
            .take_over(trace_id, pending, now, lease_until)
            .await
    }

    async fn mark_ambiguous(
        &self,
        trace_id: &str,
        pending: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.ledger.mark_ambiguous(trace_id, pending, now).await
    }

    async fn note_seen(
        &self,
        trace_id: &str,
        version: u64,
        last_observation_at: DateTime<Utc>,
    ) -> Result<bool> {
        self.ledger
            .note_seen(trace_id, version, last_observation_at)
            .await
    }
}

#[async_trait]
impl<L: DeliveryStore> DeliveryStore for LedgerCache<L> {
    async fn record_delivered(
        &self,
        receipt: &str,
        identifiers: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.ledger
            .record_delivered(receipt, identifiers, now)
            .await
    }

    async fn mark_metered(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.ledger.mark_metered(trace_id, p, now).await
    }

    async fn release(&self, trace_id: &str, revision: u32, now: DateTime<Utc>) -> Result<()> {
        self.ledger.release(trace_id, revision, now).await
    }

    async fn fail_claim(
        &self,
        trace_id: &str,
        p: &PendingClaim,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.ledger
            .fail_claim(trace_id, p, reason, detail, now)
            .await
    }

    async fn record_failure(
        &self,
        key: &FailureKey,
        reason: FailureReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.ledger.record_failure(key, reason, detail, now).await
    }
}

#[cfg(test)]
#[path = "ledger_cache_tests.rs"]
mod tests;
