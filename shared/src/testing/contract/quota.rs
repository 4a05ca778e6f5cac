//! The request budget's contract, for every [`RequestQuota`]: checked on [`MemoryQuota`]
//! here and on the DynamoDB budget against moto (`tests/tests/it/contract.rs`). Each check
//! takes a fresh budget of [`CONTRACT_LIMIT`] requests per minute.

use crate::domain::quota::{Grant, SLOT_SECONDS};
use crate::ports::RequestQuota;
use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

/// The budget each check's quota must have.
pub const CONTRACT_LIMIT: u32 = 5;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

/// Grants up to the limit within a slot, then asks to wait until the next slot.
pub async fn the_budget_is_never_exceeded(quota: &dyn RequestQuota) {
    for i in 0..CONTRACT_LIMIT {
        let grant = quota.take(t(1)).await.expect("take");
        assert_eq!(grant, Grant::Granted, "request {i} is within the budget");
    }
    match quota.take(t(2)).await.expect("take") {
        Grant::Wait(wait) => assert_eq!(
            wait.as_secs(),
            63,
            "until the slot that holds the budget has left the window (65 s after it began)"
        ),
        Grant::Granted => panic!("a request past the budget was granted"),
    }
    // 60 seconds later the first slot is still within the window (13 slots): nothing yet.
    assert!(matches!(
        quota.take(t(61)).await.expect("take"),
        Grant::Wait(_)
    ));
    // 65 seconds later it has left the window: the whole budget is back.
    for _ in 0..CONTRACT_LIMIT {
        assert_eq!(quota.take(t(65)).await.expect("take"), Grant::Granted);
    }
}

/// Requests in earlier slots of the window count against a later slot.
pub async fn earlier_slots_count(quota: &dyn RequestQuota) {
    for _ in 0..3 {
        assert_eq!(quota.take(t(0)).await.expect("take"), Grant::Granted);
    }
    let later = t(3 * SLOT_SECONDS);
    for _ in 0..2 {
        assert_eq!(quota.take(later).await.expect("take"), Grant::Granted);
    }
    assert!(
        matches!(quota.take(later).await.expect("take"), Grant::Wait(_)),
        "3 + 2 requests within 60 s spend a budget of 5"
    );
}

/// Several requests are taken together, as many as fit and no more; what did not fit
/// waits for the window to move on.
pub async fn several_are_taken_at_once(quota: &dyn RequestQuota) {
    let taken = |at: i64, want: u32| async move {
        let taken = quota.take_up_to(t(at), want).await.expect("take");
        (taken.granted, taken.wait.as_secs())
    };
    assert_eq!(taken(1, 3).await, (3, 0));
    assert_eq!(
        taken(2, 4).await,
        (CONTRACT_LIMIT - 3, 63),
        "the rest of the budget, not what was asked; the rest once the first slot left the window"
    );
    assert_eq!(taken(3, 2).await, (0, 62));
    assert_eq!(
        quota.take(t(3)).await.expect("take"),
        Grant::Wait(Duration::from_secs(62))
    );
    assert_eq!(taken(65, 0).await, (0, 0));
    assert_eq!(
        taken(65, 100).await.0,
        CONTRACT_LIMIT,
        "the first slot left the window: the whole budget is back"
    );
}

/// Many instances asking at once never get more than the budget between them.
pub async fn concurrent_takers_share_one_budget(quotas: &[&dyn RequestQuota]) {
    let takes = quotas
        .iter()
        .cycle()
        .take(CONTRACT_LIMIT as usize * 4)
        .map(|q| q.take(t(5)));
    let grants = futures::future::join_all(takes).await;
    let granted = grants
        .into_iter()
        .filter(|g| matches!(g, Ok(Grant::Granted)))
        .count();
    assert_eq!(
        granted, CONTRACT_LIMIT as usize,
        "exactly the budget, across instances"
    );
    // Several at a time, in the next budget window.
    let takes = quotas
        .iter()
        .cycle()
        .take(quotas.len() * 3)
        .map(|q| q.take_up_to(t(70), 2));
    let granted: u32 = futures::future::join_all(takes)
        .await
        .into_iter()
        .map(|g| g.expect("take").granted)
        .sum();
    assert_eq!(
        granted, CONTRACT_LIMIT,
        "exactly the budget, taken several at a time across instances"
    );
}

/// Instances deferring at once book their messages' returns on one schedule: a bunch holds
/// at most a window's budget of messages, the rest go one window later, and a booking never
/// lands in the window of the bunch before it; none is booked past the latest time.
pub async fn concurrent_bookings_share_one_schedule(quotas: &[&dyn RequestQuota]) {
    use std::collections::BTreeMap;
    let limit = CONTRACT_LIMIT as usize;
    let latest = t(1_000);
    let bookings = quotas
        .iter()
        .map(|q| q.book_returns(t(60), latest, limit - 1, 1.0));
    let mut at: BTreeMap<i64, usize> = BTreeMap::new();
    for booked in futures::future::join_all(bookings).await {
        let booked = booked
            .expect("book")
            .expect("a budget in a table keeps a schedule");
        for r in booked {
            let r = r.expect("within the latest time");
            *at.entry((r - t(0)).num_seconds()).or_default() += 1;
        }
    }
    let n = quotas.len() * (limit - 1);
    let mut expected = BTreeMap::new();
    for k in 0..n {
        *expected.entry(60 + 65 * (k / limit) as i64).or_default() += 1;
    }
    assert_eq!(at, expected, "a window's budget a bunch, one window apart");
    // Asked for later, but within the last bunch's window: the bunch after it.
    let last = *expected.keys().last().expect("booked");
    let next = quotas[0].book_returns(t(last + 10), latest, limit, 1.0);
    let next = next.await.expect("book").expect("a schedule");
    assert!(next.iter().all(|r| *r == Some(t(last + 65))), "{next:?}");
    // Past the latest time: not booked.
    let far = quotas[0].book_returns(t(900), t(950), 2 * limit, 1.0);
    let far = far.await.expect("book").expect("a schedule");
    let booked = far.iter().filter(|r| r.is_some()).count();
    assert_eq!(booked, limit, "{far:?}");
}

// ---------------------------------------------------------------------------------------
// The budget's property, for a property test to drive on a real adapter with arbitrary
// arrival times (`MemoryQuota` in `testing::quota`, `DynamoQuota` in
// `tests/tests/it/contract.rs`).
// ---------------------------------------------------------------------------------------

/// Asks `quota` once at each of `times` (milliseconds after the contract's epoch, in the
/// order given); the times it granted.
pub async fn granted_at(quota: &dyn RequestQuota, times: &[i64]) -> Vec<i64> {
    let mut granted = Vec::new();
    for &ms in times {
        let at = t(0) + chrono::Duration::milliseconds(ms);
        if quota.take(at).await.expect("take") == Grant::Granted {
            granted.push(ms);
        }
    }
    granted
}

/// No 60-second span holds more of the `granted` times (sorted) than `limit`, wherever the
/// span starts (what keeps Langfuse from answering 429); the first span over it otherwise.
pub fn no_minute_holds_more_than(limit: u32, granted: &[i64]) -> Result<(), String> {
    for (i, start) in granted.iter().enumerate() {
        let within = granted[i..]
            .iter()
            .take_while(|t| **t < start + 60_000)
            .count();
        if within > limit as usize {
            return Err(format!(
                "{within} requests granted within 60 s of {start} ms, limit {limit}"
            ));
        }
    }
    Ok(())
}

/// Under steady demand over `span_ms`, at least 12/13 of the nominal rate was granted (less
/// one budget for the first window's edge).
pub fn steady_demand_gets_most_of_the_budget(
    limit: u32,
    span_ms: i64,
    granted: usize,
) -> Result<(), String> {
    let nominal = f64::from(limit) * span_ms as f64 / 60_000.0;
    let floor = nominal * 12.0 / 13.0 - f64::from(limit);
    if (granted as f64) < floor {
        return Err(format!(
            "{granted} of a nominal {nominal} granted, under {floor}"
        ));
    }
    Ok(())
}
