//! Contract checks of settling claims: leases, marks, receipts, failures, ambiguity.

use super::{LEASE, claim, claim_all, counted, entry, next_claim, now, totals};
use crate::domain::claim::{ClaimResult, Expect, FailureKey};
use crate::domain::ledger::{LedgerEntry, LedgerState, PendingClaim};
use crate::domain::meter::identifier;
use crate::error::FailureReason;
use crate::ports::Ledger;
use chrono::{DateTime, Duration, Utc};

/// Claims `trace`'s first revision for `customer` (leased until `t + LEASE`); its pending claim.
async fn claimed(
    ledger: &dyn Ledger,
    trace: &str,
    customer: &str,
    billable: u64,
    capped: u64,
    t: DateTime<Utc>,
) -> PendingClaim {
    let c = claim(trace, customer, Expect::Absent, billable, capped, t);
    let result = claim_all(ledger, customer, None, vec![c.clone()], t).await;
    assert_eq!(result, ClaimResult::Claimed, "{trace}");
    c.pending
}

async fn missing(ledger: &dyn Ledger, trace: &str) -> bool {
    ledger.entry(trace).await.expect("entry").is_none()
}

/// `take_over` succeeds only on the claimed revision once its lease has run out (the lease
/// end itself counts as run out), moves the lease and bumps the version.
pub async fn take_over_only_after_the_lease_expired(ledger: &dyn Ledger) {
    let t = now();
    let p = claimed(ledger, "k8-t", "cus_k8", 100, 0, t).await;
    let (end, later) = (t + LEASE, t + LEASE * 2);
    let other = PendingClaim {
        revision: 2,
        ..p.clone()
    };
    let take = |q: &PendingClaim, at: DateTime<Utc>| {
        let q = q.clone();
        async move { ledger.take_over("k8-t", &q, at, later).await }
    };
    assert!(
        !take(&p, t).await.expect("take_over"),
        "lease still running"
    );
    assert!(
        !take(&other, end).await.expect("take_over"),
        "another revision"
    );
    let unknown = ledger.take_over("k8-none", &p, end, later).await;
    assert!(!unknown.expect("take_over"));
    assert!(
        missing(ledger, "k8-none").await,
        "a failed condition writes nothing"
    );
    assert!(take(&p, end).await.expect("take_over"), "at the lease end");
    let e = entry(ledger, "k8-t").await;
    assert_eq!((e.state, e.version), (LedgerState::Claimed, 2));
    let expected = PendingClaim {
        lease_until: later,
        ..p.clone()
    };
    assert_eq!(e.pending, Some(expected));
    assert!(
        !take(&p, end).await.expect("take_over"),
        "the new lease runs"
    );
    assert!(ledger.mark_metered("k8-t", &p, t).await.expect("mark"));
    assert!(
        !take(&p, later).await.expect("take_over"),
        "not when metered"
    );
}

/// `release` ends the claimed revision's lease now (a retry may take it over at once); on
/// another revision or an unknown trace it changes nothing and is no error.
pub async fn release_ends_the_lease(ledger: &dyn Ledger) {
    let t = now();
    let p = claimed(ledger, "k9-t", "cus_k9", 100, 0, t).await;
    ledger.release("k9-t", 2, t).await.expect("release");
    assert_eq!(entry(ledger, "k9-t").await.version, 1, "other revision");
    ledger.release("k9-none", 1, t).await.expect("release");
    assert!(missing(ledger, "k9-none").await);
    ledger.release("k9-t", 1, t).await.expect("release");
    let e = entry(ledger, "k9-t").await;
    assert_eq!(e.version, 2);
    assert_eq!(e.pending.as_ref().map(|p| p.lease_until), Some(t));
    let taken = ledger.take_over("k9-t", &p, t, t + LEASE).await;
    assert!(taken.expect("take_over"), "taken over at once");
}

/// `mark_metered` settles the claimed revision exactly once, folding it into the totals;
/// on an unknown trace, another revision or a settled entry it is false and writes nothing.
pub async fn mark_metered_only_when_claimed(ledger: &dyn Ledger) {
    let t = now();
    let p = claimed(ledger, "k10-t", "cus_k10", 100, 10, t).await;
    let none = ledger.mark_metered("k10-none", &p, t).await;
    assert!(!none.expect("mark_metered"));
    assert!(missing(ledger, "k10-none").await);
    let other = PendingClaim {
        revision: 2,
        ..p.clone()
    };
    assert!(!ledger.mark_metered("k10-t", &other, t).await.expect("mark"));
    assert!(ledger.mark_metered("k10-t", &p, t).await.expect("mark"));
    let e = entry(ledger, "k10-t").await;
    assert_eq!(totals(&e), (LedgerState::Metered, 2, 1, 110, 100, 10));
    assert_eq!((&e.pending, &e.receipted), (&None, &None));
    assert!(!ledger.mark_metered("k10-t", &p, t).await.expect("mark"));
    let again = entry(ledger, "k10-t").await;
    assert_eq!(totals(&again), totals(&e), "no double count");
    assert_eq!(counted(ledger, "cus_k10").await, (100, 10));
}

/// A receipt that lists a claim's identifier makes its entry read delivered (folded, version
/// unchanged, the identifier in `receipted`); other receipts or identifiers do not. The next
/// claim of the trace folds the delivery into the item.
pub async fn a_receipt_makes_the_entry_read_delivered(ledger: &dyn Ledger) {
    let t = now();
    let mut claims: Vec<_> = ["k11-a", "k11-b", "k11-c"]
        .iter()
        .map(|trace| claim(trace, "cus_k11", Expect::Absent, 100, 0, t))
        .collect();
    claims[0].pending.receipt = Some("rcpt-k11".into());
    claims[1].pending.receipt = Some("rcpt-k11".into());
    assert_eq!(
        claim_all(ledger, "cus_k11", None, claims, t).await,
        ClaimResult::Claimed
    );
    let deliver = |receipt: &'static str, ids: Vec<String>| async move {
        ledger
            .record_delivered(receipt, &ids, t)
            .await
            .expect("record_delivered");
    };
    deliver("rcpt-k11", Vec::new()).await;
    deliver("rcpt-other", vec![identifier("k11-b", 1)]).await;
    deliver(
        "rcpt-k11",
        vec![identifier("k11-a", 1), identifier("k11-c", 1)],
    )
    .await;

    let a = entry(ledger, "k11-a").await;
    assert_eq!(totals(&a), (LedgerState::Metered, 1, 1, 100, 100, 0));
    assert_eq!(
        (a.pending.clone(), a.receipted.clone()),
        (None, Some(identifier("k11-a", 1)))
    );
    assert_eq!(a.customer_id.as_deref(), Some("cus_k11"));
    for trace in ["k11-b", "k11-c"] {
        let e = entry(ledger, trace).await;
        assert_eq!(e.state, LedgerState::Claimed, "{trace}: not in its receipt");
    }

    let next = vec![next_claim(&a, 50, 0, t)];
    assert_eq!(
        claim_all(ledger, "cus_k11", None, next.clone(), t).await,
        ClaimResult::Claimed
    );
    let folded = entry(ledger, "k11-a").await;
    assert_eq!(totals(&folded), (LedgerState::Claimed, 2, 1, 100, 100, 0));
    assert_eq!(folded.receipted, None);
    let p2 = next[0].pending.clone();
    assert!(ledger.mark_metered("k11-a", &p2, t).await.expect("mark"));
    let done = entry(ledger, "k11-a").await;
    assert_eq!(totals(&done), (LedgerState::Metered, 3, 2, 150, 150, 0));
    assert_eq!(counted(ledger, "cus_k11").await, (350, 0));
}

/// `fail_claim` records the failure and gives the claim's credits back in one step, exactly
/// once; on a settled entry it does nothing.
pub async fn fail_claim_gives_the_budget_back_once(ledger: &dyn Ledger) {
    let t = now();
    let p = claimed(ledger, "k12-t", "cus_k12", 100, 5, t).await;
    let done = claimed(ledger, "k12-done", "cus_k12", 30, 0, t).await;
    assert!(
        ledger
            .mark_metered("k12-done", &done, t)
            .await
            .expect("mark")
    );
    assert_eq!(counted(ledger, "cus_k12").await, (130, 5));
    let reason = FailureReason::StripeRejected;
    let fail = |trace: &'static str, p: PendingClaim| async move {
        ledger
            .fail_claim(trace, &p, reason, "400: no such customer", t)
            .await
            .expect("fail_claim")
    };
    assert!(fail("k12-t", p.clone()).await);
    let e = entry(ledger, "k12-t").await;
    assert_eq!(totals(&e), (LedgerState::Failed, 2, 0, 0, 0, 0));
    assert_eq!(e.reason.as_deref(), Some("stripe_rejected"));
    assert_eq!(e.detail.as_deref(), Some("400: no such customer"));
    assert_eq!(e.pending, None);
    assert_eq!(counted(ledger, "cus_k12").await, (30, 0));
    assert!(!fail("k12-t", p).await, "once");
    assert!(!fail("k12-done", done).await, "not when metered");
    assert_eq!(counted(ledger, "cus_k12").await, (30, 0), "given back once");
    assert_eq!(entry(ledger, "k12-t").await.version, 2);
}

/// `mark_ambiguous` parks the claimed revision for an operator: the pending claim is kept,
/// the reason says why, and nothing settles it any more.
pub async fn mark_ambiguous_keeps_the_pending_revision(ledger: &dyn Ledger) {
    let t = now();
    let p = claimed(ledger, "k13-t", "cus_k13", 100, 0, t).await;
    let other = PendingClaim {
        revision: 2,
        ..p.clone()
    };
    let mark = |trace: &'static str, q: &PendingClaim| {
        let q = q.clone();
        async move { ledger.mark_ambiguous(trace, &q, t).await }
    };
    assert!(!mark("k13-t", &other).await.expect("mark_ambiguous"));
    assert!(!mark("k13-none", &p).await.expect("mark_ambiguous"));
    assert!(missing(ledger, "k13-none").await);
    assert!(mark("k13-t", &p).await.expect("mark_ambiguous"));
    let e: LedgerEntry = entry(ledger, "k13-t").await;
    assert_eq!((e.state, e.version), (LedgerState::Ambiguous, 2));
    assert_eq!(e.pending.as_ref(), Some(&p));
    assert_eq!(
        e.reason.as_deref(),
        Some("claim_outlived_stripe_dedup_window")
    );
    assert!(!mark("k13-t", &p).await.expect("mark_ambiguous"));
    let later = t + Duration::days(2);
    assert!(
        !ledger
            .take_over("k13-t", &p, later, later)
            .await
            .expect("take")
    );
    assert!(!ledger.mark_metered("k13-t", &p, t).await.expect("mark"));
    let failed = ledger.fail_claim("k13-t", &p, FailureReason::StripeRejected, "x", t);
    assert!(!failed.await.expect("fail_claim"));
    assert_eq!(entry(ledger, "k13-t").await.version, 2);
    assert_eq!(counted(ledger, "cus_k13").await, (100, 0));
}

/// `record_failure` on a trace creates a failed entry or keeps an existing entry's state,
/// always writing the reason and a new version (so a claim read before it is refused); the
/// detail is truncated. A message failure is no trace entry.
pub async fn record_failure_keeps_a_state_and_bumps_the_version(ledger: &dyn Ledger) {
    let t = now();
    let record = |trace: &'static str, reason: FailureReason, detail: String| async move {
        let key = FailureKey::Trace(trace.to_string());
        ledger
            .record_failure(&key, reason, &detail, t)
            .await
            .expect("record_failure");
    };
    record("k14-t", FailureReason::TraceNotFound, "not found".into()).await;
    let e = entry(ledger, "k14-t").await;
    assert_eq!(totals(&e), (LedgerState::Failed, 1, 0, 0, 0, 0));
    assert_eq!(e.reason.as_deref(), Some("trace_not_found"));
    record("k14-t", FailureReason::UsageTooOld, "x".repeat(3000)).await;
    let e = entry(ledger, "k14-t").await;
    assert_eq!((e.state, e.version), (LedgerState::Failed, 2));
    assert_eq!(e.reason.as_deref(), Some("usage_too_old"));
    assert_eq!(
        e.detail.as_deref(),
        Some(format!("{}…", "x".repeat(1000)).as_str())
    );

    let absent = vec![claim("k14-t", "cus_k14", Expect::Absent, 10, 0, t)];
    let result = claim_all(ledger, "cus_k14", None, absent, t).await;
    assert_eq!(result, ClaimResult::LedgerChanged(vec![0]), "it exists");
    let mut c = next_claim(&e, 10, 0, t);
    c.pending.customer_id = "cus_k14".into();
    let result = claim_all(ledger, "cus_k14", None, vec![c.clone()], t).await;
    assert_eq!(result, ClaimResult::Claimed, "claimable at its version");
    let claimed = entry(ledger, "k14-t").await;
    assert_eq!((claimed.reason, claimed.detail), (None, None));
    assert!(
        ledger
            .mark_metered("k14-t", &c.pending, t)
            .await
            .expect("mark")
    );
    let metered = entry(ledger, "k14-t").await;

    record(
        "k14-t",
        FailureReason::InvalidUsage,
        "later revision".into(),
    )
    .await;
    let e = entry(ledger, "k14-t").await;
    assert_eq!(
        (e.state, e.version),
        (LedgerState::Metered, metered.version + 1)
    );
    assert_eq!(e.reason.as_deref(), Some("invalid_usage"));
    let stale = vec![next_claim(&metered, 5, 0, t)];
    let result = claim_all(ledger, "cus_k14", None, stale, t).await;
    assert_eq!(result, ClaimResult::LedgerChanged(vec![0]));

    let message = FailureKey::Message {
        message_id: "k14-msg".into(),
        body: "not json".into(),
    };
    let reason = FailureReason::MalformedMessage;
    ledger
        .record_failure(&message, reason, "bad", t)
        .await
        .expect("record_failure");
    assert!(missing(ledger, "k14-msg").await);
}
