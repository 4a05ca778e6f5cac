//! Contract check: the writes that settle a claim some other way (taking it over, calling it
//! ambiguous, failing it) see the claim's receipt. A revision delivered through its batch's
//! receipt is billed, even while its entry still reads `claimed`: none of them may act on it.

use super::{LEASE, claim, claim_all, counted, now};
use crate::domain::claim::{ClaimResult, Expect};
use crate::domain::ledger::LedgerState;
use crate::error::FailureReason;
use crate::ports::Ledger;

/// Two claims of one receipt, one delivered through it: take-over, ambiguity and failure are
/// refused on the delivered one (the counter keeps its credits, the entry reads delivered)
/// and still work on the other.
pub async fn settling_a_claim_sees_its_receipt(ledger: &dyn Ledger) {
    let t = now();
    let mut claims: Vec<_> = ["k30-sent", "k30-open"]
        .iter()
        .map(|trace| claim(trace, "cus_k30", Expect::Absent, 100, 0, t))
        .collect();
    for c in &mut claims {
        c.pending.receipt = Some("rcpt-k30".into());
    }
    let (sent, open) = (claims[0].pending.clone(), claims[1].pending.clone());
    let result = claim_all(ledger, "cus_k30", None, claims, t).await;
    assert_eq!(result, ClaimResult::Claimed);
    let ids = vec![sent.identifier.clone()];
    let delivered = ledger.record_delivered("rcpt-k30", &ids, t).await;
    delivered.expect("record_delivered");

    let end = t + LEASE;
    let take = ledger.take_over("k30-sent", &sent, end, end + LEASE).await;
    assert!(!take.expect("take_over"), "delivered: not taken over");
    let mark = ledger.mark_ambiguous("k30-sent", &sent, end).await;
    assert!(!mark.expect("mark_ambiguous"), "delivered: not ambiguous");
    let failed = ledger.fail_claim("k30-sent", &sent, FailureReason::StripeRejected, "x", end);
    assert!(!failed.await.expect("fail_claim"), "delivered: not failed");
    assert_eq!(
        counted(ledger, "cus_k30").await,
        (200, 0),
        "nothing given back"
    );
    let e = ledger
        .entry("k30-sent")
        .await
        .expect("entry")
        .expect("an entry");
    assert_eq!(e.state, LedgerState::Metered, "reads delivered");

    let take = ledger.take_over("k30-open", &open, end, end + LEASE).await;
    assert!(take.expect("take_over"), "undelivered: taken over");
    let mut taken = open.clone();
    taken.lease_until = end + LEASE;
    let failed = ledger.fail_claim("k30-open", &taken, FailureReason::StripeRejected, "x", end);
    assert!(failed.await.expect("fail_claim"), "undelivered: failed");
    assert_eq!(
        counted(ledger, "cus_k30").await,
        (100, 0),
        "its credits given back"
    );
}

/// `entries` reads a batch's entries as `entry` reads them: absent traces absent, a claim
/// delivered through its receipt read delivered, another receipt's listing ignored.
pub async fn entries_read_a_batch_as_entry_reads_each(ledger: &dyn Ledger) {
    let t = now();
    let mut claims: Vec<_> = ["k31-a", "k31-b", "k31-c"]
        .iter()
        .map(|trace| claim(trace, "cus_k31", Expect::Absent, 10, 0, t))
        .collect();
    claims[0].pending.receipt = Some("rcpt-k31".into());
    claims[1].pending.receipt = Some("rcpt-k31".into());
    let (a, b) = (claims[0].pending.clone(), claims[1].pending.clone());
    let result = claim_all(ledger, "cus_k31", None, claims, t).await;
    assert_eq!(result, ClaimResult::Claimed);
    for (receipt, p) in [("rcpt-k31", &a), ("rcpt-k31-other", &b)] {
        let ids = [p.identifier.clone()];
        let done = ledger.record_delivered(receipt, &ids, t).await;
        done.expect("record_delivered");
    }

    let ids: Vec<String> = ["k31-a", "k31-b", "k31-c", "k31-none", "k31-a"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let batch = ledger.entries(&ids).await.expect("entries");
    let mut keys: Vec<&str> = batch.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["k31-a", "k31-b", "k31-c"],
        "absent traces are absent"
    );
    for id in ["k31-a", "k31-b", "k31-c"] {
        let one = ledger.entry(id).await.expect("entry");
        assert_eq!(batch.get(id), one.as_ref(), "{id} as entry reads it");
    }
    assert_eq!(
        batch["k31-a"].state,
        LedgerState::Metered,
        "its receipt lists it"
    );
    assert_eq!(
        batch["k31-b"].state,
        LedgerState::Claimed,
        "another receipt's"
    );
}
