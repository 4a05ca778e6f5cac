//! GIVEN a ledger that counts its reads and writes, WHEN the processor asks through the
//! cache, THEN policies and mappings are read once per TTL and a known event is not put again.

use super::*;
use crate::clock::OffsetClock;
use crate::domain::budget::{BudgetMode, Period};
use crate::domain::budget_event::BudgetEventKind;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A budget store and directory that counts its calls; the policy and the mapping it answers
/// can be changed (an operator's `budget set` / `customer map`).
#[derive(Default)]
struct Counting {
    policy_reads: AtomicUsize,
    mapping_reads: AtomicUsize,
    event_puts: AtomicUsize,
    limit: Mutex<Option<u64>>,
    mapped: Mutex<Option<String>>,
    events: Mutex<HashSet<String>>,
    fail_reads: Mutex<bool>,
}

#[async_trait]
impl BudgetStore for Counting {
    async fn budget_policy(&self, _customer_id: &str) -> Result<Option<BudgetPolicy>> {
        self.policy_reads.fetch_add(1, Ordering::SeqCst);
        if *lock(&self.fail_reads) {
            return Err(crate::Error::transient("dynamodb", "throttled"));
        }
        Ok(lock(&self.limit).map(|limit| BudgetPolicy {
            limit: Some(limit),
            period: Period::Month,
            mode: BudgetMode::Hard,
            thresholds: vec![50, 100],
        }))
    }
    async fn budget_usage(&self, _: &str, _: &str) -> Result<BudgetUsage> {
        Ok(BudgetUsage::default())
    }
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool> {
        self.event_puts.fetch_add(1, Ordering::SeqCst);
        Ok(lock(&self.events).insert(event_key(event)))
    }
    async fn clear_exceeded(&self, _: &BudgetEvent) -> Result<bool> {
        Ok(false)
    }
    async fn set_exceeded(&self, _: &str, _: &str, _: u64, _: DateTime<Utc>) -> Result<bool> {
        Ok(false)
    }
}

#[async_trait]
impl CustomerDirectory for Counting {
    async fn customer_for_user(&self, _user_id: &str) -> Result<Option<String>> {
        self.mapping_reads.fetch_add(1, Ordering::SeqCst);
        Ok(lock(&self.mapped).clone())
    }

    /// One read for all of them, as a batch read.
    async fn customers_for_users(&self, ids: &[String]) -> Result<HashMap<String, Option<String>>> {
        self.mapping_reads.fetch_add(1, Ordering::SeqCst);
        let mapped = lock(&self.mapped).clone();
        Ok(ids.iter().map(|u| (u.clone(), mapped.clone())).collect())
    }
}

#[tokio::test]
async fn a_batch_reads_what_is_not_held_in_one_read_and_holds_it() {
    let (cache, clock) = cached();
    *lock(&cache.ledger.mapped) = Some("cus_a".into());
    let users = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
    cache.customer_for_user("u1").await.expect("one");
    let all = cache
        .customers_for_users(&users(&["u1", "u2", "u3"]))
        .await
        .expect("several");
    assert_eq!(all.len(), 3);
    assert!(all.values().all(|c| c.as_deref() == Some("cus_a")));
    assert_eq!(
        cache.ledger.mapping_reads.load(Ordering::SeqCst),
        2,
        "u2 and u3 in one read"
    );
    // Now all held: one by one or together, no read until the TTL has passed.
    cache.customer_for_user("u3").await.expect("held");
    cache
        .customers_for_users(&users(&["u1", "u2"]))
        .await
        .expect("held");
    assert_eq!(cache.ledger.mapping_reads.load(Ordering::SeqCst), 2);
    clock.advance(LOOKUP_CACHE_TTL);
    cache
        .customers_for_users(&users(&["u1", "u2"]))
        .await
        .expect("read again");
    assert_eq!(cache.ledger.mapping_reads.load(Ordering::SeqCst), 3);
}

fn cached() -> (LedgerCache<Counting>, Arc<OffsetClock>) {
    let clock = Arc::new(OffsetClock::new());
    let cache = LedgerCache::new(Counting::default(), clock.clone(), LOOKUP_CACHE_TTL);
    (cache, clock)
}

fn crossed(percent: u32, episode: u64) -> BudgetEvent {
    BudgetEvent {
        customer_id: "cus_a".into(),
        period: "2026-12".into(),
        kind: BudgetEventKind::ThresholdCrossed { percent },
        used: 60,
        limit: 100,
        mode: BudgetMode::Hard,
        at: Utc::now(),
        episode,
    }
}

#[tokio::test]
async fn a_policy_is_read_once_per_ttl_and_a_change_shows_after_it() {
    let (cache, clock) = cached();
    *lock(&cache.ledger.limit) = Some(100);
    for _ in 0..5 {
        let p = cache
            .budget_policy("cus_a")
            .await
            .expect("through the cache");
        assert_eq!(p.and_then(|p| p.limit), Some(100));
    }
    assert_eq!(cache.ledger.policy_reads.load(Ordering::SeqCst), 1);
    // An operator raises the limit: the cached copy holds until the TTL has passed.
    *lock(&cache.ledger.limit) = Some(500);
    clock.advance(LOOKUP_CACHE_TTL - Duration::seconds(1));
    let p = cache
        .budget_policy("cus_a")
        .await
        .expect("through the cache");
    assert_eq!(p.and_then(|p| p.limit), Some(100));
    clock.advance(Duration::seconds(1));
    let p = cache
        .budget_policy("cus_a")
        .await
        .expect("through the cache");
    assert_eq!(p.and_then(|p| p.limit), Some(500));
    assert_eq!(cache.ledger.policy_reads.load(Ordering::SeqCst), 2);
    // Each customer has its own copy.
    cache
        .budget_policy("cus_b")
        .await
        .expect("through the cache");
    assert_eq!(cache.ledger.policy_reads.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn no_policy_and_no_mapping_are_cached_too_but_errors_are_not() {
    let (cache, _) = cached();
    assert_eq!(
        cache
            .budget_policy("cus_a")
            .await
            .expect("through the cache"),
        None
    );
    assert_eq!(
        cache
            .budget_policy("cus_a")
            .await
            .expect("through the cache"),
        None
    );
    assert_eq!(cache.ledger.policy_reads.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache
            .customer_for_user("u1")
            .await
            .expect("through the cache"),
        None
    );
    assert_eq!(
        cache
            .customer_for_user("u1")
            .await
            .expect("through the cache"),
        None
    );
    assert_eq!(cache.ledger.mapping_reads.load(Ordering::SeqCst), 1);

    *lock(&cache.ledger.fail_reads) = true;
    assert!(cache.budget_policy("cus_x").await.is_err());
    *lock(&cache.ledger.fail_reads) = false;
    *lock(&cache.ledger.limit) = Some(7);
    let p = cache
        .budget_policy("cus_x")
        .await
        .expect("through the cache");
    assert_eq!(
        p.and_then(|p| p.limit),
        Some(7),
        "a failed read is not remembered"
    );
}

#[tokio::test]
async fn a_mapping_change_takes_effect_after_the_ttl() {
    let (cache, clock) = cached();
    *lock(&cache.ledger.mapped) = Some("cus_old".into());
    assert_eq!(
        cache
            .customer_for_user("u1")
            .await
            .expect("through the cache")
            .as_deref(),
        Some("cus_old")
    );
    *lock(&cache.ledger.mapped) = Some("cus_new".into());
    assert_eq!(
        cache
            .customer_for_user("u1")
            .await
            .expect("through the cache")
            .as_deref(),
        Some("cus_old")
    );
    clock.advance(LOOKUP_CACHE_TTL);
    assert_eq!(
        cache
            .customer_for_user("u1")
            .await
            .expect("through the cache")
            .as_deref(),
        Some("cus_new")
    );
    assert_eq!(cache.ledger.mapping_reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_recorded_event_is_not_put_again_but_a_new_one_is() {
    let (cache, _) = cached();
    assert!(
        cache
            .record_budget_event(&crossed(50, 0))
            .await
            .expect("through the cache")
    );
    assert!(
        !cache
            .record_budget_event(&crossed(50, 0))
            .await
            .expect("through the cache")
    );
    assert_eq!(cache.ledger.event_puts.load(Ordering::SeqCst), 1);
    // Another threshold, or the same one in a later limit episode, is its own event.
    assert!(
        cache
            .record_budget_event(&crossed(100, 0))
            .await
            .expect("through the cache")
    );
    cache
        .record_budget_event(&crossed(50, 1))
        .await
        .expect("through the cache");
    assert_eq!(cache.ledger.event_puts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_event_another_instance_recorded_is_remembered_after_one_refused_put() {
    let (cache, _) = cached();
    lock(&cache.ledger.events).insert(event_key(&crossed(50, 0)));
    assert!(
        !cache
            .record_budget_event(&crossed(50, 0))
            .await
            .expect("through the cache")
    );
    assert!(
        !cache
            .record_budget_event(&crossed(50, 0))
            .await
            .expect("through the cache")
    );
    assert_eq!(cache.ledger.event_puts.load(Ordering::SeqCst), 1);
}
