//! The ledger contract: what every [`Ledger`] must do, checked the same way on the in-memory
//! ledger (`cargo test -p tracemeter --features testing`) and on the DynamoDB ledger against
//! moto (`tests/tests/it/contract.rs`).
//!
//! Each check is a `pub async fn` that takes a ledger (fresh, or at least without the
//! traces and customers the check names: every check uses its own) and panics when the
//! ledger breaks the contract. [`ledger_contract_tests!`](crate::ledger_contract_tests)
//! turns the whole list into one `#[tokio::test]` per check for a given ledger factory.

mod admin;
mod budgets;
mod claims;
mod coverage;
mod events;
mod prices;
pub mod quota;
mod receipts;
mod rejections;
mod settle;

pub use admin::{
    ambiguous_claims_settle_once, failed_and_ambiguous_entries_are_found,
    operator_items_are_written_and_removed, totals_count_delivered_and_in_flight_credits,
};
pub use budgets::{
    alerts_are_recorded_once, policies_and_mappings_read_as_seeded, set_exceeded_raises_the_flag,
};
pub use claims::{
    a_batch_is_counted_as_one_sum, a_stale_claim_is_refused_and_writes_nothing,
    concurrent_claims_never_lose_an_increment, first_claim_writes_the_entry_and_counts_the_budget,
    invalid_batches_are_errors, note_seen_moves_the_newest_observation_forward_only,
    nothing_billable_commits_at_once, the_hard_limit_refuses_a_claim_past_it,
};
pub use coverage::{CoverageReading, a_claim_stores_the_coverage_ingest_reads_back};
pub use events::{
    a_soft_or_unlimited_budget_clears_the_flag, budget_event,
    budget_events_are_recorded_once_per_key, clearing_the_flag_records_its_event_once,
};
pub use prices::{
    concurrent_price_sets_store_one_version, price_versions_are_written_once_and_read_in_order,
    the_price_index_names_every_customer_with_versions,
};
pub use receipts::{entries_read_a_batch_as_entry_reads_each, settling_a_claim_sees_its_receipt};
pub use rejections::stripe_rejections_give_the_budget_back_once;
pub use settle::{
    a_receipt_makes_the_entry_read_delivered, fail_claim_gives_the_budget_back_once,
    mark_ambiguous_keeps_the_pending_revision, mark_metered_only_when_claimed,
    record_failure_keeps_a_state_and_bumps_the_version, release_ends_the_lease,
    take_over_only_after_the_lease_expired,
};

use crate::adapters::dynamo::DynamoLedger;
use crate::domain::budget::{BudgetPolicy, BudgetUsage};
use crate::domain::claim::{BilledUsage, Claim, ClaimBatch, ClaimResult, Expect, Settled};
use crate::domain::ledger::{LedgerEntry, PendingClaim};
use crate::domain::meter::identifier;
use crate::domain::price_book::PriceVersion;
use crate::error::Result;
use crate::ports::Ledger;
use crate::testing::MemoryLedger;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

/// Writes the operator's items a check needs (each ledger has its own way).
#[async_trait]
pub trait Seeding: Send + Sync {
    /// A customer's budget policy.
    async fn seed_budget_policy(&self, customer: &str, policy: &BudgetPolicy) -> Result<()>;
    /// A Langfuse user id mapped to a Stripe customer.
    async fn seed_user_mapping(&self, user_id: &str, customer: &str) -> Result<()>;
    /// A price version stored as a release before the price book's index did: not indexed.
    async fn seed_unindexed_price(&self, version: &PriceVersion) -> Result<()>;
}

#[async_trait]
impl Seeding for MemoryLedger {
    async fn seed_budget_policy(&self, customer: &str, policy: &BudgetPolicy) -> Result<()> {
        self.put_budget_policy(customer, policy);
        Ok(())
    }

    async fn seed_user_mapping(&self, user_id: &str, customer: &str) -> Result<()> {
        self.put_user_mapping(user_id, customer);
        Ok(())
    }

    async fn seed_unindexed_price(&self, version: &PriceVersion) -> Result<()> {
        self.put_version_unindexed(version);
        Ok(())
    }
}

#[async_trait]
impl Seeding for DynamoLedger {
    async fn seed_budget_policy(&self, customer: &str, policy: &BudgetPolicy) -> Result<()> {
        self.put_budget_policy(customer, policy).await
    }

    async fn seed_user_mapping(&self, user_id: &str, customer: &str) -> Result<()> {
        self.put_user_mapping(user_id, customer).await
    }

    async fn seed_unindexed_price(&self, version: &PriceVersion) -> Result<()> {
        self.put_version_unindexed(version, now()).await
    }
}

/// One `#[tokio::test]` per contract check, each on a ledger from `$fresh`: a closure taking
/// the check's name (`&'static str`) and returning a future of something that dereferences
/// to the ledger (which must also implement [`Seeding`] and [`CoverageReading`]).
///
/// ```ignore
/// tracemeter::ledger_contract_tests!(|_name: &'static str| async {
///     Box::new(tracemeter::testing::MemoryLedger::new())
/// });
/// ```
#[macro_export]
macro_rules! ledger_contract_tests {
    ($fresh:expr) => {
        $crate::ledger_contract_tests!(@plain $fresh;
            first_claim_writes_the_entry_and_counts_the_budget,
            a_stale_claim_is_refused_and_writes_nothing,
            the_hard_limit_refuses_a_claim_past_it,
            a_batch_is_counted_as_one_sum,
            nothing_billable_commits_at_once,
            invalid_batches_are_errors,
            concurrent_claims_never_lose_an_increment,
            note_seen_moves_the_newest_observation_forward_only,
            take_over_only_after_the_lease_expired,
            release_ends_the_lease,
            mark_metered_only_when_claimed,
            a_receipt_makes_the_entry_read_delivered,
            fail_claim_gives_the_budget_back_once,
            mark_ambiguous_keeps_the_pending_revision,
            record_failure_keeps_a_state_and_bumps_the_version,
            alerts_are_recorded_once,
            set_exceeded_raises_the_flag,
            budget_events_are_recorded_once_per_key,
            clearing_the_flag_records_its_event_once,
            a_soft_or_unlimited_budget_clears_the_flag,
            failed_and_ambiguous_entries_are_found,
            ambiguous_claims_settle_once,
            operator_items_are_written_and_removed,
            totals_count_delivered_and_in_flight_credits,
            stripe_rejections_give_the_budget_back_once,
            settling_a_claim_sees_its_receipt,
            entries_read_a_batch_as_entry_reads_each,
            price_versions_are_written_once_and_read_in_order,
            concurrent_price_sets_store_one_version,
        );
        $crate::ledger_contract_tests!(@seeded $fresh;
            policies_and_mappings_read_as_seeded,
            a_claim_stores_the_coverage_ingest_reads_back,
            the_price_index_names_every_customer_with_versions,
        );
    };
    (@plain $fresh:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let ledger = ($fresh)(stringify!($check)).await;
            $crate::testing::contract::$check(&*ledger).await;
        }
    )*};
    (@seeded $fresh:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let ledger = ($fresh)(stringify!($check)).await;
            $crate::testing::contract::$check(&*ledger, &*ledger).await;
        }
    )*};
}

/// The budget period every check claims in.
pub const PERIOD: &str = "2030-01";
/// How long a fresh claim is leased.
pub const LEASE: Duration = Duration::seconds(60);

/// Now, to the millisecond (what the table keeps).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now)
}

/// The first revision of `trace` for `customer`: `billable` credits to send, `capped` over the
/// limit, leased until `now + LEASE`, no receipt.
pub fn claim(
    trace: &str,
    customer: &str,
    expect: Expect,
    billable: u64,
    capped: u64,
    now: DateTime<Utc>,
) -> Claim {
    Claim {
        trace_id: trace.to_string(),
        expect,
        settled: Settled::default(),
        pending: PendingClaim {
            revision: 1,
            identifier: identifier(trace, 1),
            customer_id: customer.to_string(),
            billable,
            capped,
            total_after: billable + capped,
            event_timestamp: (now - Duration::hours(1)).timestamp(),
            period: PERIOD.to_string(),
            claimed_at: now,
            lease_until: now + LEASE,
            receipt: None,
        },
        usage_at: now - Duration::hours(1),
        last_observation_at: None,
        seen: BilledUsage::default(),
        price_version: Some(format!("{customer}@2030-01-01T00:00:00.000Z")),
    }
}

/// The next revision of what `entry` covers (read at its version).
pub fn next_claim(entry: &LedgerEntry, billable: u64, capped: u64, now: DateTime<Utc>) -> Claim {
    let customer = entry.customer_id.clone().unwrap_or_default();
    let mut c = claim(
        &entry.trace_id,
        &customer,
        Expect::Version(entry.version),
        0,
        0,
        now,
    );
    let revision = entry.revision + 1;
    c.settled = Settled::of(Some(entry));
    c.pending.revision = revision;
    c.pending.identifier = identifier(&entry.trace_id, revision);
    c.pending.billable = billable;
    c.pending.capped = capped;
    c.pending.total_after = entry.total_credits + billable + capped;
    c
}

/// One customer's batch in [`PERIOD`], with an optional hard limit (also stored as the limit).
pub fn batch(
    customer: &str,
    hard_limit: Option<u64>,
    claims: Vec<Claim>,
    now: DateTime<Utc>,
) -> ClaimBatch {
    ClaimBatch {
        customer_id: customer.to_string(),
        period: PERIOD.to_string(),
        hard_limit,
        limit: hard_limit,
        claims,
        now,
    }
}

/// Claims `claims` as one batch; the result.
async fn claim_all(
    ledger: &dyn Ledger,
    customer: &str,
    hard_limit: Option<u64>,
    claims: Vec<Claim>,
    now: DateTime<Utc>,
) -> ClaimResult {
    ledger
        .claim_batch(&batch(customer, hard_limit, claims, now))
        .await
        .expect("claim_batch")
}

/// The trace's entry, which must exist.
async fn entry(ledger: &dyn Ledger, trace: &str) -> LedgerEntry {
    ledger
        .entry(trace)
        .await
        .expect("entry")
        .unwrap_or_else(|| panic!("no ledger entry for {trace}"))
}

/// The customer's counter in [`PERIOD`].
async fn usage(ledger: &dyn Ledger, customer: &str) -> BudgetUsage {
    ledger
        .budget_usage(customer, PERIOD)
        .await
        .expect("budget_usage")
}

/// `used` and `capped` of the customer's counter.
async fn counted(ledger: &dyn Ledger, customer: &str) -> (u64, u64) {
    let u = usage(ledger, customer).await;
    (u.used, u.capped)
}

/// State, version, revision and the three credit totals of an entry.
fn totals(e: &LedgerEntry) -> (crate::domain::ledger::LedgerState, u64, u32, u64, u64, u64) {
    (
        e.state,
        e.version,
        e.revision,
        e.total_credits,
        e.billed_credits,
        e.capped_credits,
    )
}

#[cfg(test)]
mod tests {
    crate::ledger_contract_tests!(|_name: &'static str| async {
        Box::new(crate::testing::MemoryLedger::new())
    });
}
