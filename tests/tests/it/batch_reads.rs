//! Batch usage reads (v2) through the real handler, the Langfuse fake over HTTP and moto:
//! a batch of 100 traces costs at most 2 Langfuse requests, none once billed, absent traces
//! are `trace_not_found`, a trace of more than 1,000 observations is priced completely, and
//! a handler near its deadline bills what it reaches and returns the rest.

use crate::common::{entry, event, now, trace};
use chrono::{DateTime, Duration, Utc};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::message::MeterMessage;
use tracemeter_local::fakes::langfuse::FakeObservation;
use tracemeter_local::faults::NoFaults;
use tracemeter_local::harness::{StackOptions, TestStack};

/// 0.004 USD, no latency = 100 credits.
const C_0004: u64 = 100;
const OBSERVATIONS: &str = "/api/public/v2/observations";

/// `n` traces over five customers, an hour ago; their ids and time.
fn seed(stack: &TestStack, prefix: &str, n: usize) -> (Vec<String>, DateTime<Utc>) {
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let customer = format!("cus_{prefix}_{}", i % 5);
        stack.langfuse.add_trace(trace(id, &customer, 0.004, 0, at));
    }
    (ids, at)
}

/// One message per trace, carrying the newest usage time ingest would have listed.
fn batch(
    ids: &[String],
    newest: Option<DateTime<Utc>>,
    tag: &str,
) -> aws_lambda_events::event::sqs::SqsEvent {
    let bodies: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            let m = MeterMessage {
                newest_observation: newest,
                ..MeterMessage::new(id.as_str())
            };
            (format!("{tag}-{id}"), m.to_body())
        })
        .collect();
    event(&bodies)
}

/// Langfuse usage reads made so far.
fn usage_reads(stack: &TestStack) -> usize {
    stack
        .langfuse
        .requests()
        .iter()
        .filter(|r| r.path == OBSERVATIONS)
        .count()
}

#[tokio::test]
async fn a_batch_of_100_costs_at_most_2_requests_and_none_once_billed() {
    let options = StackOptions::default().var("STRIPE_API_MODE", "v2_stream");
    let stack = TestStack::start_with("batchread1", options)
        .await
        .expect("stack");
    let (ids, at) = seed(&stack, "br", 100);

    let response = stack
        .invoke_with(&NoFaults, batch(&ids, Some(at), "a"))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let reads = usage_reads(&stack);
    assert!(
        (1..=2).contains(&reads),
        "{reads} Langfuse requests for 100 traces"
    );
    assert_eq!(
        stack.stripe.stream_batches(),
        vec![100],
        "one stream request"
    );
    assert_eq!(stack.stripe.events().len(), 100);

    // The same batch again: the ledger settles it, Langfuse is not asked.
    let again = stack
        .invoke_with(&NoFaults, batch(&ids, Some(at), "b"))
        .await
        .expect("no crash");
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    assert_eq!(
        usage_reads(&stack),
        reads,
        "no Langfuse request for a billed batch"
    );
    assert_eq!(stack.stripe.events().len(), 100);
}

#[tokio::test]
async fn traces_absent_from_the_answer_are_not_found_and_long_traces_are_complete() {
    let stack = TestStack::start("batchread2").await.expect("stack");
    let (mut ids, at) = seed(&stack, "bn", 5);
    // A trace of 1,500 observations of 0.004 USD: two pages of the batch read.
    let mut long = trace("bn-long", "cus_long", 0.004, 0, at);
    // All at the trace's start (no latency): 1,500 x 100 credits exactly.
    for i in 1..1500 {
        long = long.observation(FakeObservation::generation(
            format!("bn-long-{i}"),
            "bn-long",
            at,
            at,
            "gpt-4o-mini",
            10,
            10,
            0.004,
        ));
    }
    stack.langfuse.add_trace(long);
    ids.extend([
        "bn-long".to_string(),
        "bn-gone-1".into(),
        "bn-gone-2".into(),
    ]);

    let response = stack
        .invoke_with(&NoFaults, batch(&ids, None, "a"))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    for gone in ["bn-gone-1", "bn-gone-2"] {
        let e = entry(&stack, gone).await;
        assert_eq!(
            (e.state, e.reason.as_deref()),
            (LedgerState::Failed, Some("trace_not_found"))
        );
    }
    let long = entry(&stack, "bn-long").await;
    assert_eq!(long.state, LedgerState::Metered);
    assert_eq!(
        long.billed_credits,
        1500 * C_0004,
        "every observation priced"
    );
    assert_eq!(usage_reads(&stack), 2, "two pages of one chunk");
    assert_eq!(stack.stripe.events().len(), 6);
}

#[tokio::test]
async fn a_handler_near_its_deadline_bills_what_it_reaches_and_returns_the_rest() {
    let stack = TestStack::start("batchread3").await.expect("stack");
    let (ids, at) = seed(&stack, "bd", 300);
    stack
        .langfuse
        .set_latency(std::time::Duration::from_millis(1200));

    // 3.5 s left, a 3 s margin: the first slice starts, and after it no other fits.
    let deadline = tracemeter::clock::Clock::now(&stack.clock) + Duration::milliseconds(3500);
    let response = process::handle(&stack.deps(), batch(&ids, Some(at), "a"), deadline).await;

    let failed: Vec<String> = response
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let unreached: Vec<String> = ids[100..].iter().map(|id| format!("a-{id}")).collect();
    assert_eq!(failed, unreached);
    assert_eq!(stack.stripe.events().len(), 100);
    for id in &ids[..100] {
        assert_eq!(entry(&stack, id).await.state, LedgerState::Metered, "{id}");
    }
    assert_eq!(usage_reads(&stack), 1, "the unreached were not read");
}

/// Cost added to an observation already billed (Langfuse moves its `updatedAt`, not its
/// `startTime`) is read and billed as a second revision of the difference, through the
/// fake's HTTP answer and the real batch read.
#[tokio::test]
async fn cost_added_to_a_billed_observation_is_billed_as_a_revision() {
    let stack = TestStack::start("costadd").await.expect("stack");
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("t-grow", "cus_grow", 0.004, 0, at));
    let first = stack
        .invoke_with(&NoFaults, batch(&["t-grow".to_string()], Some(at), "a"))
        .await
        .expect("no crash");
    assert!(first.batch_item_failures.is_empty(), "{first:?}");
    assert_eq!(stack.stripe.totals_by_customer()["cus_grow"], C_0004);

    // The same observation now costs twice as much, updated 20 minutes ago.
    let updated = now() - Duration::minutes(20);
    assert!(stack.langfuse.remove_trace("t-grow"));
    let grown = FakeObservation::generation(
        "t-grow-gen",
        "t-grow",
        at,
        at,
        "gpt-4o-mini",
        1200,
        300,
        0.008,
    )
    .raw_field("updatedAt", Some(serde_json::json!(updated.to_rfc3339())));
    stack.langfuse.add_trace(
        tracemeter_local::fakes::langfuse::FakeTrace::new("t-grow", at)
            .meta("stripeCustomerId", "cus_grow")
            .observation(grown),
    );
    let second = stack
        .invoke_with(
            &NoFaults,
            batch(&["t-grow".to_string()], Some(updated), "b"),
        )
        .await
        .expect("no crash");
    assert!(second.batch_item_failures.is_empty(), "{second:?}");
    let e = entry(&stack, "t-grow").await;
    assert_eq!((e.state, e.revision), (LedgerState::Metered, 2), "{e:?}");
    assert_eq!(stack.stripe.totals_by_customer()["cus_grow"], 2 * C_0004);
    assert_eq!(stack.stripe.events().len(), 2, "one event per revision");

    // Delivered again, nothing more.
    stack
        .invoke_with(
            &NoFaults,
            batch(&["t-grow".to_string()], Some(updated), "c"),
        )
        .await
        .expect("no crash");
    assert_eq!(stack.stripe.events().len(), 2);
    let after = entry(&stack, "t-grow").await;
    assert_eq!(after.state, LedgerState::Metered);
    assert_eq!(after, e, "the redelivery changed nothing");
}
