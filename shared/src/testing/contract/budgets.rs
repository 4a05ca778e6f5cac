//! Contract checks of budgets: alerts, the exceeded flag, policies and user mappings.

use super::events::budget_event;
use super::{PERIOD, Seeding, claim, claim_all, now, usage};
use crate::domain::budget::{BudgetMode, BudgetPolicy, Period};
use crate::domain::budget_event::BudgetEventKind;
use crate::domain::claim::{ClaimResult, Expect};
use crate::ports::Ledger;

/// `record_budget_event` is true only for the call that creates the alert of a customer, period and
/// threshold.
pub async fn alerts_are_recorded_once(ledger: &dyn Ledger) {
    let t = now();
    let alert = |customer: &'static str, period: &'static str, pct: u32, used: u64| async move {
        let mut event = budget_event(
            customer,
            BudgetEventKind::ThresholdCrossed { percent: pct },
            used,
            1_000,
            t,
        );
        event.period = period.to_string();
        ledger
            .record_budget_event(&event)
            .await
            .expect("record_budget_event")
    };
    assert!(alert("cus_k15", PERIOD, 50, 500).await, "first");
    assert!(!alert("cus_k15", PERIOD, 50, 600).await, "only once");
    assert!(alert("cus_k15", PERIOD, 80, 800).await, "another threshold");
    assert!(alert("cus_k15", "2030-02", 50, 500).await, "another period");
    assert!(alert("cus_k15b", PERIOD, 50, 500).await, "another customer");
    assert!(!alert("cus_k15", PERIOD, 80, 900).await);
    // The counter marks what is recorded, so that a check reading it puts nothing again.
    let marked = ledger.budget_usage("cus_k15", PERIOD).await.expect("usage");
    assert_eq!(marked.alerted.into_iter().collect::<Vec<_>>(), vec![50, 80]);
    let other = ledger
        .budget_usage("cus_k15", "2030-02")
        .await
        .expect("usage");
    assert_eq!(other.alerted.into_iter().collect::<Vec<_>>(), vec![50]);
    assert_eq!(other.reached, None);
}

/// `set_exceeded` raises the flag and keeps the counts, on an existing counter or a new
/// one; a counter that has only the flag holds back no claim.
pub async fn set_exceeded_raises_the_flag(ledger: &dyn Ledger) {
    let t = now();
    let one = |trace: &str, customer: &str| vec![claim(trace, customer, Expect::Absent, 100, 0, t)];
    let result = claim_all(ledger, "cus_k16", None, one("k16-t", "cus_k16"), t).await;
    assert_eq!(result, ClaimResult::Claimed);
    assert!(!usage(ledger, "cus_k16").await.exceeded);
    for _ in 0..2 {
        let set = ledger.set_exceeded("cus_k16", PERIOD, 0, t).await;
        assert!(set.expect("set_exceeded"));
        let u = usage(ledger, "cus_k16").await;
        assert_eq!((u.used, u.capped, u.exceeded), (100, 0, true));
    }
    let set = ledger.set_exceeded("cus_k16b", PERIOD, 0, t).await;
    assert!(set.expect("set_exceeded"));
    let u = usage(ledger, "cus_k16b").await;
    assert_eq!((u.used, u.capped, u.exceeded), (0, 0, true));
    let result = claim_all(ledger, "cus_k16b", Some(100), one("k16-b", "cus_k16b"), t).await;
    assert_eq!(
        result,
        ClaimResult::Claimed,
        "the flag alone holds back nothing"
    );
    assert_eq!(usage(ledger, "cus_k16b").await.used, 100);

    // Read together, the counters read as one by one; one never written reads as unused.
    let counters: Vec<(String, String)> = ["cus_k16", "cus_k16b", "cus_k16-none"]
        .iter()
        .map(|c| (c.to_string(), PERIOD.to_string()))
        .collect();
    let read = ledger
        .budget_usages(&counters)
        .await
        .expect("budget_usages");
    assert_eq!(read.len(), 3);
    for counter in &counters {
        assert_eq!(
            read[counter],
            usage(ledger, &counter.0).await,
            "{counter:?}"
        );
    }
    assert_eq!(
        read[&counters[2]],
        crate::domain::budget::BudgetUsage::default()
    );
    assert_eq!(
        (read[&counters[0]].used, read[&counters[0]].exceeded),
        (100, true)
    );
}

/// Policies and user mappings read as seeded; a limit of 0 reads as no limit; unknown ones
/// read as `None`.
pub async fn policies_and_mappings_read_as_seeded(ledger: &dyn Ledger, seed: &dyn Seeding) {
    let policy = |limit: Option<u64>, mode: BudgetMode| BudgetPolicy {
        limit,
        period: Period::Week,
        mode,
        thresholds: vec![25, 90],
    };
    let read = |customer: &'static str| async move {
        ledger.budget_policy(customer).await.expect("budget_policy")
    };
    assert_eq!(read("cus_k17").await, None);
    let hard = policy(Some(5_000), BudgetMode::Hard);
    seed.seed_budget_policy("cus_k17", &hard)
        .await
        .expect("seed");
    assert_eq!(read("cus_k17").await, Some(hard));
    let zero = policy(Some(0), BudgetMode::Soft);
    seed.seed_budget_policy("cus_k17b", &zero)
        .await
        .expect("seed");
    assert_eq!(read("cus_k17b").await, Some(policy(None, BudgetMode::Soft)));
    let unlimited = policy(None, BudgetMode::Hard);
    seed.seed_budget_policy("cus_k17c", &unlimited)
        .await
        .expect("seed");
    assert_eq!(read("cus_k17c").await, Some(unlimited));

    let user = |id: &'static str| async move {
        ledger
            .customer_for_user(id)
            .await
            .expect("customer_for_user")
    };
    assert_eq!(user("u-k17").await, None);
    seed.seed_user_mapping("u-k17", "cus_k17")
        .await
        .expect("seed");
    assert_eq!(user("u-k17").await.as_deref(), Some("cus_k17"));
    assert_eq!(user("u-k17-other").await, None);

    // Read together, they read as one by one, the unknown ones as `None`.
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let customers = ids(&["cus_k17", "cus_k17b", "cus_k17c", "cus_k17-none", "cus_k17"]);
    let policies = ledger
        .budget_policies_of(&customers)
        .await
        .expect("budget_policies_of");
    assert_eq!(policies.len(), 4, "one answer per customer: {policies:?}");
    for c in &customers {
        assert_eq!(policies[c], read_any(ledger, c).await, "{c}");
    }
    let users = ids(&["u-k17", "u-k17-other"]);
    let mapped = ledger
        .customers_for_users(&users)
        .await
        .expect("customers_for_users");
    assert_eq!(mapped.len(), 2);
    assert_eq!(mapped["u-k17"].as_deref(), Some("cus_k17"));
    assert_eq!(mapped["u-k17-other"], None);
}

async fn read_any(ledger: &dyn Ledger, customer: &str) -> Option<BudgetPolicy> {
    ledger.budget_policy(customer).await.expect("budget_policy")
}
