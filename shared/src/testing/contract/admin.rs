//! Contract checks of the operator's ports: the attention index, settling ambiguous claims,
//! policies and mappings written and removed.

use super::events::budget_event;
use super::{PERIOD, claim, claim_all, counted, entry, next_claim, now, totals};
use crate::domain::attention::{AMBIGUOUS_REASON, AttentionQuery};
use crate::domain::budget::{BudgetMode, BudgetPolicy, Period};
use crate::domain::budget_event::BudgetEventKind;
use crate::domain::claim::{ClaimResult, Expect, FailureKey};
use crate::domain::ledger::{LedgerState, PendingClaim};
use crate::error::FailureReason;
use crate::ports::OperatorLedger;
use chrono::{DateTime, Duration, Utc};

/// The trace ids a query finds among those starting with `prefix`, oldest write first.
async fn found(ledger: &dyn OperatorLedger, query: AttentionQuery, prefix: &str) -> Vec<String> {
    let entries = ledger
        .needing_attention(&query)
        .await
        .expect("needing_attention");
    entries
        .into_iter()
        .map(|e| e.entry.trace_id)
        .filter(|id| id.starts_with(prefix))
        .collect()
}

/// Claims `trace` for `customer` and marks it ambiguous; its pending claim.
async fn ambiguous(
    ledger: &dyn OperatorLedger,
    trace: &str,
    customer: &str,
    billable: u64,
    t: DateTime<Utc>,
) -> PendingClaim {
    let c = claim(trace, customer, Expect::Absent, billable, 0, t);
    let result = claim_all(ledger, customer, None, vec![c.clone()], t).await;
    assert_eq!(result, ClaimResult::Claimed, "{trace}");
    assert!(
        ledger
            .mark_ambiguous(trace, &c.pending, t)
            .await
            .expect("mark_ambiguous")
    );
    c.pending
}

/// Failed entries are found by state, reason and time of their last write; ambiguous ones
/// by state; a billed entry and a failed entry claimed again are not found.
pub async fn failed_and_ambiguous_entries_are_found(ledger: &dyn OperatorLedger) {
    let t = now();
    let fail = |trace: &'static str, reason: FailureReason, at: DateTime<Utc>| async move {
        let key = FailureKey::Trace(trace.to_string());
        ledger
            .record_failure(&key, reason, "why", at)
            .await
            .expect("record_failure");
    };
    fail("k20-a", FailureReason::UnmappedCustomer, t).await;
    fail(
        "k20-b",
        FailureReason::TraceNotFound,
        t + Duration::seconds(1),
    )
    .await;
    ambiguous(ledger, "k20-c", "cus_k20", 10, t).await;
    let billed = vec![claim("k20-d", "cus_k20", Expect::Absent, 10, 0, t)];
    assert_eq!(
        claim_all(ledger, "cus_k20", None, billed, t).await,
        ClaimResult::Claimed
    );

    let failed = AttentionQuery::all(LedgerState::Failed);
    assert_eq!(
        found(ledger, failed.clone(), "k20-").await,
        ["k20-a", "k20-b"]
    );
    let unmapped = AttentionQuery {
        reason: Some("unmapped_customer".into()),
        ..failed.clone()
    };
    assert_eq!(found(ledger, unmapped, "k20-").await, ["k20-a"]);
    let since = AttentionQuery {
        since: Some(t + Duration::seconds(1)),
        ..failed.clone()
    };
    assert_eq!(found(ledger, since, "k20-").await, ["k20-b"]);
    let amb = found(ledger, AttentionQuery::all(LedgerState::Ambiguous), "k20-").await;
    assert_eq!(amb, ["k20-c"]);
    let by_reason = AttentionQuery {
        reason: Some(AMBIGUOUS_REASON.into()),
        ..AttentionQuery::all(LedgerState::Ambiguous)
    };
    assert_eq!(found(ledger, by_reason, "k20-").await, ["k20-c"]);

    let mut again = next_claim(&entry(ledger, "k20-a").await, 5, 0, t);
    again.pending.customer_id = "cus_k20".into();
    let result = claim_all(ledger, "cus_k20", None, vec![again], t).await;
    assert_eq!(
        result,
        ClaimResult::Claimed,
        "a failed entry is claimable at its version"
    );
    assert_eq!(found(ledger, failed, "k20-").await, ["k20-b"]);
}

/// An ambiguous claim settles once: delivered, it reads metered with its credits counted;
/// not delivered, it reads failed (`not_delivered`) with its credits given back, and is
/// found among the failures. Neither settles a claim that is not ambiguous.
pub async fn ambiguous_claims_settle_once(ledger: &dyn OperatorLedger) {
    let t = now();
    let d = ambiguous(ledger, "k21-d", "cus_k21", 100, t).await;
    let nd = ambiguous(ledger, "k21-n", "cus_k21", 40, t).await;
    assert_eq!(counted(ledger, "cus_k21").await, (140, 0));
    let period = ledger.counted_period("k21-d").await.expect("period");
    assert_eq!(period.as_deref(), Some(PERIOD), "pending");
    assert_eq!(
        ledger.counted_period("k21-none").await.expect("period"),
        None
    );
    assert!(
        ledger
            .settle_delivered("k21-d", &d, t)
            .await
            .expect("settle")
    );
    let period = ledger.counted_period("k21-d").await.expect("period");
    assert_eq!(period.as_deref(), Some(PERIOD), "committed");
    let e = entry(ledger, "k21-d").await;
    assert_eq!(totals(&e), (LedgerState::Metered, 3, 1, 100, 100, 0));
    assert_eq!((e.reason, e.pending), (None, None));
    assert!(
        !ledger
            .settle_delivered("k21-d", &d, t)
            .await
            .expect("settle"),
        "once"
    );
    let missing = ledger.settle_not_delivered("k21-d", &d, "x", t).await;
    assert!(!missing.expect("settle"), "not when metered");

    assert!(
        ledger
            .settle_not_delivered("k21-n", &nd, "not in Stripe", t)
            .await
            .expect("settle")
    );
    let e = entry(ledger, "k21-n").await;
    assert_eq!(totals(&e), (LedgerState::Failed, 3, 0, 0, 0, 0));
    assert_eq!(e.reason.as_deref(), Some("not_delivered"));
    assert_eq!(counted(ledger, "cus_k21").await, (100, 0), "given back");
    let again = ledger.settle_not_delivered("k21-n", &nd, "x", t).await;
    assert!(!again.expect("settle"), "once");
    assert_eq!(
        counted(ledger, "cus_k21").await,
        (100, 0),
        "given back once"
    );
    let failed = AttentionQuery::all(LedgerState::Failed);
    assert_eq!(found(ledger, failed, "k21-").await, ["k21-n"]);

    let c = claim("k21-c", "cus_k21", Expect::Absent, 7, 0, t);
    let result = claim_all(ledger, "cus_k21", None, vec![c.clone()], t).await;
    assert_eq!(result, ClaimResult::Claimed);
    assert!(
        !ledger
            .settle_delivered("k21-c", &c.pending, t)
            .await
            .expect("settle")
    );
    assert_eq!(entry(ledger, "k21-c").await.state, LedgerState::Claimed);
}

/// Policies written read back (and are listed); mappings written read back and are removed
/// once; recorded alerts are listed by period.
pub async fn operator_items_are_written_and_removed(ledger: &dyn OperatorLedger) {
    let policy = BudgetPolicy {
        limit: Some(500),
        period: Period::Week,
        mode: BudgetMode::Soft,
        thresholds: vec![50, 90],
    };
    ledger
        .set_budget_policy("cus_k22", &policy)
        .await
        .expect("set");
    let read = ledger.budget_policy("cus_k22").await.expect("read");
    assert_eq!(read.as_ref(), Some(&policy));
    let listed = ledger.budget_policies().await.expect("list");
    assert!(listed.contains(&("cus_k22".to_string(), policy)));

    ledger.map_user("k22-user", "cus_k22").await.expect("map");
    let mapped = ledger.customer_for_user("k22-user").await.expect("read");
    assert_eq!(mapped.as_deref(), Some("cus_k22"));
    let removed = ledger.unmap_user("k22-user").await.expect("unmap");
    assert_eq!(removed.as_deref(), Some("cus_k22"));
    assert_eq!(ledger.unmap_user("k22-user").await.expect("unmap"), None);
    assert_eq!(
        ledger.customer_for_user("k22-user").await.expect("read"),
        None
    );

    for percent in [90, 50] {
        let kind = BudgetEventKind::ThresholdCrossed { percent };
        let event = budget_event("cus_k22", kind, 450, 500, now());
        let rec = ledger.record_budget_event(&event).await;
        assert!(rec.expect("record_budget_event"));
    }
    let alerts = ledger
        .budget_alerts("cus_k22", PERIOD)
        .await
        .expect("alerts");
    assert_eq!(alerts, [50, 90]);
    assert!(
        ledger
            .budget_alerts("cus_k22", "2030-02")
            .await
            .expect("alerts")
            .is_empty()
    );
}

/// Totals per customer count delivered revisions (marked, or listed by their receipt) and
/// claims not known delivered, for usage in the range only; counters are listed by period.
pub async fn totals_count_delivered_and_in_flight_credits(ledger: &dyn OperatorLedger) {
    let t = now();
    let mut receipted = claim("k23-b", "cus_k23", Expect::Absent, 40, 0, t);
    receipted.pending.receipt = Some("k23-receipt".into());
    let claims = vec![
        claim("k23-a", "cus_k23", Expect::Absent, 100, 0, t),
        receipted.clone(),
        claim("k23-c", "cus_k23", Expect::Absent, 7, 0, t),
    ];
    assert_eq!(
        claim_all(ledger, "cus_k23", None, claims.clone(), t).await,
        ClaimResult::Claimed
    );
    assert!(
        ledger
            .mark_metered("k23-a", &claims[0].pending, t)
            .await
            .expect("mark")
    );
    let ids = [receipted.pending.identifier.clone()];
    ledger
        .record_delivered("k23-receipt", &ids, t)
        .await
        .expect("receipt");

    let totals = ledger
        .billed_by_customer(t - Duration::hours(2), t)
        .await
        .expect("totals");
    let mine = totals.get("cus_k23").copied().unwrap_or_default();
    assert_eq!((mine.traces, mine.delivered, mine.in_flight), (3, 140, 7));
    let later = ledger
        .billed_by_customer(t, t + Duration::hours(1))
        .await
        .expect("totals");
    assert!(!later.contains_key("cus_k23"), "usage outside the range");
    let counters = ledger.counters("cus_k23").await.expect("counters");
    assert_eq!(counters.get(PERIOD).map(|u| u.used), Some(147));
    assert_eq!(counters.len(), 1);
}
