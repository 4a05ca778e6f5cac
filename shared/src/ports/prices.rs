//! The price book's versions, stored in the ledger table (see [`crate::domain::price_book`]).

use crate::domain::price_book::{DefaultBook, PriceScope, PriceVersion, ScopeIndex};
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// What writing a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutVersion {
    /// Written.
    Written,
    /// The same version was already stored: nothing changed.
    Unchanged,
    /// Another version is stored for the same scope and time: nothing changed.
    Conflict(Box<PriceVersion>),
}

/// Reading and writing price versions.
#[async_trait]
pub trait PriceBook: Send + Sync {
    /// A scope's stored versions, oldest first.
    async fn versions(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>>;
    /// The default scope's versions and the index of customers with versions, in one read.
    /// Without an index: [`PriceBook::versions`] of the default scope, index unknown.
    async fn default_book(&self) -> Result<DefaultBook> {
        Ok(DefaultBook {
            versions: self.versions(&PriceScope::Default).await?,
            index: ScopeIndex::Unknown,
        })
    }
    /// A scope's versions, complete for usage at `usage_at`: a cache answers from a copy
    /// read after that time, else reads again (a version never takes effect before it is
    /// written, `--backdate` aside). Without a cache, [`PriceBook::versions`].
    async fn versions_for(
        &self,
        scope: &PriceScope,
        usage_at: DateTime<Utc>,
    ) -> Result<Vec<PriceVersion>> {
        let _ = usage_at;
        self.versions(scope).await
    }
    /// Stores a version unless its scope holds one from the same time (a conditional put:
    /// two concurrent writers of one version both end with it stored once). A customer's
    /// scope is added to the index first, so the index never misses a stored version.
    async fn put_version(&self, version: &PriceVersion, now: DateTime<Utc>) -> Result<PutVersion>;
    /// Adds every customer scope found among the stored versions to the index and marks it
    /// complete (versions stored before the index existed are found this way); the customers
    /// found.
    async fn build_index(&self) -> Result<BTreeSet<String>>;
}
