//! A cross-invocation cache of the price book, kept for [`PRICE_CACHE_TTL`].
//!
//! A change takes effect for the processor within the TTL. A version set to take effect at
//! or after the moment it is written (the rule without `--backdate`) takes effect exactly:
//! usage newer than the cached copy is priced after reading the book again, so it cannot
//! miss a version written after the copy was read.

use crate::clock::Clock;
use crate::domain::price_book::{PriceScope, PriceVersion};
use crate::error::Result;
use crate::ports::{PriceBook, PutVersion};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a copy of a scope's versions is used: 60 seconds.
pub const PRICE_CACHE_TTL: Duration = Duration::seconds(60);

/// A scope's versions and when they were read.
type Held = (DateTime<Utc>, Vec<PriceVersion>);

/// The price book `B` through a cache of each scope's versions.
pub struct PriceCache<B> {
    book: B,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    copies: Mutex<HashMap<PriceScope, Held>>,
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
            copies: Mutex::new(HashMap::new()),
            filling: tokio::sync::Mutex::new(()),
        }
    }

    /// Forgets every copy: the next read of each scope goes to the book.
    pub fn clear(&self) {
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn cached(&self, scope: &PriceScope, usage_at: DateTime<Utc>) -> Option<Vec<PriceVersion>> {
        let now = self.clock.now();
        let copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        let (read_at, versions) = copies.get(scope)?;
        (now - *read_at < self.ttl && usage_at < *read_at).then(|| versions.clone())
    }
}

#[async_trait]
impl<B: PriceBook> PriceBook for PriceCache<B> {
    async fn versions(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>> {
        let read_at = self.clock.now();
        let versions = self.book.versions(scope).await?;
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.clone(), (read_at, versions.clone()));
        Ok(versions)
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
            None => self.versions(scope).await,
        }
    }

    async fn put_version(&self, version: &PriceVersion, now: DateTime<Utc>) -> Result<PutVersion> {
        let put = self.book.put_version(version, now).await?;
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&version.scope);
        Ok(put)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A book that counts its reads.
    #[derive(Default)]
    struct Counting(Arc<AtomicUsize>);

    #[async_trait]
    impl PriceBook for Counting {
        async fn versions(&self, _scope: &PriceScope) -> Result<Vec<PriceVersion>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        }
        async fn put_version(&self, _v: &PriceVersion, _now: DateTime<Utc>) -> Result<PutVersion> {
            Ok(PutVersion::Written)
        }
    }

    #[tokio::test]
    async fn a_copy_serves_older_usage_for_the_ttl_and_newer_usage_reads_again() {
        let (book, clock) = (Counting::default(), Arc::new(OffsetClock::new()));
        let count = book.0.clone();
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
}
