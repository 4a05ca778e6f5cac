//! `PriceBook`: the `PRICE#<scope>` / `FROM#<time>` items, with the conditional put.

use super::{MemoryLedger, ms};
use crate::domain::price_book::{PriceScope, PriceVersion};
use crate::error::Result;
use crate::ports::{PriceBook, PutVersion};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

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

    async fn put_version(&self, version: &PriceVersion, _now: DateTime<Utc>) -> Result<PutVersion> {
        let mut stored = version.clone();
        stored.effective_from = ms(version.effective_from);
        let key = (stored.scope.clone(), stored.effective_from);
        let mut state = self.state();
        Ok(match state.prices.get(&key) {
            Some(existing) if *existing == stored => PutVersion::Unchanged,
            Some(existing) => PutVersion::Conflict(Box::new(existing.clone())),
            None => {
                state.prices.insert(key, stored);
                PutVersion::Written
            }
        })
    }
}
