//! The processing Lambda, end to end on the local stack: exactly-once metering, crashes,
//! retries, budgets, permanent failures, late cost, ambiguity.

use crate::common::{CrashOnce, Logs, body, entry, event, now, trace};
use chrono::{Duration, Timelike, Utc};
use std::collections::BTreeMap;
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::meter::MeterEvent;
use tracemeter::domain::meter::identifier;
use tracemeter::ports::{BudgetStore, ClaimStore, MeterSink};
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::faults::{NoFaults, Step};
use tracemeter_local::harness::{StackOptions, TestStack};

// Expected credits are computed by hand from the defaults (credit 0.00004 USD, compute
// 0.05 USD/min, margin 1), independently of the code under test:
// 0.01 USD + 2 s compute (0.0016667 USD) = 0.0116667 USD = 291.67 -> 292 credits.
const C_001_2S: u64 = 292;
// 0.004 USD, no latency = 100 credits exactly.
const C_0004: u64 = 100;

fn hard(limit: u64) -> BudgetPolicy {
    BudgetPolicy {
        limit: Some(limit),
        period: Period::Month,
        mode: BudgetMode::Hard,
        thresholds: vec![50, 80, 100],
    }
}

async fn budget_used(
    stack: &TestStack,
    customer: &str,
    at: chrono::DateTime<Utc>,
    period: Period,
) -> (u64, u64) {
    let usage = stack
        .ledger
        .budget_usage(customer, &period.key(at))
        .await
        .expect("budget read");
    (usage.used, usage.capped)
}

#[tokio::test]
async fn the_same_trace_three_times_is_billed_once() {
    let stack = TestStack::start("dup3").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-dup", "cus_dup", 0.01, 2, at));

    // Three invocations at once, each carrying the trace.
    let (a, b, c) = tokio::join!(
        stack.invoke_with(&NoFaults, event(&[("m1", body("t-dup"))])),
        stack.invoke_with(&NoFaults, event(&[("m2", body("t-dup"))])),
        stack.invoke_with(
            &NoFaults,
            event(&[("m3", body("t-dup")), ("m4", body("t-dup"))])
        ),
    );
    for r in [a, b, c] {
        r.expect("no crash");
    }
    // And again through the queue, three times, until the queue is empty.
    stack
        .send_traces(&["t-dup", "t-dup", "t-dup"])
        .await
        .expect("send");
    stack.drain(40).await.expect("drained");

    let events = stack.stripe.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].value, C_001_2S);
    assert_eq!(events[0].customer, "cus_dup");
    assert_eq!(events[0].identifier, identifier("t-dup", 1));
    assert_eq!(
        events[0].idempotency_key.as_deref(),
        Some(identifier("t-dup", 1).as_str())
    );
    assert_eq!(events[0].timestamp, at.timestamp());
    assert_eq!(
        budget_used(&stack, "cus_dup", at, Period::Month).await,
        (C_001_2S, 0)
    );
    let e = entry(&stack, "t-dup").await;
    assert_eq!(e.state, LedgerState::Metered);
    assert_eq!(
        (e.revision, e.billed_credits, e.total_credits),
        (1, C_001_2S, C_001_2S)
    );
    assert_eq!(stack.dlq_depth().await.expect("dlq"), 0);
}

async fn crash_then_resume(step: Step) {
    let stack = TestStack::start("crash").await.expect("stack");
    let at = now() - Duration::minutes(30);
    stack
        .langfuse
        .add_trace(trace("t-crash", "cus_crash", 0.01, 2, at));
    stack.send_traces(&["t-crash"]).await.expect("send");

    let crash = CrashOnce::at(step);
    let report = stack
        .poll_with(&crash, 2)
        .await
        .expect("poll")
        .expect("a batch");
    assert!(
        report.invocation_failed,
        "the injected crash fails the invocation"
    );
    assert_eq!(entry(&stack, "t-crash").await.state, LedgerState::Claimed);

    // The crashed invocation's lease runs to its deadline (+margin); time passes.
    stack.clock.advance(Duration::seconds(60));
    stack.drain(20).await.expect("drained");

    let events = stack.stripe.events();
    assert_eq!(events.len(), 1, "billed exactly once: {events:?}");
    assert_eq!(events[0].value, C_001_2S);
    assert_eq!(
        budget_used(&stack, "cus_crash", at, Period::Month).await,
        (C_001_2S, 0)
    );
    let e = entry(&stack, "t-crash").await;
    assert_eq!(e.state, LedgerState::Metered);
    assert_eq!(e.billed_credits, C_001_2S);
}

#[tokio::test]
async fn a_crash_after_the_claim_resumes_and_bills_once() {
    crash_then_resume(Step::AfterClaim).await;
}

#[tokio::test]
async fn a_crash_after_the_stripe_call_resumes_and_bills_once() {
    crash_then_resume(Step::AfterStripe).await;
}

#[tokio::test]
async fn stripe_duplicate_identifier_means_delivered() {
    let stack = TestStack::start("dupid").await.expect("stack");
    let at = now() - Duration::hours(2);
    stack
        .langfuse
        .add_trace(trace("t-known", "cus_k", 0.01, 2, at));
    // Stripe already has the event (an earlier delivery whose mark was lost).
    stack
        .stripe_client
        .send(&MeterEvent {
            identifier: identifier("t-known", 1),
            customer_id: "cus_k".into(),
            value: C_001_2S,
            timestamp: at.timestamp(),
        })
        .await
        .expect("first delivery");
    stack.send_traces(&["t-known"]).await.expect("send");
    let reports = stack.drain(10).await.expect("drained");
    assert!(reports.iter().all(|r| r.failed == 0), "{reports:?}");
    assert_eq!(stack.stripe.events().len(), 1);
    assert_eq!(entry(&stack, "t-known").await.state, LedgerState::Metered);
}

#[tokio::test]
async fn a_redelivery_after_stripes_dedup_window_is_not_billed_again() {
    let stack = TestStack::start("window").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-window", "cus_w", 0.004, 0, at));
    stack.send_traces(&["t-window"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    let id = identifier("t-window", 1);
    let billed = |stack: &TestStack| {
        let events = stack.stripe.events();
        events.iter().filter(|e| e.identifier == id).count()
    };
    assert_eq!(billed(&stack), 1);

    // A day and an hour later Stripe has forgotten the identifier, and the trace's message
    // comes again (redriven from the dead-letter queue, or sent by another producer).
    stack.stripe.advance(Duration::hours(25));
    stack.clock.advance(Duration::hours(25));
    stack
        .send_traces(&["t-window", "t-window"])
        .await
        .expect("send");
    let reports = stack.drain(10).await.expect("drained");
    assert!(reports.iter().all(|r| r.failed == 0), "{reports:?}");
    assert_eq!(billed(&stack), 1, "the ledger, not Stripe, kept it single");
    assert_eq!(
        stack.stripe.totals_by_customer().get("cus_w"),
        Some(&C_0004)
    );
    assert_eq!(entry(&stack, "t-window").await.billed_credits, C_0004);

    // The control: Stripe itself would take the identifier again now.
    stack
        .stripe_client
        .send(&MeterEvent {
            identifier: id.clone(),
            customer_id: "cus_w".into(),
            value: C_0004,
            timestamp: at.timestamp(),
        })
        .await
        .expect("accepted as new");
    assert_eq!(billed(&stack), 2, "the fake forgot the identifier");
}

/// One transient fault in a batch of three: the `failed` messages it concerns fail with
/// their visibility extended (Stripe v1: the one event's; Langfuse: the batch's one usage
/// read, so all three); the others are billed; the retries bill the rest, once.
async fn transient_fault(label: &str, failed: usize, inject: impl Fn(&TestStack)) {
    let options = StackOptions::default()
        .var("RETRY_BASE_SECONDS", 6)
        .var("RETRY_MAX_SECONDS", 10);
    let options = StackOptions {
        visibility_timeout: Some(1),
        ..options
    };
    let stack = TestStack::start_with(label, options).await.expect("stack");
    let at = now() - Duration::hours(1);
    for (i, cus) in ["cus_a", "cus_b", "cus_c"].iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(&format!("t{i}"), cus, 0.01, 2, at));
    }
    stack.send_traces(&["t0", "t1", "t2"]).await.expect("send");
    inject(&stack);
    // Collect all three in one batch (moto may return fewer per receive).
    let mut batch = Vec::new();
    while batch.len() < 3 {
        let ev = stack
            .esm
            .receive(1)
            .await
            .expect("receive")
            .expect("messages");
        batch.extend(ev.records);
    }
    let mut ev = aws_lambda_events::event::sqs::SqsEvent::default();
    ev.records = batch;
    let result = stack.invoke_with(&NoFaults, ev.clone()).await;
    let response = result.as_ref().expect("no crash").clone();
    assert_eq!(
        response.batch_item_failures.len(),
        failed,
        "{label}: {response:?}"
    );
    let report = stack.esm.complete(&ev, &result).await.expect("complete");
    assert_eq!((report.deleted, report.failed), (3 - failed, failed));
    assert_eq!(
        stack.stripe.events().len(),
        3 - failed,
        "{label}: batch-mates billed"
    );

    // Visibility was extended past the queue's own 1 s: after 1.5 s it is still hidden.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        stack.esm.receive(0).await.expect("receive").is_none(),
        "{label}: still invisible"
    );
    let (_, in_flight) = stack
        .esm
        .depth(&stack.resources.queue_url)
        .await
        .expect("depth");
    assert_eq!(in_flight, failed as i64);

    // They come back and are billed.
    for _ in 0..20 {
        if stack.stripe.events().len() == 3 {
            break;
        }
        if let Some(r) = stack.poll_with(&NoFaults, 1).await.expect("poll") {
            assert_eq!(r.failed, 0, "{label}: {r:?}");
        }
    }
    assert_eq!(
        stack.stripe.events().len(),
        3,
        "{label}: the failed messages came back"
    );
    let totals = stack.stripe.totals_by_customer();
    assert_eq!(
        totals.values().sum::<u64>(),
        3 * C_001_2S,
        "{label}: {totals:?}"
    );
    assert_eq!(stack.stripe.events().len(), 3);
}

#[tokio::test]
async fn stripe_429_is_retried_without_failing_batch_mates() {
    transient_fault("s429", 1, |s| s.stripe.fail_next(1, 429)).await;
}

#[tokio::test]
async fn stripe_500_is_retried_without_failing_batch_mates() {
    transient_fault("s500", 1, |s| s.stripe.fail_next(1, 500)).await;
}

#[tokio::test]
async fn langfuse_429_retries_the_batch_read_and_bills_each_once() {
    transient_fault("l429", 3, |s| s.langfuse.fail_next(1, 429)).await;
}

#[tokio::test]
async fn langfuse_500_retries_the_batch_read_and_bills_each_once() {
    transient_fault("l500", 3, |s| s.langfuse.fail_next(1, 500)).await;
}

#[tokio::test]
async fn twenty_concurrent_invocations_never_pass_a_hard_limit() {
    let stack = TestStack::start("hard20").await.expect("stack");
    let limit = 2_550;
    stack
        .ledger
        .put_budget_policy("cus_h", &hard(limit))
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..40).map(|i| format!("th-{i:02}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_h", 0.004, 0, at));
    }
    // 20 invocations at once, 2 messages each; then re-invoke whatever asked for a retry.
    let mut pending: Vec<String> = ids.clone();
    for round in 0..30 {
        if pending.is_empty() {
            break;
        }
        let events: Vec<(Vec<(String, String)>, _)> = pending
            .chunks(2)
            .enumerate()
            .map(|(i, chunk)| {
                let ids: Vec<(String, String)> = chunk
                    .iter()
                    .map(|id| (format!("r{round}-m{i}-{id}"), id.clone()))
                    .collect();
                let bodies: Vec<(&str, String)> =
                    ids.iter().map(|(m, id)| (m.as_str(), body(id))).collect();
                let ev = event(&bodies);
                (ids, ev)
            })
            .collect();
        let results = futures::future::join_all(
            events
                .iter()
                .map(|(_, ev)| stack.invoke_with(&NoFaults, ev.clone())),
        )
        .await;
        let mut retry = Vec::new();
        for ((ids, _), result) in events.iter().zip(results) {
            let response = result.expect("no crash");
            for f in response.batch_item_failures {
                let (_, id) = ids
                    .iter()
                    .find(|(m, _)| *m == f.item_identifier)
                    .expect("known message");
                retry.push(id.clone());
            }
        }
        pending = retry;
    }
    assert!(pending.is_empty(), "all settled: {pending:?}");

    let (used, capped) = budget_used(&stack, "cus_h", at, Period::Month).await;
    let mut billed = 0;
    let mut capped_sum = 0;
    for id in &ids {
        let e = entry(&stack, id).await;
        assert!(
            matches!(e.state, LedgerState::Metered | LedgerState::Capped),
            "{id}: {e:?}"
        );
        assert_eq!(e.total_credits, C_0004, "{id}");
        billed += e.billed_credits;
        capped_sum += e.capped_credits;
    }
    assert!(used <= limit, "never past the limit: {used}");
    assert_eq!(used, limit, "filled up to the limit");
    assert_eq!(used, billed, "counter equals the ledger");
    assert_eq!(capped, capped_sum);
    assert_eq!(used + capped, 40 * C_0004, "no increment lost");
    assert_eq!(
        stack.stripe.totals_by_customer().get("cus_h").copied(),
        Some(limit)
    );
    let usage = stack
        .ledger
        .budget_usage("cus_h", &Period::Month.key(at))
        .await
        .expect("usage");
    assert!(usage.exceeded, "exceeded flag for the gateway");
}

#[tokio::test]
async fn soft_mode_alerts_once_per_threshold() {
    let stack = TestStack::start("soft").await.expect("stack");
    let logs = Logs::capture();
    let policy = BudgetPolicy {
        limit: Some(1_000),
        period: Period::Month,
        mode: BudgetMode::Soft,
        thresholds: vec![50, 80, 100],
    };
    stack
        .ledger
        .put_budget_policy("cus_s", &policy)
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..14).map(|i| format!("ts-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_s", 0.004, 0, at));
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    // Concurrent invocations racing on the thresholds, plus a duplicate delivery.
    let (a, b) = tokio::join!(stack.drain(30), stack.drain(30));
    a.expect("drain a");
    b.expect("drain b");
    // Every message again, twice, once through the queue and once directly.
    stack.send_traces(&refs).await.expect("send");
    stack.drain(30).await.expect("drain again");
    let bodies: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("again-{id}"), body(id)))
        .collect();
    let again: Vec<(&str, String)> = bodies
        .iter()
        .map(|(m, b)| (m.as_str(), b.clone()))
        .collect();
    stack
        .invoke_with(&NoFaults, event(&again))
        .await
        .expect("no crash");

    // What leaves the system: one alert log line per threshold, whatever was delivered twice.
    let mut alerts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in logs.events() {
        let fields = &e["fields"];
        if fields["alert"] == "budget_threshold" && fields["customer"] == "cus_s" {
            assert_eq!(fields["message"], "budget threshold crossed", "{e}");
            *alerts
                .entry(fields["threshold_pct"].as_u64().expect("threshold_pct"))
                .or_default() += 1;
        }
    }
    assert_eq!(alerts, BTreeMap::from([(50, 1), (80, 1), (100, 1)]));

    assert_eq!(
        stack.stripe.totals_by_customer().get("cus_s").copied(),
        Some(14 * C_0004),
        "soft mode bills past the limit"
    );
    let out = stack
        .ledger
        .client()
        .query()
        .table_name(stack.ledger.table())
        .key_condition_expression("pk = :pk AND begins_with(sk, :alert)")
        .expression_attribute_values(":pk", tracemeter::adapters::dynamo::s("BUDGET#cus_s"))
        .expression_attribute_values(":alert", tracemeter::adapters::dynamo::s("ALERT#"))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    let sks: Vec<String> = out
        .items()
        .iter()
        .filter_map(|i| tracemeter::adapters::dynamo::get_s(i, "sk").map(str::to_string))
        .collect();
    let period = Period::Month.key(at);
    assert_eq!(
        sks,
        vec![
            format!("ALERT#{period}#050"),
            format!("ALERT#{period}#080"),
            format!("ALERT#{period}#100")
        ]
    );
}

#[tokio::test]
async fn usage_near_a_period_boundary_lands_in_its_own_period() {
    let stack = TestStack::start("boundary").await.expect("stack");
    let policy = BudgetPolicy {
        limit: Some(1_000_000),
        period: Period::Day,
        mode: BudgetMode::Hard,
        thresholds: vec![100],
    };
    stack
        .ledger
        .put_budget_policy("cus_p", &policy)
        .await
        .expect("policy");
    // Midnight UTC between two days that are safely in the past.
    let today = Utc::now()
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("midnight");
    let midnight = today - Duration::days(1);
    let before = midnight - Duration::milliseconds(500);
    let after = midnight + Duration::milliseconds(500);
    stack
        .langfuse
        .add_trace(trace("t-before", "cus_p", 0.004, 0, before));
    stack
        .langfuse
        .add_trace(trace("t-after", "cus_p", 0.008, 0, after));
    stack
        .send_traces(&["t-before", "t-after"])
        .await
        .expect("send");
    stack.drain(10).await.expect("drained");
    assert_eq!(
        budget_used(&stack, "cus_p", before, Period::Day).await.0,
        C_0004
    );
    assert_eq!(
        budget_used(&stack, "cus_p", after, Period::Day).await.0,
        2 * C_0004
    );
    assert_ne!(Period::Day.key(before), Period::Day.key(after));
}

#[tokio::test]
async fn compute_credits_use_latency_in_seconds_and_byo_key_has_no_ai_cost() {
    let stack = TestStack::start("credits").await.expect("stack");
    let at = now() - Duration::hours(1);
    // 90 s at 0.05 USD/min = 0.075 USD = 1875 credits (not 1: latency is in seconds).
    stack
        .langfuse
        .add_trace(trace("t-90s", "cus_c", 0.0, 90, at));
    // BYO key: 1.5 USD of model cost is the customer's; 60 s compute = 0.05 USD = 1250.
    stack
        .langfuse
        .add_trace(trace("t-byo", "cus_c", 1.5, 60, at).meta("aiCredentialsOwnership", "user"));
    // Same without BYO: (1.5 + 0.05) / 0.00004 = 38750.
    stack
        .langfuse
        .add_trace(trace("t-own", "cus_c", 1.5, 60, at));
    stack
        .send_traces(&["t-90s", "t-byo", "t-own"])
        .await
        .expect("send");
    stack.drain(10).await.expect("drained");
    let by_id: BTreeMap<String, u64> = stack
        .stripe
        .events()
        .into_iter()
        .map(|e| (e.identifier, e.value))
        .collect();
    assert_eq!(by_id.get(&identifier("t-90s", 1)), Some(&1875));
    assert_eq!(by_id.get(&identifier("t-byo", 1)), Some(&1250));
    assert_eq!(by_id.get(&identifier("t-own", 1)), Some(&38_750));
}

#[tokio::test]
async fn permanent_failures_are_recorded_with_their_reason_and_acknowledged() {
    let stack = TestStack::start("perm").await.expect("stack");
    let at = now() - Duration::hours(1);
    // No metadata, a user without mapping, no default customer.
    stack.langfuse.add_trace(
        FakeTrace::new("t-unmapped", at)
            .user("u-nobody")
            .observation(FakeObservation::generation(
                "o1",
                "t-unmapped",
                at,
                at,
                "gpt-4o",
                10,
                10,
                0.01,
            )),
    );
    // Usage older than Stripe's 35 days.
    let old = now() - Duration::days(40);
    stack
        .langfuse
        .add_trace(trace("t-old", "cus_x", 0.01, 2, old));
    // Mapped through the user table: billed.
    stack
        .langfuse
        .add_trace(FakeTrace::new("t-mapped", at).user("u-42").observation(
            FakeObservation::generation("o2", "t-mapped", at, at, "gpt-4o", 10, 10, 0.004),
        ));
    stack
        .ledger
        .put_user_mapping("u-42", "cus_mapped")
        .await
        .expect("mapping");
    stack
        .send_bodies(&[
            body("t-unmapped"),
            body("t-unknown"),
            body("t-old"),
            body("t-mapped"),
            "this is not json".to_string(),
            r#"{"trace":"missing the traceId key"}"#.to_string(),
        ])
        .await
        .expect("send");
    let reports = stack.drain(10).await.expect("drained");
    assert!(
        reports
            .iter()
            .all(|r| r.failed == 0 && !r.invocation_failed),
        "no retry loop: {reports:?}"
    );
    assert_eq!(stack.dlq_depth().await.expect("dlq"), 0);

    for (id, reason) in [
        ("t-unmapped", "unmapped_customer"),
        ("t-unknown", "trace_not_found"),
        ("t-old", "usage_too_old"),
    ] {
        let e = entry(&stack, id).await;
        assert_eq!(e.state, LedgerState::Failed, "{id}");
        assert_eq!(e.reason.as_deref(), Some(reason), "{id}");
        assert!(
            e.detail.as_deref().unwrap_or_default().contains(id),
            "{id}: the detail names the trace: {:?}",
            e.detail
        );
    }
    // The malformed messages are recorded by message id.
    let out = stack
        .ledger
        .client()
        .scan()
        .table_name(stack.ledger.table())
        .filter_expression("begins_with(pk, :m)")
        .expression_attribute_values(":m", tracemeter::adapters::dynamo::s("MESSAGE#"))
        .send()
        .await
        .expect("scan");
    assert_eq!(out.items().len(), 2);
    for item in out.items() {
        assert_eq!(
            tracemeter::adapters::dynamo::get_s(item, "reason"),
            Some("malformed_message")
        );
        assert!(tracemeter::adapters::dynamo::get_s(item, "body").is_some());
    }
    let totals = stack.stripe.totals_by_customer();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!(totals.get("cus_mapped"), Some(&C_0004));
}

#[tokio::test]
async fn late_cost_is_billed_once_as_a_new_revision() {
    let stack = TestStack::start("late").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-late", "cus_l", 0.004, 0, at));
    stack.send_traces(&["t-late"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    // A late observation adds 0.008 USD = 200 credits.
    stack.langfuse.add_observation(FakeObservation::generation(
        "t-late-gen-2",
        "t-late",
        at + Duration::seconds(1),
        at + Duration::seconds(1),
        "claude-3-5-haiku",
        800,
        200,
        0.008,
    ));
    stack
        .send_traces(&["t-late", "t-late", "t-late"])
        .await
        .expect("send");
    stack.drain(20).await.expect("drained");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let second = events
        .iter()
        .find(|e| e.identifier == identifier("t-late", 2))
        .expect("revision 2");
    // Total is (0.004 + 0.008) USD over 1 s of latency: 0.012 + 0.000833 = 0.012833 -> 321.
    assert_eq!(second.value, 321 - C_0004);
    let e = entry(&stack, "t-late").await;
    assert_eq!(
        (e.revision, e.total_credits, e.billed_credits),
        (2, 321, 321)
    );
    assert_eq!(budget_used(&stack, "cus_l", at, Period::Month).await.0, 321);
}

#[tokio::test]
async fn a_claim_back_after_the_dedup_window_is_ambiguous_not_resent() {
    let stack = TestStack::start("ambig").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-amb", "cus_amb", 0.004, 0, at));
    stack.send_traces(&["t-amb"]).await.expect("send");
    let report = stack
        .poll_with(&CrashOnce::at(Step::AfterClaim), 2)
        .await
        .expect("poll")
        .expect("batch");
    assert!(report.invocation_failed);
    // The message comes back a day later (say, redriven from the DLQ).
    stack.clock.advance(Duration::hours(24));
    stack.drain(10).await.expect("drained");
    assert!(stack.stripe.events().is_empty(), "not resent blindly");
    let e = entry(&stack, "t-amb").await;
    assert_eq!(e.state, LedgerState::Ambiguous);
    assert_eq!(
        e.pending.as_ref().map(|p| p.identifier.clone()),
        Some(identifier("t-amb", 1))
    );
}

#[tokio::test]
async fn one_customers_messages_in_a_batch_do_not_overlap_at_stripe() {
    let stack = TestStack::start("percus").await.expect("stack");
    stack
        .stripe
        .set_latency(std::time::Duration::from_millis(40));
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..10).map(|i| format!("tc-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_one", 0.004, 0, at));
    }
    let bodies: Vec<(String, String)> =
        ids.iter().map(|id| (format!("m-{id}"), body(id))).collect();
    let refs: Vec<(&str, String)> = bodies
        .iter()
        .map(|(m, b)| (m.as_str(), b.clone()))
        .collect();
    let response = stack
        .invoke_with(&NoFaults, event(&refs))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(stack.stripe.concurrency_violations(), 0);
    assert_eq!(stack.stripe.events().len(), 10);
}

#[tokio::test]
async fn a_permanent_stripe_rejection_gives_the_budget_back() {
    let stack = TestStack::start("reject").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-rej", "cus_rej", 0.004, 0, at));
    stack.stripe.fail_next(1, 400);
    stack.send_traces(&["t-rej"]).await.expect("send");
    let reports = stack.drain(10).await.expect("drained");
    assert!(reports.iter().all(|r| r.failed == 0), "{reports:?}");
    let e = entry(&stack, "t-rej").await;
    assert_eq!(e.state, LedgerState::Failed);
    assert_eq!(e.reason.as_deref(), Some("stripe_rejected"));
    assert_eq!(
        budget_used(&stack, "cus_rej", at, Period::Month).await,
        (0, 0)
    );
}

#[tokio::test]
async fn the_harness_points_every_aws_call_at_loopback() {
    let stack = TestStack::start("loopback").await.expect("stack");
    let env = &stack.env;
    assert_eq!(
        env.get("AWS_EC2_METADATA_DISABLED").map(String::as_str),
        Some("true")
    );
    assert!(env.contains_key("AWS_ACCESS_KEY_ID") && env.contains_key("AWS_SECRET_ACCESS_KEY"));
    assert!(env.contains_key("AWS_REGION"));
    for var in [
        "AWS_ENDPOINT_URL",
        "LANGFUSE_BASE_URL",
        "STRIPE_API_BASE",
        "STRIPE_METER_EVENTS_BASE",
        "QUEUE_URL",
    ] {
        let url = reqwest::Url::parse(&env[var]).expect(var);
        assert!(
            tracemeter::config::is_loopback_host(url.host_str().unwrap_or_default()),
            "{var}={} is not loopback",
            env[var]
        );
    }
}

#[tokio::test]
async fn a_batch_shares_the_hard_limit_in_trace_order() {
    let stack = TestStack::start("batchcap").await.expect("stack");
    stack
        .ledger
        .put_budget_policy("cus_b", &hard(550))
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..10).map(|i| format!("tb-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_b", 0.004, 0, at));
    }
    // Reverse order in the batch: the split follows the trace ids, not the message order.
    let bodies: Vec<(String, String)> = ids
        .iter()
        .rev()
        .map(|id| (format!("m-{id}"), body(id)))
        .collect();
    let refs: Vec<(&str, String)> = bodies
        .iter()
        .map(|(m, b)| (m.as_str(), b.clone()))
        .collect();
    let response = stack
        .invoke_with(&NoFaults, event(&refs))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    for (i, id) in ids.iter().enumerate() {
        let e = entry(&stack, id).await;
        let (billed, capped, state) = match i {
            0..=4 => (C_0004, 0, LedgerState::Metered),
            5 => (50, 50, LedgerState::Metered),
            _ => (0, C_0004, LedgerState::Capped),
        };
        assert_eq!(
            (e.state, e.billed_credits, e.capped_credits, e.total_credits),
            (state, billed, capped, C_0004),
            "{id}"
        );
    }
    assert_eq!(
        budget_used(&stack, "cus_b", at, Period::Month).await,
        (550, 450)
    );
    assert_eq!(stack.stripe.totals_by_customer().get("cus_b"), Some(&550));
    assert_eq!(stack.stripe.events().len(), 6);
}

#[tokio::test]
async fn overlapping_batches_bill_each_trace_once() {
    let stack = TestStack::start("overlap").await.expect("stack");
    stack
        .ledger
        .put_budget_policy("cus_o", &hard(1_000_000))
        .await
        .expect("policy");
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..8).map(|i| format!("to-{i}")).collect();
    for id in &ids {
        stack.langfuse.add_trace(trace(id, "cus_o", 0.004, 0, at));
    }
    // Five concurrent batches of one customer, each overlapping the next: a claim whose
    // entries were taken by another batch drops those and claims the rest.
    let events: Vec<_> = (0..5)
        .map(|b| {
            let bodies: Vec<(String, String)> = (b..b + 4)
                .map(|i| (format!("b{b}-m{i}"), body(&ids[i % ids.len()])))
                .collect();
            let refs: Vec<(&str, String)> = bodies
                .iter()
                .map(|(m, body)| (m.as_str(), body.clone()))
                .collect();
            event(&refs)
        })
        .collect();
    let results = futures::future::join_all(
        events
            .iter()
            .map(|ev| stack.invoke_with(&NoFaults, ev.clone())),
    )
    .await;
    for r in results {
        r.expect("no crash");
    }
    // Whatever asked for a retry (a claim still leased by another batch) comes back.
    stack.clock.advance(Duration::seconds(60));
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(20).await.expect("drained");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(
        budget_used(&stack, "cus_o", at, Period::Month).await,
        (8 * C_0004, 0)
    );
    for id in &ids {
        let e = entry(&stack, id).await;
        assert_eq!((e.state, e.billed_credits), (LedgerState::Metered, C_0004));
    }
}

#[tokio::test]
async fn a_claim_without_a_receipt_is_resumed_and_marked_on_its_entry() {
    use tracemeter::domain::claim::{BilledUsage, Claim, ClaimBatch, ClaimResult, Expect, Settled};
    use tracemeter::domain::ledger::PendingClaim;
    let stack = TestStack::start("noreceipt").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-old-claim", "cus_nr", 0.004, 0, at));
    // A claim written before receipts existed (no `p_receipt`), whose invocation died.
    let period = Period::Month.key(at);
    let claimed = stack
        .ledger
        .claim_batch(&ClaimBatch {
            customer_id: "cus_nr".into(),
            period: period.clone(),
            hard_limit: None,
            limit: None,
            claims: vec![Claim {
                trace_id: "t-old-claim".into(),
                expect: Expect::Absent,
                settled: Settled::default(),
                pending: PendingClaim {
                    revision: 1,
                    identifier: identifier("t-old-claim", 1),
                    customer_id: "cus_nr".into(),
                    billable: C_0004,
                    capped: 0,
                    total_after: C_0004,
                    event_timestamp: at.timestamp(),
                    period,
                    claimed_at: now() - Duration::minutes(5),
                    lease_until: now() - Duration::minutes(1),
                    receipt: None,
                },
                usage_at: at,
                last_observation_at: None,
                seen: BilledUsage::default(),
            }],
            now: now(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed, ClaimResult::Claimed);
    stack.send_traces(&["t-old-claim"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    assert_eq!(stack.stripe.events().len(), 1);
    let raw = stack
        .ledger
        .raw(tracemeter::adapters::dynamo::trace_key("t-old-claim"))
        .await
        .expect("read")
        .expect("item");
    assert_eq!(
        tracemeter::adapters::dynamo::get_s(&raw, "state"),
        Some("metered"),
        "marked on the entry itself"
    );
    let e = entry(&stack, "t-old-claim").await;
    assert_eq!((e.revision, e.billed_credits), (1, C_0004));
    assert_eq!(
        budget_used(&stack, "cus_nr", at, Period::Month).await,
        (C_0004, 0)
    );
}
