//! Every invariant of the reliability run, fed a run that holds and then one planted
//! violation at a time: the invariant it breaks must be reported (and, where the violation
//! touches nothing else, only that one).

use super::*;
use crate::fakes::stripe::{DEDUP_WINDOW, RecordedMeterEvent, StripeFake};

const TOTALS: &str = "Stripe totals per customer = expected totals";
const PER_TRACE: &str = "every trace accounted for with its expected outcome";
const NO_DOUBLE: &str = "no double billing, nothing billed early";
const BUDGETS: &str = "budget counters = ledger = Stripe";
const HARD: &str = "hard limits never exceeded";
const IN_FLIGHT: &str = "no message lost or left in flight";

/// What [`check_against`] is fed: a small run in which every invariant holds.
struct Observed {
    expectations: BTreeMap<String, Expect>,
    budgets: Vec<(String, Option<BudgetPolicy>)>,
    settling: BTreeSet<String>,
    summary: Summary,
    events: Vec<RecordedMeterEvent>,
}

impl Observed {
    fn check(&self) -> Vec<Invariant> {
        check_against(
            &self.expectations,
            &self.budgets,
            &self.settling,
            &self.summary,
            &StripeSeen::of(&self.events),
        )
    }

    /// The names of the invariants that did not hold.
    fn failing(&self) -> Vec<&'static str> {
        let all = self.check();
        assert_eq!(all.len(), 6, "{all:?}");
        all.iter().filter(|i| !i.holds).map(|i| i.name).collect()
    }

    fn detail(&self, name: &str) -> String {
        let all = self.check();
        let found = all.iter().find(|i| i.name == name);
        found.map(|i| i.detail.clone()).unwrap_or_default()
    }

    fn line(&mut self, customer: &str) -> &mut crate::summary::CustomerLine {
        self.summary.customers.get_mut(customer).unwrap()
    }
}

fn event(identifier: &str, customer: &str, value: u64) -> RecordedMeterEvent {
    RecordedMeterEvent {
        identifier: identifier.into(),
        event_name: "llm_credits".into(),
        customer: customer.into(),
        value,
        timestamp: at(1).timestamp(),
        idempotency_key: Some(identifier.into()),
    }
}

/// `soft`: two traces (10 + 5 credits), no limit. `hard`: two traces of 60 credits in one
/// month under a hard limit of 100 (the second capped by 20). One permanent failure, one
/// trace still settling.
fn holding() -> Observed {
    let bill = |customer: &str, credits| Expect::Bill {
        customer: customer.into(),
        credits,
        at: at(1),
    };
    let expectations = BTreeMap::from([
        ("t1".to_string(), bill("soft", 10)),
        ("t2".to_string(), bill("soft", 5)),
        ("t3".to_string(), bill("hard", 60)),
        ("t4".to_string(), bill("hard", 60)),
        (
            "bad".to_string(),
            Expect::Fail(BTreeSet::from(["invalid_usage"])),
        ),
    ]);
    let hard = BudgetPolicy {
        limit: Some(100),
        period: Period::Month,
        mode: BudgetMode::Hard,
        thresholds: vec![],
    };
    let mut failed = entry("bad", "soft", 0, 0);
    failed.state = LedgerState::Failed;
    failed.reason = Some("invalid_usage".into());
    let mut summary = Summary {
        entries: vec![
            entry("t1", "soft", 10, 10),
            entry("t2", "soft", 5, 5),
            entry("t3", "hard", 60, 60),
            entry("t4", "hard", 60, 40),
            failed,
        ],
        periods: vec![("hard".into(), "2026-11".into(), 100, Some(100))],
        states: BTreeMap::from([
            ("metered".into(), 3),
            ("capped".into(), 1),
            ("failed".into(), 1),
        ]),
        ..Summary::default()
    };
    for (customer, credits) in [("soft", 15), ("hard", 100)] {
        let line = summary.customers.entry(customer.into()).or_default();
        line.ledger_credits = credits;
        line.budget_used = credits;
        line.stripe_credits = credits;
    }
    Observed {
        expectations,
        budgets: vec![("soft".into(), None), ("hard".into(), Some(hard))],
        settling: BTreeSet::from(["s1".to_string()]),
        summary,
        events: vec![
            event("tm_t1_r1", "soft", 10),
            event("tm_t2_r1", "soft", 5),
            event("tm_t3_r1", "hard", 60),
            event("tm_t4_r1", "hard", 40),
        ],
    }
}

#[test]
fn a_run_without_violations_holds() {
    let run = holding();
    assert_eq!(run.failing(), Vec::<&str>::new(), "{:?}", run.check());
}

#[test]
fn a_trace_billed_twice_under_two_identifiers_is_reported() {
    let mut run = holding();
    run.events.push(event("tm_t1_r2", "soft", 10));
    assert_eq!(run.failing(), [TOTALS, PER_TRACE]);
    assert!(
        run.detail(PER_TRACE).contains("t1"),
        "{}",
        run.detail(PER_TRACE)
    );
}

#[test]
fn a_lost_trace_is_reported() {
    let mut run = holding();
    run.summary.entries.retain(|e| e.trace_id != "t2");
    run.events.retain(|e| e.identifier != "tm_t2_r1");
    assert_eq!(run.failing(), [TOTALS, PER_TRACE]);
    assert!(run.detail(PER_TRACE).contains("t2: no ledger entry"));
}

/// The duplicate-identifier half of "no double billing": Stripe's fake forgets an identifier
/// after its 24 h window (its own clock), so a resend a day later is recorded twice.
#[tokio::test]
async fn an_identifier_resent_after_stripes_window_is_reported() {
    let fake = StripeFake::start("sk_test_planted").await;
    let post = |identifier: &str, customer: &str, value: u64| {
        let request = reqwest::Client::new()
            .post(format!("{}/v1/billing/meter_events", fake.base_url()))
            .bearer_auth("sk_test_planted")
            .form(&[
                ("event_name", "llm_credits".to_string()),
                ("payload[stripe_customer_id]", customer.to_string()),
                ("payload[value]", value.to_string()),
                ("identifier", identifier.to_string()),
            ]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut run = holding();
    for e in &run.events {
        assert_eq!(post(&e.identifier, &e.customer, e.value).await, 200);
    }
    assert_eq!(post("tm_t1_r1", "soft", 10).await, 400, "within the window");
    run.events = fake.events();
    assert_eq!(run.failing(), Vec::<&str>::new());

    fake.advance(DEDUP_WINDOW + ChronoDuration::minutes(1));
    assert_eq!(post("tm_t1_r1", "soft", 10).await, 200, "past the window");
    run.events = fake.events();
    assert_eq!(run.failing(), [TOTALS, PER_TRACE, NO_DOUBLE]);
    let detail = run.detail(NO_DOUBLE);
    assert!(
        detail.starts_with("1 identifiers recorded twice (tm_t1_r1)"),
        "{detail}"
    );
}

#[test]
fn an_event_for_a_trace_never_seeded_is_reported() {
    let mut run = holding();
    run.events.push(event("tm_stranger_r1", "soft", 3));
    assert_eq!(run.failing(), [TOTALS, NO_DOUBLE]);
    assert!(
        run.detail(NO_DOUBLE)
            .contains("1 events for traces not seeded")
    );
}

#[test]
fn a_settling_trace_touched_is_reported() {
    let mut run = holding();
    run.summary.entries.push(entry("s1", "soft", 0, 0));
    assert_eq!(run.failing(), [NO_DOUBLE]);
    assert!(run.detail(NO_DOUBLE).contains("1 settling traces touched"));
}

#[test]
fn a_budget_counter_off_by_one_is_reported() {
    let mut run = holding();
    run.line("soft").budget_used += 1;
    assert_eq!(run.failing(), [BUDGETS]);
    assert!(
        run.detail(BUDGETS)
            .contains("soft: ledger 15 budget 16 Stripe 15")
    );

    let mut run = holding();
    run.line("hard").budget_used -= 1;
    assert_eq!(run.failing(), [BUDGETS]);

    // The ledger's sum and Stripe's per customer are compared too, not only the counter.
    let mut run = holding();
    run.line("soft").stripe_credits += 1;
    assert_eq!(run.failing(), [BUDGETS]);
    let mut run = holding();
    run.line("soft").ledger_credits -= 1;
    assert_eq!(run.failing(), [BUDGETS]);
}

#[test]
fn a_hard_cap_exceeded_is_reported() {
    // The period counter over the limit.
    let mut run = holding();
    run.summary.periods[0].2 = 101;
    assert_eq!(run.failing(), [HARD]);
    assert!(run.detail(HARD).contains("hard 2026-11: 101 > 100"));

    // A soft limit may be passed.
    let mut run = holding();
    run.budgets[0].1 = Some(BudgetPolicy {
        limit: Some(10),
        period: Period::Month,
        mode: BudgetMode::Soft,
        thresholds: vec![],
    });
    run.summary
        .periods
        .push(("soft".into(), "2026-11".into(), 15, Some(10)));
    assert_eq!(run.failing(), Vec::<&str>::new());

    // Stripe billed past the cap: the capped trace sent in full.
    let mut run = holding();
    run.events[3].value = 60;
    assert_eq!(run.failing(), [TOTALS, PER_TRACE]);
    assert!(
        run.detail(TOTALS)
            .contains("hard: Stripe 120, expected 100")
    );
}

#[test]
fn work_left_in_flight_is_reported() {
    for state in ["claimed", "ambiguous"] {
        let mut run = holding();
        run.summary.states.insert(state.into(), 1);
        assert_eq!(run.failing(), [IN_FLIGHT], "{state}");
    }
    let mut run = holding();
    run.summary.queued = 1;
    assert_eq!(run.failing(), [IN_FLIGHT]);
    let mut run = holding();
    run.summary.dlq = 1;
    assert_eq!(run.failing(), [IN_FLIGHT]);
}

#[test]
fn a_resend_a_day_later_is_reported() {
    let earlier = holding().events;
    let quiet = super::replay::nothing_sent_again(4, &earlier, &[]);
    assert!(quiet.holds, "{quiet:?}");
    let again = [event("tm_t3_r1", "hard", 60)];
    let resent = super::replay::nothing_sent_again(4, &earlier, &again);
    assert!(!resent.holds);
    assert!(
        resent
            .detail
            .ends_with("1 events sent again, 1 identifiers recorded twice (tm_t3_r1)"),
        "{}",
        resent.detail
    );
}
