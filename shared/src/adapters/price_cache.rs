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
use std::sync::Mutex;

/// How long a copy of a scope's versions is used: 60 seconds.
pub const PRICE_CACHE_TTL: Duration = Duration::seconds(60);

/// The price book through a cache of each scope's versions.
pub struct PriceCache<'a> {
    book: &'a dyn PriceBook,
    clock: &'a dyn Clock,
    ttl: Duration,
    copies: Mutex<HashMap<PriceScope, (DateTime<Utc>, Vec<PriceVersion>)>>,
}

impl<'a> PriceCache<'a> {
    /// A cache of `book`, each copy kept for `ttl`.
    pub fn new(book: &'a dyn PriceBook, clock: &'a dyn Clock, ttl: Duration) -> PriceCache<'a> {
        PriceCache {
            book,
            clock,
            ttl,
            copies: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, scope: &PriceScope, usage_at: DateTime<Utc>) -> Option<Vec<PriceVersion>> {
        let now = self.clock.now();
        let copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        let (read_at, versions) = copies.get(scope)?;
        (now - *read_at < self.ttl && usage_at < *read_at).then(|| versions.clone())
    }
}

#[async_trait]
impl PriceBook for PriceCache<'_> {
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
