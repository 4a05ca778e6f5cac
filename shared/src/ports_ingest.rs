//! The traits the ingest handler depends on: listing settled usage from Langfuse, ingest's
//! own DynamoDB items (lease, cursor) with the ledger coverage look-up, and sending to SQS.

use crate::domain::ingest::{IngestCursor, LedgerCoverage, PendingScan, SeenUsage};
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One trace found by a scan page (aggregated over the page's rows for that trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTrace {
    /// The trace id.
    pub trace_id: String,
    /// The usage seen.
    pub seen: SeenUsage,
}

/// Where a walk over one scan range stands. Created by [`Walk::new`]; the lister advances it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The range and the checkpoint position (safe to resume from after each page).
    pub scan: PendingScan,
    /// The API's own continuation token (v2 cursor), valid only within this run.
    pub token: Option<String>,
    /// Legacy keyset paging: ids already seen at exactly `scan.position`.
    pub ids_at_position: Vec<String>,
    /// Legacy: page number within the closed one-millisecond slice at `scan.position`, used
    /// only when more traces share that millisecond than fit in a page.
    pub slice_page: u32,
    /// True when the range is exhausted.
    pub done: bool,
}

impl Walk {
    /// A walk starting at the scan's position.
    pub fn new(scan: PendingScan) -> Walk {
        Walk {
            scan,
            token: None,
            ids_at_position: Vec::new(),
            slice_page: 0,
            done: false,
        }
    }
}

/// A page of a walk.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    /// Traces found on the page, one entry per trace id.
    pub traces: Vec<ListedTrace>,
    /// Rows (observations or traces) on the page.
    pub rows: usize,
    /// HTTP requests made for this page (retries included).
    pub requests: u32,
    /// 429 answers met.
    pub rate_limited: u32,
    /// Time slept for the request budget and for 429s.
    pub waited: Duration,
}

/// The result of asking for the next page.
#[derive(Debug, Clone)]
pub enum PageOutcome {
    /// A page; the walk was advanced past it.
    Page(ScanPage),
    /// The next request could not be made (or waited for) before `until`: the walk is
    /// unchanged.
    OutOfTime {
        /// Requests made and waits, for the counters.
        partial: ScanPage,
    },
}

/// Lists usage from Langfuse in time ranges (either API generation).
#[async_trait]
pub trait TraceLister: Send + Sync {
    /// `v2` or `legacy`: names ingest's items (`INGEST#<api>`).
    fn api(&self) -> &'static str;
    /// The order in which ranges are walked.
    fn direction(&self) -> crate::domain::ingest::Direction;
    /// Fetches the next page of `walk` and advances it, making no request (nor wait) that
    /// cannot finish before `until`.
    async fn next_page(&self, walk: &mut Walk, until: Instant) -> Result<PageOutcome>;
}

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

/// A message for [`QueueSender::send_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Entry id, unique within the batch.
    pub id: String,
    /// Body.
    pub body: String,
}

/// A batch entry that was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The entry id.
    pub id: String,
    /// Error code.
    pub code: String,
    /// Error message.
    pub message: String,
    /// True when the request itself was at fault (retrying will not help).
    pub sender_fault: bool,
}

/// Sends messages to the meter queue.
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// Sends up to 10 messages in one call; returns the entries that failed. An error means
    /// the whole call failed.
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<SendFailure>>;
}
