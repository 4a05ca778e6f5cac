#![allow(clippy::unwrap_used)]

mod planted;

use super::check::trace_of;
use super::*;
use crate::fakes::langfuse::{FakeObservation, FakeTrace};
use crate::summary::Summary;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use tracemeter::domain::budget::Period;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy};
use tracemeter::domain::ledger::LedgerEntry;
use tracemeter::domain::ledger::LedgerState;

fn at(h: u32) -> DateTime<Utc> {
    chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 23, h, 0, 0).unwrap()
}

fn trace(id: &str, cost: f64, ms: i64) -> FakeTrace {
    FakeTrace::new(id, at(10)).observation(FakeObservation::generation(
        format!("{id}-g"),
        id,
        at(10),
        at(10) + ChronoDuration::milliseconds(ms),
        "gpt-4o",
        100,
        10,
        cost,
    ))
}

#[test]
fn expected_credits_follow_the_documented_formula() {
    let maps = BTreeMap::from([("u-1", "cus_u")]);
    let now = at(12);
    // 0.004 USD + 3 s x 0.05/60 = 0.0065 USD = 162.5 -> 163 credits.
    let t = trace("a", 0.004, 3_000).meta("stripeCustomerId", "cus_a");
    assert_eq!(
        expect(&t, &maps, now),
        Expect::Bill {
            customer: "cus_a".into(),
            credits: 163,
            at: at(10)
        }
    );
    // BYO key: only compute, 3 s = 0.0025 USD = 62.5 -> 63.
    let t = trace("b", 0.004, 3_000)
        .meta("customerId", "cus_b")
        .meta("aiCredentialsOwnership", "user");
    assert!(matches!(
        expect(&t, &maps, now),
        Expect::Bill { credits: 63, .. }
    ));
    // Exact multiple: 0.004 USD, 0 ms = 100 credits, not 101.
    let t = trace("c", 0.004, 0).user("u-1");
    assert_eq!(
        expect(&t, &maps, now),
        Expect::Bill {
            customer: "cus_u".into(),
            credits: 100,
            at: at(10)
        }
    );
    let t = trace("d", 0.004, 0).user("u-unknown");
    assert_eq!(
        expect(&t, &maps, now),
        Expect::Fail(BTreeSet::from(["unmapped_customer"]))
    );
    let t = trace("e", -0.1, 0).meta("customerId", "c");
    assert_eq!(
        expect(&t, &maps, now),
        Expect::Fail(BTreeSet::from(["invalid_usage"]))
    );
    let t = trace("f", 2_000.0, 0).meta("customerId", "c");
    assert_eq!(
        expect(&t, &maps, now),
        Expect::Fail(BTreeSet::from(["invalid_usage"]))
    );
    let t = trace("g", 0.01, 0).meta("customerId", "c");
    let old = at(10) + ChronoDuration::days(36);
    assert_eq!(
        expect(&t, &maps, old),
        Expect::Fail(BTreeSet::from(["usage_too_old"]))
    );
}

#[test]
fn hard_limits_cap_each_period_and_soft_limits_do_not() {
    let bill = |c: &str, credits, h| Expect::Bill {
        customer: c.into(),
        credits,
        at: at(h),
    };
    let ex = BTreeMap::from([
        ("1".to_string(), bill("hard", 70, 1)),
        ("2".to_string(), bill("hard", 70, 2)),
        ("3".to_string(), bill("soft", 70, 1)),
        ("4".to_string(), bill("soft", 70, 2)),
    ]);
    let policy = |mode| {
        Some(BudgetPolicy {
            limit: Some(100),
            period: Period::Month,
            mode,
            thresholds: vec![],
        })
    };
    let budgets = vec![
        ("hard".to_string(), policy(BudgetMode::Hard)),
        ("soft".to_string(), policy(BudgetMode::Soft)),
    ];
    let totals = expected_totals(&ex, &budgets);
    assert_eq!(totals["hard"], 100);
    assert_eq!(totals["soft"], 140);
}

/// A ledger entry of `total` credits, `billed` of them billed (the rest capped).
fn entry(id: &str, customer: &str, total: u64, billed: u64) -> LedgerEntry {
    LedgerEntry {
        trace_id: id.into(),
        state: if billed < total {
            LedgerState::Capped
        } else {
            LedgerState::Metered
        },
        version: 2,
        revision: 1,
        total_credits: total,
        billed_credits: billed,
        capped_credits: total - billed,
        customer_id: Some(customer.into()),
        last_observation_at: None,
        pending: None,
        reason: None,
        detail: None,
        receipted: None,
        price_version: None,
    }
}

#[test]
fn identifiers_name_their_trace() {
    assert_eq!(trace_of("tm_tr-000001_r1"), Some("tr-000001"));
    assert_eq!(trace_of("tm_a_r_b_r2"), Some("a_r_b"));
    assert_eq!(trace_of("other"), None);
}

#[test]
fn every_trace_is_expected_or_settling_around_the_cutoff() {
    let cutoff = at(12);
    let bill = Expect::Bill {
        customer: "c".into(),
        credits: 1,
        at: cutoff,
    };
    let offsets = [
        ("old", -3_600),
        ("before", -3),
        ("at", 0),
        ("after", 3),
        ("young", 3_600),
    ];
    let mut all = BTreeMap::new();
    let mut touched = Vec::new();
    for (name, seconds) in offsets {
        let usage = cutoff + ChronoDuration::seconds(seconds);
        for has_entry in [false, true] {
            let id = format!("{name}-{}", if has_entry { "entry" } else { "none" });
            if has_entry {
                touched.push(entry(&id, "c", 1, 1));
            }
            all.insert(id, (usage, bill.clone()));
        }
    }
    let summary = Summary {
        entries: touched,
        ..Summary::default()
    };
    let (expected, settling) = due(&all, cutoff, &summary);
    for id in all.keys() {
        assert!(
            expected.contains_key(id) != settling.contains(id),
            "{id}: expected {}, settling {}",
            expected.contains_key(id),
            settling.contains(id)
        );
    }
    let expected: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(
        expected,
        [
            "after-entry",
            "at-entry",
            "before-entry",
            "old-entry",
            "old-none"
        ]
    );
}

#[test]
fn a_doubled_margin_doubles_the_credits_of_usage_from_its_time() {
    let maps = BTreeMap::new();
    let t = trace("a", 0.004, 3_000).meta("stripeCustomerId", "cus_a");
    let bill = |credits| Expect::Bill {
        customer: "cus_a".into(),
        credits,
        at: at(10),
    };
    // 0.0065 USD x 2 = 0.013 USD = 325 credits (not 2 x 163).
    assert_eq!(expect_priced(&t, &maps, at(12), Some(at(10))), bill(325));
    assert_eq!(expect_priced(&t, &maps, at(12), Some(at(11))), bill(163));
}
