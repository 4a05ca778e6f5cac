//! Walking a time range of Langfuse usage page by page (ingest's scan).

use crate::domain::ingest::{ListedUsage, PendingScan};
use std::time::Duration;

/// One trace found by a scan page (aggregated over the page's rows for that trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTrace {
    /// The trace id.
    pub trace_id: String,
    /// The usage seen.
    pub seen: ListedUsage,
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
