//! What a run did: its outcome and counters, logged as one summary line (also the Lambda's
//! response), and the progress lines on the way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Instant;
use tracemeter::domain::ingest as rules;
use tracemeter::domain::scan::ScanPage;
use tracemeter::metrics::Metric;
use tracing::info;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The scan range was covered; the watermark moved to its end.
    Completed,
    /// Another run holds the lease: nothing was done.
    LeaseHeld,
    /// Nothing settled to scan yet.
    NothingToScan,
    /// Stopped before the deadline; the position is saved and the next run resumes.
    OutOfTime,
    /// Some entries could not be sent after all tries; reported, and the page is left for
    /// the next run.
    SendFailures,
}

/// The summary of one run (also the Lambda's response).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestSummary {
    /// `v2` or `legacy`.
    pub api: &'static str,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Whether a cut-off fresh range was resumed.
    pub resumed: bool,
    /// The fresh range (new settled usage), if any.
    pub scan_from: Option<DateTime<Utc>>,
    /// End of the fresh range (exclusive).
    pub scan_to: Option<DateTime<Utc>>,
    /// When the run stopped early: where the fresh lane got to (its saved position, or its
    /// end when it was covered and a re-scan range stopped).
    pub position: Option<DateTime<Utc>>,
    /// When the run stopped early: the lane it stopped in (`fresh`, `rescan <age>s`).
    pub stopped_in: Option<String>,
    /// Re-scan tier ranges started by the run.
    pub rescan_ranges: u32,
    /// Traces found per page in re-scan ranges, summed (included in `traces_found`).
    pub rescan_traces_found: u64,
    /// Trace ids enqueued from re-scan ranges: late usage (included in `enqueued`).
    pub rescan_enqueued: u64,
    /// Pages read.
    pub pages: u64,
    /// Langfuse requests made.
    pub requests: u64,
    /// Rows (observations or traces) read.
    pub rows: u64,
    /// Distinct traces found per page, summed.
    pub traces_found: u64,
    /// Trace ids enqueued.
    pub enqueued: u64,
    /// Skipped: the ledger covers the usage seen.
    pub skipped_covered: u64,
    /// Skipped: failed or ambiguous in the ledger (for an operator).
    pub skipped_operator: u64,
    /// Skipped: handled earlier in this run.
    pub skipped_repeat: u64,
    /// Entry sends that were retried.
    pub send_retries: u64,
    /// Entries not sent after all tries (logged with their trace ids).
    pub send_failed: u64,
    /// 429 answers from Langfuse.
    pub rate_limited: u64,
    /// Time spent waiting for the request budget, 429s and retries.
    pub waited_ms: u64,
    /// Run time.
    pub elapsed_ms: u64,
    /// Traces found per second.
    pub traces_per_second: f64,
}

impl IngestSummary {
    /// How far behind the newest billable usage the cursor is at the end of the run: now
    /// minus the position reached (the range's end when it was covered). `None` when the
    /// run scanned nothing (another run holds the lease, or nothing settled yet).
    pub fn lag(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let reached = match self.outcome {
            RunOutcome::Completed => self.scan_to,
            RunOutcome::OutOfTime | RunOutcome::SendFailures => self.position.or(self.scan_from),
            RunOutcome::LeaseHeld | RunOutcome::NothingToScan => None,
        }?;
        Some(now - reached)
    }

    /// The run's CloudWatch metrics (names documented in docs/operating.md).
    pub fn metrics(&self, now: DateTime<Utc>) -> Vec<Metric> {
        let mut m = vec![
            Metric::count("TracesEnqueued", self.enqueued),
            Metric::count("TracesSkippedCovered", self.skipped_covered),
            Metric::count("SendFailed", self.send_failed),
            Metric::count("LangfuseRequests", self.requests),
            Metric::count("Throttled", self.rate_limited).by("Service", "langfuse"),
            Metric::millis("RunDuration", self.elapsed_ms),
        ];
        if let Some(lag) = self.lag(now) {
            m.push(Metric::seconds(
                "IngestLag",
                lag.num_seconds().max(0) as u64,
            ));
        }
        m
    }

    /// An empty summary of a run over `api`.
    pub(crate) fn new(api: &'static str) -> IngestSummary {
        IngestSummary {
            api,
            outcome: RunOutcome::NothingToScan,
            resumed: false,
            scan_from: None,
            scan_to: None,
            position: None,
            stopped_in: None,
            rescan_ranges: 0,
            rescan_traces_found: 0,
            rescan_enqueued: 0,
            pages: 0,
            requests: 0,
            rows: 0,
            traces_found: 0,
            enqueued: 0,
            skipped_covered: 0,
            skipped_operator: 0,
            skipped_repeat: 0,
            send_retries: 0,
            send_failed: 0,
            rate_limited: 0,
            waited_ms: 0,
            elapsed_ms: 0,
            traces_per_second: 0.0,
        }
    }

    /// The summary line.
    pub(crate) fn log(&self) {
        info!(
            summary = true,
            api = self.api,
            outcome = ?self.outcome,
            resumed = self.resumed,
            scan_from = ?self.scan_from,
            scan_to = ?self.scan_to,
            position = ?self.position,
            stopped_in = ?self.stopped_in,
            rescan_ranges = self.rescan_ranges,
            rescan_traces_found = self.rescan_traces_found,
            rescan_enqueued = self.rescan_enqueued,
            pages = self.pages,
            requests = self.requests,
            rows = self.rows,
            traces_found = self.traces_found,
            enqueued = self.enqueued,
            skipped_covered = self.skipped_covered,
            skipped_operator = self.skipped_operator,
            skipped_repeat = self.skipped_repeat,
            send_retries = self.send_retries,
            send_failed = self.send_failed,
            rate_limited = self.rate_limited,
            waited_ms = self.waited_ms,
            elapsed_ms = self.elapsed_ms,
            traces_per_second = self.traces_per_second,
            "ingest run summary"
        );
    }

    /// Counts a page's requests, 429s and waits (also of a page cut short).
    pub(crate) fn count_requests(&mut self, page: &ScanPage) {
        self.requests += u64::from(page.requests);
        self.rate_limited += u64::from(page.rate_limited);
        self.waited_ms += page.waited.as_millis() as u64;
    }

    /// Counts a page read.
    pub(crate) fn count_page(&mut self, page: &ScanPage) {
        self.count_requests(page);
        self.pages += 1;
        self.rows += page.rows as u64;
        self.traces_found += page.traces.len() as u64;
    }

    /// A progress line every `every` pages.
    pub(crate) fn progress(&self, every: u32, position: DateTime<Utc>, started: Instant) {
        if !self.pages.is_multiple_of(u64::from(every.max(1))) {
            return;
        }
        info!(
            api = self.api,
            pages = self.pages,
            requests = self.requests,
            traces_found = self.traces_found,
            enqueued = self.enqueued,
            skipped = self.skipped_covered + self.skipped_operator + self.skipped_repeat,
            position = %position,
            traces_per_second = rules::rate_per_second(self.traces_found, started.elapsed()),
            "ingest progress"
        );
    }

    /// Run time and rate, at the end of a run that held the lease.
    pub(crate) fn finish(&mut self, started: Instant) {
        self.elapsed_ms = started.elapsed().as_millis() as u64;
        self.traces_per_second = rules::rate_per_second(self.traces_found, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, min, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn the_lag_is_measured_from_where_the_run_got_to() {
        let now = at(30);
        let mut s = IngestSummary::new("v2");
        (s.scan_from, s.scan_to, s.position) = (Some(at(0)), Some(at(15)), Some(at(5)));
        s.outcome = RunOutcome::Completed;
        assert_eq!(s.lag(now), Some(Duration::minutes(15)));
        s.outcome = RunOutcome::OutOfTime;
        assert_eq!(s.lag(now), Some(Duration::minutes(25)));
        s.outcome = RunOutcome::LeaseHeld;
        assert_eq!(s.lag(now), None);
        s.outcome = RunOutcome::Completed;
        let lag = s.metrics(now).into_iter().find(|m| m.name == "IngestLag");
        assert_eq!(lag.map(|m| m.value), Some(900));
    }
}
