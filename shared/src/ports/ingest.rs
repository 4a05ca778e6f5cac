//! Ingest's own items in the ledger table (lease, cursor) and the ledger look-up that avoids
//! re-sending.

use crate::domain::ingest::{IngestCursor, LedgerCoverage};
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Ingest's own items in the ledger table, and the ledger look-up that avoids re-sending.
#[async_trait]
pub trait IngestStore: Send + Sync {
    /// Takes the lease of `api` for `owner` until `lease_until`, unless another owner holds an
    /// unexpired one. True when taken.
    async fn acquire_lease(
        &self,
        api: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Releases the lease if `owner` still holds it.
    async fn release_lease(&self, api: &str, owner: &str) -> Result<()>;
    /// The cursor (default when none was saved).
    async fn load_cursor(&self, api: &str) -> Result<IngestCursor>;
    /// Saves the cursor.
    async fn save_cursor(&self, api: &str, cursor: &IngestCursor, now: DateTime<Utc>)
    -> Result<()>;
    /// The ledger coverage of each trace that has an entry (`BatchGetItem`, 100 keys a call).
    async fn coverage(&self, trace_ids: &[String]) -> Result<HashMap<String, LedgerCoverage>>;
}
