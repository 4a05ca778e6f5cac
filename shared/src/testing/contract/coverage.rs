//! Contract check of what a claim stores for ingest's later coverage check (the newest
//! observation it covers, the usage as seen), read back the way ingest reads it.

use super::{claim, claim_all, entry, next_claim, now};
use crate::adapters::dynamo::DynamoLedger;
use crate::domain::claim::{BilledUsage, ClaimResult, Expect};
use crate::domain::ingest::LedgerCoverage;
use crate::domain::ledger::LedgerState;
use crate::error::Result;
use crate::ports::{IngestStore, Ledger};
use crate::testing::MemoryLedger;
use async_trait::async_trait;
use chrono::Duration;
use rust_decimal::Decimal;

/// Reads a trace's coverage back (each ledger has its own way: DynamoDB through ingest's
/// store on the same table).
#[async_trait]
pub trait CoverageReading: Send + Sync {
    /// What ingest's coverage look-up finds for `trace`.
    async fn read_coverage(&self, trace: &str) -> Result<Option<LedgerCoverage>>;
}

#[async_trait]
impl CoverageReading for MemoryLedger {
    async fn read_coverage(&self, trace: &str) -> Result<Option<LedgerCoverage>> {
        Ok(self.stored(trace).map(|t| LedgerCoverage {
            state: Some(t.state),
            last_observation_at: t.last_observation_at,
            cost_usd: t.seen.as_ref().map(|s| s.cost_usd),
            latency_seconds: t.seen.as_ref().map(|s| s.latency_seconds),
        }))
    }
}

#[async_trait]
impl CoverageReading for DynamoLedger {
    async fn read_coverage(&self, trace: &str) -> Result<Option<LedgerCoverage>> {
        let mut found = self.ingest_store().coverage(&[trace.to_string()]).await?;
        Ok(found.remove(trace))
    }
}

fn seen(cost: &str, latency: &str, observations: u32) -> BilledUsage {
    let d = |s: &str| s.parse::<Decimal>().unwrap_or_default();
    BilledUsage {
        cost_usd: d(cost),
        latency_seconds: d(latency),
        observations,
    }
}

/// A claim stores the newest observation it covers and the usage as seen (cost and latency,
/// normalized); ingest reads them back as the entry's coverage, and so does the entry. The
/// next revision moves them to what it saw; a trace never claimed has no coverage.
pub async fn a_claim_stores_the_coverage_ingest_reads_back(
    ledger: &dyn Ledger,
    read: &dyn CoverageReading,
) {
    let t = now();
    let first_seen = t - Duration::minutes(50);
    let mut c = claim("k30-t", "cus_k30", Expect::Absent, 100, 0, t);
    c.last_observation_at = Some(first_seen);
    c.seen = seen("0.00400", "1.250", 3);
    assert_eq!(
        claim_all(ledger, "cus_k30", None, vec![c.clone()], t).await,
        ClaimResult::Claimed
    );
    let coverage = |state, at, cost: &str, latency: &str| {
        Some(LedgerCoverage {
            state: Some(state),
            last_observation_at: Some(at),
            cost_usd: cost.parse().ok(),
            latency_seconds: latency.parse().ok(),
        })
    };
    let read_back = read.read_coverage("k30-t").await.expect("coverage");
    let want = coverage(LedgerState::Claimed, first_seen, "0.004", "1.25");
    assert_eq!(read_back, want);
    let stored = entry(ledger, "k30-t").await;
    assert_eq!(stored.last_observation_at, Some(first_seen));

    let marked = ledger.mark_metered("k30-t", &c.pending, t).await;
    assert!(marked.expect("mark_metered"));
    let later_seen = t - Duration::minutes(40);
    let mut next = next_claim(&entry(ledger, "k30-t").await, 20, 0, t);
    next.last_observation_at = Some(later_seen);
    next.seen = seen("0.0048", "2", 4);
    assert_eq!(
        claim_all(ledger, "cus_k30", None, vec![next], t).await,
        ClaimResult::Claimed
    );
    let read_back = read.read_coverage("k30-t").await.expect("coverage");
    let want = coverage(LedgerState::Claimed, later_seen, "0.0048", "2");
    assert_eq!(read_back, want, "the next revision's");
    let stored = entry(ledger, "k30-t").await;
    assert_eq!(stored.last_observation_at, Some(later_seen));

    let none = read.read_coverage("k30-never").await.expect("coverage");
    assert_eq!(none, None);
}
