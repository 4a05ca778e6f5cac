//! Contract check of `StripeRejections`: what Stripe dropped after accepting it becomes
//! `failed` (`stripe_rejected`) with its credits given back, exactly once.

use super::{PERIOD, claim, claim_all, counted, entry, next_claim, now, totals};
use crate::domain::attention::AttentionQuery;
use crate::domain::claim::{ClaimResult, Expect};
use crate::domain::ledger::{LedgerState, PendingClaim};
use crate::domain::meter::identifier;
use crate::domain::meter_errors::Rejection;
use crate::ports::OperatorLedger;
use chrono::{DateTime, Utc};

/// Claims the first revision of `trace` (with a receipt) and returns its pending claim.
async fn claimed(
    ledger: &dyn OperatorLedger,
    trace: &str,
    billable: u64,
    capped: u64,
    t: DateTime<Utc>,
) -> PendingClaim {
    let mut c = claim(trace, "cus_k30", Expect::Absent, billable, capped, t);
    c.pending.receipt = Some(format!("rcpt-{trace}"));
    let result = claim_all(ledger, "cus_k30", None, vec![c.clone()], t).await;
    assert_eq!(result, ClaimResult::Claimed, "{trace}");
    c.pending
}

/// A delivered revision Stripe dropped (pending and listed by its receipt, or marked
/// metered as the entry's first revision) becomes failed with its credits given back, once;
/// a revision folded under a later one is refused; the entry is found as `stripe_rejected`
/// and can be claimed again (a replay) with the next revision's identifier.
pub async fn stripe_rejections_give_the_budget_back_once(ledger: &dyn OperatorLedger) {
    let t = now();
    let r = claimed(ledger, "k30-r", 100, 5, t).await;
    let record = ledger.record_delivered("rcpt-k30-r", std::slice::from_ref(&r.identifier), t);
    record.await.expect("record_delivered");
    let m = claimed(ledger, "k30-m", 30, 0, t).await;
    assert!(ledger.mark_metered("k30-m", &m, t).await.expect("mark"));
    let two = claimed(ledger, "k30-two", 20, 0, t).await;
    assert!(ledger.mark_metered("k30-two", &two, t).await.expect("mark"));
    let next = next_claim(&entry(ledger, "k30-two").await, 10, 0, t);
    assert_eq!(
        claim_all(ledger, "cus_k30", None, vec![next.clone()], t).await,
        ClaimResult::Claimed
    );
    assert!(
        ledger
            .mark_metered("k30-two", &next.pending, t)
            .await
            .expect("mark")
    );
    assert_eq!(counted(ledger, "cus_k30").await, (160, 5));

    let reject = |trace: &'static str, rev: u32| async move {
        let id = identifier(trace, rev);
        ledger
            .reject_delivered(trace, rev, &id, "meter_event_customer_not_found", t)
            .await
            .expect("reject_delivered")
    };
    let given = Rejection::Rejected {
        customer_id: "cus_k30".into(),
        period: PERIOD.into(),
        billable: 100,
    };
    assert_eq!(reject("k30-r", 1).await, given);
    let e = entry(ledger, "k30-r").await;
    assert_eq!(totals(&e), (LedgerState::Failed, 2, 1, 0, 0, 0));
    assert_eq!(e.reason.as_deref(), Some("stripe_rejected"));
    assert_eq!(e.pending, None);
    assert_eq!(counted(ledger, "cus_k30").await, (60, 0));
    assert_eq!(reject("k30-r", 1).await, Rejection::AlreadyRejected);
    assert_eq!(entry(ledger, "k30-r").await.version, 2, "nothing written");
    assert_eq!(counted(ledger, "cus_k30").await, (60, 0), "given back once");

    assert!(matches!(
        reject("k30-m", 1).await,
        Rejection::Rejected { billable: 30, .. }
    ));
    assert_eq!(
        totals(&entry(ledger, "k30-m").await),
        (LedgerState::Failed, 3, 1, 0, 0, 0)
    );
    assert!(matches!(reject("k30-two", 1).await, Rejection::Refused(_)));
    assert!(matches!(reject("k30-two", 3).await, Rejection::Refused(_)));
    assert_eq!(entry(ledger, "k30-two").await.state, LedgerState::Metered);
    assert_eq!(reject("k30-none", 1).await, Rejection::NotFound);
    assert_eq!(counted(ledger, "cus_k30").await, (30, 0));

    let mut query = AttentionQuery::all(LedgerState::Failed);
    query.reason = Some("stripe_rejected".into());
    let found = ledger.needing_attention(&query).await.expect("attention");
    let mut ids: Vec<_> = found.iter().map(|f| f.entry.trace_id.as_str()).collect();
    ids.retain(|id| id.starts_with("k30-"));
    assert_eq!(ids, ["k30-m", "k30-r"]);

    let failed = entry(ledger, "k30-r").await;
    let mut replay = next_claim(&failed, 100, 5, t);
    replay.pending.customer_id = "cus_k30".into();
    assert_eq!(
        replay.pending.identifier,
        identifier("k30-r", 2),
        "a new identifier"
    );
    assert_eq!(
        claim_all(ledger, "cus_k30", None, vec![replay], t).await,
        ClaimResult::Claimed
    );
    assert_eq!(counted(ledger, "cus_k30").await, (130, 5));
}
