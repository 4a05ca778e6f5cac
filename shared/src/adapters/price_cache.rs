//! A cross-invocation cache of the price book, kept for [`PRICE_CACHE_TTL`].
//!
//! A change takes effect for the processor within the TTL. A version set to take effect at
//! or after the moment it is written (the rule without `--backdate`) takes effect exactly:
//! usage newer than the cached copy is priced after reading the book again, so it cannot
//! miss a version written after the copy was read.
//!
//! The default scope is read with the book's index of customers that hold versions (one
//! read); a customer a complete index does not name is answered "no versions of its own"
//! without reading its scope, under the same rule: the index copy serves usage older than
//! the copy, for the TTL (`price set` indexes a customer before storing its version).

use crate::clock::Clock;
use crate::domain::price_book::{DefaultBook, PriceScope, PriceVersion, ScopeIndex};
use crate::error::Result;
use crate::ports::{PriceBook, PutVersion};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// How long a copy of a scope's versions is used: 60 seconds.
pub const PRICE_CACHE_TTL: Duration = Duration::seconds(60);

/// What was read and when.
type Held<T> = (DateTime<Utc>, T);

/// The copies: each scope's versions, and the index read with the default scope.
#[derive(Default)]
struct Copies {
    scopes: HashMap<PriceScope, Held<Vec<PriceVersion>>>,
    index: Option<Held<ScopeIndex>>,
}

/// The price book `B` through a cache of each scope's versions.
pub struct PriceCache<B> {
    book: B,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    copies: Mutex<Copies>,
    /// Held while a missing scope is read, so that the traces of a batch priced at once
    /// make one read of the scope, not one each.
    filling: tokio::sync::Mutex<()>,
}

impl<B: PriceBook> PriceCache<B> {
    /// A cache of `book`, each copy kept for `ttl`.
    pub fn new(book: B, clock: Arc<dyn Clock>, ttl: Duration) -> PriceCache<B> {
        PriceCache {
            book,
            clock,
            ttl,
            copies: Mutex::new(Copies::default()),
            filling: tokio::sync::Mutex::new(()),
        }
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, Copies> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every copy: the next read of each scope goes to the book.
    pub fn clear(&self) {
        *self.copies() = Copies::default();
    }

    /// Whether a copy read at `read_at` serves usage at `usage_at` now.
    fn serves(&self, read_at: DateTime<Utc>, usage_at: DateTime<Utc>) -> bool {
        self.clock.now() - read_at < self.ttl && usage_at < read_at
    }

    fn cached(&self, scope: &PriceScope, usage_at: DateTime<Utc>) -> Option<Vec<PriceVersion>> {
        let copies = self.copies();
        if let Some((read_at, versions)) = copies.scopes.get(scope)
            && self.serves(*read_at, usage_at)
        {
            return Some(versions.clone());
        }
        // A customer a fresh complete index does not name holds no versions.
        let PriceScope::Customer(customer) = scope else {
            return None;
        };
        let (read_at, index) = copies.index.as_ref()?;
        (self.serves(*read_at, usage_at) && !index.may_hold(customer)).then(Vec::new)
    }

    /// Reads a scope (the default one with the index) and keeps the copy.
    async fn read(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>> {
        let read_at = self.clock.now();
        let (versions, index) = match scope {
            PriceScope::Default => {
                let DefaultBook { versions, index } = self.book.default_book().await?;
                (versions, Some(index))
            }
            customer => (self.book.versions(customer).await?, None),
        };
        let mut copies = self.copies();
        copies
            .scopes
            .insert(scope.clone(), (read_at, versions.clone()));
        if let Some(index) = index {
            copies.index = Some((read_at, index));
        }
        Ok(versions)
    }
}

#[async_trait]
impl<B: PriceBook> PriceBook for PriceCache<B> {
    async fn versions(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>> {
        self.read(scope).await
    }

    async fn default_book(&self) -> Result<DefaultBook> {
        let versions = self.read(&PriceScope::Default).await?;
        let index = self.copies().index.as_ref().map(|(_, i)| i.clone());
        Ok(DefaultBook {
            versions,
            index: index.unwrap_or_default(),
        })
    }

    async fn versions_for(
        &self,
        scope: &PriceScope,
        usage_at: DateTime<Utc>,
    ) -> Result<Vec<PriceVersion>> {
        if let Some(v) = self.cached(scope, usage_at) {
            return Ok(v);
        }
        let _filling = self.filling.lock().await;
        match self.cached(scope, usage_at) {
            Some(v) => Ok(v),
            None => self.read(scope).await,
        }
    }

    async fn put_version(&self, version: &PriceVersion, now: DateTime<Utc>) -> Result<PutVersion> {
        let put = self.book.put_version(version, now).await?;
        let mut copies = self.copies();
        copies.scopes.remove(&version.scope);
        copies.index = None;
        Ok(put)
    }

    async fn build_index(&self) -> Result<BTreeSet<String>> {
        let found = self.book.build_index().await?;
        self.copies().index = None;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A book that counts its reads of the default scope and of customers' scopes, with the
    /// index it is given.
    #[derive(Default)]
    struct Counting {
        defaults: Arc<AtomicUsize>,
        customers: Arc<AtomicUsize>,
        index: ScopeIndex,
    }

    #[async_trait]
    impl PriceBook for Counting {
        async fn versions(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>> {
            match scope {
                PriceScope::Default => &self.defaults,
                PriceScope::Customer(_) => &self.customers,
            }
            .fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        }
        async fn default_book(&self) -> Result<DefaultBook> {
            self.defaults.fetch_add(1, Ordering::SeqCst);
            Ok(DefaultBook {
                versions: Vec::new(),
                index: self.index.clone(),
            })
        }
        async fn put_version(&self, _v: &PriceVersion, _now: DateTime<Utc>) -> Result<PutVersion> {
            Ok(PutVersion::Written)
        }
        async fn build_index(&self) -> Result<BTreeSet<String>> {
            Ok(BTreeSet::new())
        }
    }

    #[tokio::test]
    async fn a_copy_serves_older_usage_for_the_ttl_and_newer_usage_reads_again() {
        let (book, clock) = (Counting::default(), Arc::new(OffsetClock::new()));
        let count = book.defaults.clone();
        let cache = PriceCache::new(book, clock.clone(), PRICE_CACHE_TTL);
        let scope = PriceScope::Default;
        let reads = || count.load(Ordering::SeqCst);
        let old = clock.now() - Duration::hours(1);
        cache.versions_for(&scope, old).await.expect("read");
        cache.versions_for(&scope, old).await.expect("cached");
        assert_eq!(reads(), 1, "older usage is served from the copy");
        // Usage newer than the copy: a version written since could apply to it.
        cache
            .versions_for(&scope, clock.now() + Duration::seconds(1))
            .await
            .expect("read");
        assert_eq!(reads(), 2);
        // Past the TTL the copy is read again.
        clock.advance(PRICE_CACHE_TTL + Duration::seconds(1));
        cache.versions_for(&scope, old).await.expect("read");
        assert_eq!(reads(), 3);
    }

    /// Reads of customer scopes after the default one, for usage an hour old then newer
    /// than the copies, with `index`.
    async fn customer_reads(index: ScopeIndex) -> (usize, usize) {
        let book = Counting {
            index,
            ..Counting::default()
        };
        let count = book.customers.clone();
        let clock = Arc::new(OffsetClock::new());
        let cache = PriceCache::new(book, clock.clone(), PRICE_CACHE_TTL);
        let old = clock.now() - Duration::hours(1);
        cache
            .versions_for(&PriceScope::Default, old)
            .await
            .expect("default");
        for customer in ["cus_plain", "cus_other"] {
            let scope = PriceScope::Customer(customer.into());
            cache.versions_for(&scope, old).await.expect("customer");
        }
        let for_old = count.load(Ordering::SeqCst);
        let newer = clock.now() + Duration::seconds(1);
        let scope = PriceScope::Customer("cus_new".into());
        cache.versions_for(&scope, newer).await.expect("newer");
        (for_old, count.load(Ordering::SeqCst) - for_old)
    }

    #[tokio::test]
    async fn a_complete_index_spares_the_reads_of_customers_it_does_not_name() {
        let named = ScopeIndex::Complete(BTreeSet::from(["cus_other".to_string()]));
        assert_eq!(
            customer_reads(named).await,
            (1, 1),
            "only the named customer is read; usage newer than the index reads its customer"
        );
        let empty = ScopeIndex::Complete(BTreeSet::new());
        assert_eq!(customer_reads(empty).await, (0, 1));
        assert_eq!(
            customer_reads(ScopeIndex::Unknown).await,
            (2, 1),
            "an index not built yet names nobody for sure: every customer is read"
        );
    }
}
