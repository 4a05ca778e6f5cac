//! `PriceBook`: the `PRICE#<scope>` / `FROM#<time>` items, with the conditional put, and the
//! index of customers with versions (`PRICE#default` / `SCOPES`).

use super::{MemoryLedger, ms};
use crate::domain::price_book::{DefaultBook, PriceScope, PriceVersion, ScopeIndex};
use crate::error::Result;
use crate::ports::{PriceBook, PutVersion};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

impl MemoryLedger {
    /// Stores a version without touching the index (what a release before the index did):
    /// the index's contract check plants such versions.
    pub fn put_version_unindexed(&self, version: &PriceVersion) -> PutVersion {
        let mut stored = version.clone();
        stored.effective_from = ms(version.effective_from);
        let key = (stored.scope.clone(), stored.effective_from);
        let mut state = self.state();
        match state.prices.get(&key) {
            Some(existing) if *existing == stored => PutVersion::Unchanged,
            Some(existing) => PutVersion::Conflict(Box::new(existing.clone())),
            None => {
                state.prices.insert(key, stored);
                PutVersion::Written
            }
        }
    }
}

#[async_trait]
impl PriceBook for MemoryLedger {
    async fn versions(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>> {
        Ok(self
            .state()
            .prices
            .range(
                (scope.clone(), DateTime::<Utc>::MIN_UTC)
                    ..=(scope.clone(), DateTime::<Utc>::MAX_UTC),
            )
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn default_book(&self) -> Result<DefaultBook> {
        let versions = self.versions(&PriceScope::Default).await?;
        let (names, complete) = self.state().price_index.clone();
        let index = match complete {
            true => ScopeIndex::Complete(names),
            false => ScopeIndex::Unknown,
        };
        Ok(DefaultBook { versions, index })
    }

    async fn put_version(&self, version: &PriceVersion, _now: DateTime<Utc>) -> Result<PutVersion> {
        if let PriceScope::Customer(c) = &version.scope {
            self.state().price_index.0.insert(c.clone());
        }
        Ok(self.put_version_unindexed(version))
    }

    async fn build_index(&self) -> Result<BTreeSet<String>> {
        let mut state = self.state();
        let found: BTreeSet<String> = state
            .prices
            .keys()
            .filter_map(|(scope, _)| match scope {
                PriceScope::Customer(c) => Some(c.clone()),
                PriceScope::Default => None,
            })
            .collect();
        state.price_index.0.extend(found.iter().cloned());
        state.price_index.1 = true;
        Ok(found)
    }
}
