//! Contract checks of the claim transaction: entries, versions, the budget counter and its
//! hard limit.

use super::{batch, claim, claim_all, counted, entry, next_claim, now, totals, usage};
use crate::domain::claim::{ClaimResult, Expect};
use crate::domain::ledger::LedgerState;
use crate::ports::Ledger;
use chrono::Duration;

/// A first claim writes the entry (claimed, version 1, nothing settled yet, the pending
/// revision with its own claim time, not the transaction's) and adds its credits to the
/// counter; claiming it again as absent is refused and counts nothing twice.
pub async fn first_claim_writes_the_entry_and_counts_the_budget(ledger: &dyn Ledger) {
    let t = now();
    let mut c = claim("k1-t", "cus_k1", Expect::Absent, 100, 0, t);
    c.pending.claimed_at = t - Duration::seconds(5);
    let result = claim_all(ledger, "cus_k1", None, vec![c.clone()], t).await;
    assert_eq!(result, ClaimResult::Claimed);

    let e = entry(ledger, "k1-t").await;
    assert_eq!(totals(&e), (LedgerState::Claimed, 1, 0, 0, 0, 0));
    assert_eq!(e.customer_id.as_deref(), Some("cus_k1"));
    assert_eq!(
        e.pending.as_ref(),
        Some(&c.pending),
        "the claim's own time is kept"
    );
    assert_eq!((e.reason, e.receipted), (None, None));
    assert_eq!(
        e.price_version, c.price_version,
        "the claim records its price version"
    );
    assert_eq!(counted(ledger, "cus_k1").await, (100, 0));
    assert!(!usage(ledger, "cus_k1").await.exceeded);

    let again = claim_all(ledger, "cus_k1", None, vec![c], t).await;
    assert_eq!(again, ClaimResult::LedgerChanged(vec![0]));
    assert_eq!(counted(ledger, "cus_k1").await, (100, 0), "no double count");
    assert_eq!(entry(ledger, "k1-t").await.version, 1);
}

/// A batch with stale expectations (an old version, an entry that now exists) is refused
/// whole: every stale index is named, no entry is written, the counter is untouched.
pub async fn a_stale_claim_is_refused_and_writes_nothing(ledger: &dyn Ledger) {
    let t = now();
    let seed = vec![
        claim("k2-a", "cus_k2", Expect::Absent, 10, 0, t),
        claim("k2-b", "cus_k2", Expect::Absent, 10, 0, t),
        claim("k2-c", "cus_k2", Expect::Absent, 10, 0, t),
    ];
    assert_eq!(
        claim_all(ledger, "cus_k2", None, seed.clone(), t).await,
        ClaimResult::Claimed
    );
    for c in &seed {
        let marked = ledger.mark_metered(&c.trace_id, &c.pending, t).await;
        assert!(marked.expect("mark_metered"));
    }
    let (a, b) = (entry(ledger, "k2-a").await, entry(ledger, "k2-b").await);
    assert_eq!((a.version, b.version), (2, 2));
    let mut stale = next_claim(&a, 5, 0, t);
    stale.expect = Expect::Version(1);
    let claims = vec![
        claim("k2-new", "cus_k2", Expect::Absent, 5, 0, t),
        stale,
        next_claim(&b, 5, 0, t),
        claim("k2-c", "cus_k2", Expect::Absent, 5, 0, t),
    ];
    let result = claim_all(ledger, "cus_k2", None, claims, t).await;
    assert_eq!(result, ClaimResult::LedgerChanged(vec![1, 3]));
    assert_eq!(ledger.entry("k2-new").await.expect("entry"), None);
    assert_eq!(entry(ledger, "k2-b").await, b, "batch-mate untouched");
    assert_eq!(counted(ledger, "cus_k2").await, (30, 0));

    let fresh = vec![
        claim("k2-new", "cus_k2", Expect::Absent, 5, 0, t),
        next_claim(&a, 5, 0, t),
        next_claim(&b, 5, 0, t),
    ];
    let result = claim_all(ledger, "cus_k2", None, fresh, t).await;
    assert_eq!(result, ClaimResult::Claimed);
    assert_eq!(counted(ledger, "cus_k2").await, (45, 0));
}

/// With a hard limit, a claim passes only while `used + billable <= limit`; a refused claim
/// reports the counter's value and writes nothing. Capped-only claims and claims without a
/// hard limit are not held back.
pub async fn the_hard_limit_refuses_a_claim_past_it(ledger: &dyn Ledger) {
    let (t, cus, limit) = (now(), "cus_k3", Some(250));
    let one = |trace: &str, billable: u64, capped: u64| {
        vec![claim(trace, cus, Expect::Absent, billable, capped, t)]
    };
    assert_eq!(
        claim_all(ledger, cus, limit, one("k3-a", 200, 0), t).await,
        ClaimResult::Claimed
    );
    let over = claim_all(ledger, cus, limit, one("k3-b", 100, 0), t).await;
    assert_eq!(over, ClaimResult::OverBudget { used: 200 });
    assert_eq!(ledger.entry("k3-b").await.expect("entry"), None);
    assert_eq!(counted(ledger, cus).await, (200, 0));
    let exact = claim_all(ledger, cus, limit, one("k3-b", 50, 0), t).await;
    assert_eq!(exact, ClaimResult::Claimed, "up to the limit itself");
    assert_eq!(
        claim_all(ledger, cus, limit, one("k3-c", 1, 0), t).await,
        ClaimResult::OverBudget { used: 250 }
    );
    let capped = claim_all(ledger, cus, limit, one("k3-c", 0, 1), t).await;
    assert_eq!(
        capped,
        ClaimResult::Claimed,
        "capped credits pass the limit"
    );
    let soft = claim_all(ledger, cus, None, one("k3-d", 100, 0), t).await;
    assert_eq!(soft, ClaimResult::Claimed, "no hard limit, no condition");
    assert_eq!(counted(ledger, cus).await, (350, 1));
}

/// A batch adds the sum of its claims to the counter in one step, and the hard limit applies
/// to that sum: a batch whose sum does not fit is refused whole, even when each claim alone
/// would fit.
pub async fn a_batch_is_counted_as_one_sum(ledger: &dyn Ledger) {
    let t = now();
    let of = |cus: &str, claims: &[(&str, u64)]| -> Vec<_> {
        claims
            .iter()
            .map(|(trace, billable)| claim(trace, cus, Expect::Absent, *billable, 0, t))
            .collect()
    };
    let three = of("cus_k4", &[("k4-0", 100), ("k4-1", 100), ("k4-2", 100)]);
    let full = claim_all(ledger, "cus_k4", Some(300), three, t).await;
    assert_eq!(full, ClaimResult::Claimed);
    assert_eq!(counted(ledger, "cus_k4").await, (300, 0));
    for i in 0..3 {
        let e = entry(ledger, &format!("k4-{i}")).await;
        assert_eq!(e.state, LedgerState::Claimed);
    }

    let (cus, limit) = ("cus_k4b", Some(299));
    let two = of(cus, &[("k4b-0", 100), ("k4b-1", 100)]);
    assert_eq!(
        claim_all(ledger, cus, limit, two, t).await,
        ClaimResult::Claimed
    );
    let over = of(cus, &[("k4b-2", 50), ("k4b-3", 50)]);
    let result = claim_all(ledger, cus, limit, over, t).await;
    assert_eq!(result, ClaimResult::OverBudget { used: 200 });
    for trace in ["k4b-2", "k4b-3"] {
        let e = ledger.entry(trace).await.expect("entry");
        assert_eq!(e, None, "nothing of a refused batch is written");
    }
    let fits = of(cus, &[("k4b-2", 50), ("k4b-3", 49)]);
    assert_eq!(
        claim_all(ledger, cus, limit, fits, t).await,
        ClaimResult::Claimed
    );
    let one_more = of(cus, &[("k4b-4", 1)]);
    assert_eq!(
        claim_all(ledger, cus, limit, one_more, t).await,
        ClaimResult::OverBudget { used: 299 }
    );
    assert_eq!(counted(ledger, cus).await, (299, 0));
}

/// A revision with nothing to send is committed at once: capped (counted as capped, the
/// exceeded flag set) or free (metered, no counter written); the next revision builds on it.
pub async fn nothing_billable_commits_at_once(ledger: &dyn Ledger) {
    let t = now();
    let capped = vec![claim("k5-capped", "cus_k5", Expect::Absent, 0, 40, t)];
    assert_eq!(
        claim_all(ledger, "cus_k5", Some(10), capped, t).await,
        ClaimResult::Claimed
    );
    let e = entry(ledger, "k5-capped").await;
    assert_eq!(totals(&e), (LedgerState::Capped, 1, 1, 40, 0, 40));
    assert_eq!(e.pending, None);
    let u = usage(ledger, "cus_k5").await;
    assert_eq!((u.used, u.capped, u.exceeded), (0, 40, true));

    let free = vec![claim("k5-free", "cus_k5b", Expect::Absent, 0, 0, t)];
    assert_eq!(
        claim_all(ledger, "cus_k5b", None, free, t).await,
        ClaimResult::Claimed
    );
    let f = entry(ledger, "k5-free").await;
    assert_eq!(totals(&f), (LedgerState::Metered, 1, 1, 0, 0, 0));
    assert_eq!(usage(ledger, "cus_k5b").await, Default::default());

    let next = vec![next_claim(&e, 30, 0, t)];
    assert_eq!(
        claim_all(ledger, "cus_k5", None, next, t).await,
        ClaimResult::Claimed
    );
    let e = entry(ledger, "k5-capped").await;
    assert_eq!(totals(&e), (LedgerState::Claimed, 2, 1, 40, 0, 40));
    assert_eq!(
        e.pending.map(|p| (p.revision, p.total_after)),
        Some((2, 70))
    );
    assert_eq!(counted(ledger, "cus_k5").await, (30, 40));
}

/// Refused before any write: more than 99 claims, one trace twice, more billable credits
/// than the hard limit itself. An empty batch is a claim of nothing.
pub async fn invalid_batches_are_errors(ledger: &dyn Ledger) {
    let t = now();
    let empty = claim_all(ledger, "cus_k6", None, Vec::new(), t).await;
    assert_eq!(empty, ClaimResult::Claimed);
    let many: Vec<_> = (0..100)
        .map(|i| claim(&format!("k6-{i}"), "cus_k6", Expect::Absent, 1, 0, t))
        .collect();
    let result = ledger.claim_batch(&batch("cus_k6", None, many, t)).await;
    assert!(result.is_err(), "100 claims: {result:?}");
    let twice = vec![
        claim("k6-twice", "cus_k6", Expect::Absent, 1, 0, t),
        claim("k6-twice", "cus_k6", Expect::Absent, 2, 0, t),
    ];
    let result = ledger.claim_batch(&batch("cus_k6", None, twice, t)).await;
    assert!(result.is_err(), "one trace twice: {result:?}");
    let huge = vec![claim("k6-huge", "cus_k6", Expect::Absent, 101, 0, t)];
    let result = ledger
        .claim_batch(&batch("cus_k6", Some(100), huge, t))
        .await;
    assert!(result.is_err(), "over the limit itself: {result:?}");
    for trace in ["k6-0", "k6-twice", "k6-huge"] {
        assert_eq!(ledger.entry(trace).await.expect("entry"), None, "{trace}");
    }
    assert_eq!(counted(ledger, "cus_k6").await, (0, 0));
}

/// Twenty single-claim batches at once against a limit that fits ten: exactly ten pass, and
/// the counter holds exactly their sum (no increment lost, none counted twice).
pub async fn concurrent_claims_never_lose_an_increment(ledger: &dyn Ledger) {
    let t = now();
    let attempts = (0..20).map(|i| async move {
        let c = claim(&format!("k7-{i:02}"), "cus_k7", Expect::Absent, 100, 0, t);
        loop {
            match claim_all(ledger, "cus_k7", Some(1_000), vec![c.clone()], t).await {
                ClaimResult::Conflict => tokio::task::yield_now().await,
                other => return other,
            }
        }
    });
    let results = futures::future::join_all(attempts).await;
    let claimed = results
        .iter()
        .filter(|r| **r == ClaimResult::Claimed)
        .count();
    assert_eq!(claimed, 10, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, ClaimResult::Claimed | ClaimResult::OverBudget { .. })),
        "{results:?}"
    );
    assert_eq!(counted(ledger, "cus_k7").await, (1_000, 0));
    let mut entries = 0;
    for i in 0..20 {
        entries += usize::from(
            ledger
                .entry(&format!("k7-{i:02}"))
                .await
                .expect("entry")
                .is_some(),
        );
    }
    assert_eq!(entries, 10, "an entry for each claim that passed");
}

/// `note_seen` moves an entry's newest observation time forward (in whole milliseconds) at
/// the version read only, never back, and bumps the version; it creates nothing.
pub async fn note_seen_moves_the_newest_observation_forward_only(ledger: &dyn Ledger) {
    let t = now();
    let c = claim("k20-t", "cus_k20", Expect::Absent, 100, 0, t);
    let result = claim_all(ledger, "cus_k20", None, vec![c], t).await;
    assert_eq!(result, ClaimResult::Claimed);
    let v = entry(ledger, "k20-t").await.version;
    let later = t + Duration::microseconds(1_500);
    let note = |version: u64, at| ledger.note_seen("k20-t", version, at);
    assert!(
        !note(v + 1, later).await.expect("note_seen"),
        "another version"
    );
    assert!(note(v, later).await.expect("note_seen"));
    let e = entry(ledger, "k20-t").await;
    let stored = Some(t + Duration::milliseconds(1));
    assert_eq!((e.version, e.last_observation_at), (v + 1, stored));
    assert!(!note(v + 1, t).await.expect("note_seen"), "never back");
    assert!(
        !note(v + 1, later).await.expect("note_seen"),
        "already covered"
    );
    let none = ledger.note_seen("k20-none", 0, t).await.expect("note_seen");
    assert!(!none);
    assert!(ledger.entry("k20-none").await.expect("entry").is_none());
}
