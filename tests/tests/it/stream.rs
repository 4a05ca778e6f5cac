//! The Stripe v2 meter event stream path (`STRIPE_API_MODE=v2_stream`): a batch's claimed
//! events go in as few stream requests as possible, exactly once under redelivery, lost
//! responses, crashes after the stream call and expired session tokens.

use crate::common::{CrashOnce, body, entry, event, now, trace};
use chrono::Duration;
use std::collections::BTreeMap;
use tracemeter::config::StripeApiMode;
use tracemeter::domain::budget::Period;
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::meter::identifier;
use tracemeter::domain::meter::{Delivery, MeterEvent};
use tracemeter::ports::{BudgetStore, MeterSink};
use tracemeter_local::faults::{NoFaults, Step};
use tracemeter_local::harness::{StackOptions, TestStack};

// 0.004 USD, no latency = 100 credits.
const C_0004: u64 = 100;

async fn stream_stack(label: &str) -> TestStack {
    let options = StackOptions::default().var("STRIPE_API_MODE", "v2_stream");
    TestStack::start_with(label, options).await.expect("stack")
}

/// Ten traces over five customers; returns their ids.
fn seed(stack: &TestStack, prefix: &str, at: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let ids: Vec<String> = (0..10).map(|i| format!("{prefix}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(id, &format!("cus_{prefix}_{}", i % 5), 0.004, 0, at));
    }
    ids
}

fn batch(ids: &[String], tag: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let bodies: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("{tag}-{id}"), body(id)))
        .collect();
    event(&bodies)
}

async fn assert_billed_once(stack: &TestStack, ids: &[String], prefix: &str) {
    let events = stack.stripe.events();
    assert_eq!(events.len(), ids.len(), "{events:?}");
    let expected: BTreeMap<String, u64> = (0..5)
        .map(|c| (format!("cus_{prefix}_{c}"), 2 * C_0004))
        .collect();
    assert_eq!(stack.stripe.totals_by_customer(), expected);
    for id in ids {
        let e = entry(stack, id).await;
        assert_eq!(
            (e.state, e.billed_credits),
            (LedgerState::Metered, C_0004),
            "{id}"
        );
        assert!(events.iter().any(|ev| ev.identifier == identifier(id, 1)));
    }
    let at = now() - Duration::hours(1);
    for c in 0..5 {
        let usage = stack
            .ledger
            .budget_usage(&format!("cus_{prefix}_{c}"), &Period::Month.key(at))
            .await
            .expect("usage");
        assert_eq!(usage.used, 2 * C_0004);
    }
}

#[tokio::test]
async fn a_batch_goes_in_one_stream_request_and_redelivery_bills_nothing_twice() {
    let stack = stream_stack("stream1").await;
    let at = now() - Duration::hours(1);
    let ids = seed(&stack, "ts", at);
    let response = stack
        .invoke_with(&NoFaults, batch(&ids, "a"))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(stack.stripe.stream_batches(), vec![10], "one request");
    assert_eq!(stack.stripe.sessions_created(), 1);
    assert!(
        stack
            .stripe
            .requests()
            .iter()
            .all(|r| r.path.starts_with("/v2/billing/")),
        "nothing through v1"
    );
    assert!(
        stack
            .stripe
            .requests()
            .iter()
            .all(|r| r.header("stripe-version").is_some())
    );

    // The same messages again, at once, and through the queue.
    let (a, b) = tokio::join!(
        stack.invoke_with(&NoFaults, batch(&ids, "b")),
        stack.invoke_with(&NoFaults, batch(&ids[3..], "c")),
    );
    a.expect("no crash");
    b.expect("no crash");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(20).await.expect("drained");

    assert_billed_once(&stack, &ids, "ts").await;
    assert_eq!(stack.stripe.stream_batches(), vec![10], "nothing resent");
    assert_eq!(stack.stripe.sessions_created(), 1, "the token is reused");
}

#[tokio::test]
async fn a_crash_after_the_stream_call_resumes_and_bills_once() {
    let stack = stream_stack("stream2").await;
    let at = now() - Duration::hours(1);
    let ids = seed(&stack, "tc", at);
    let result = stack
        .invoke_with(&CrashOnce::at(Step::AfterStripe), batch(&ids, "a"))
        .await;
    assert!(result.is_err(), "the injected crash fails the invocation");
    assert_eq!(
        stack.stripe.events().len(),
        10,
        "Stripe accepted the request"
    );
    for id in &ids {
        assert_eq!(entry(&stack, id).await.state, LedgerState::Claimed, "{id}");
    }
    // The whole batch comes back after the crashed invocation's lease: the claims are taken
    // over (each conditional on its receipt not listing it) and sent again in one stream
    // request, and recorded in the crashed invocation's receipt with one write.
    stack.clock.advance(Duration::seconds(60));
    stack.dynamo_writes.reset();
    let again = stack
        .invoke_with(&NoFaults, batch(&ids, "b"))
        .await
        .expect("no crash");
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    assert_eq!(stack.stripe.stream_batches(), vec![10, 10]);
    let writes = stack.dynamo_writes.ops();
    // A take-over pins the entry's claim and checks its receipt in one transaction.
    let take_overs = writes
        .iter()
        .filter(|w| {
            let families: Vec<&str> = w
                .items
                .iter()
                .map(|k| &k.0[..k.0.find('#').unwrap_or(0)])
                .collect();
            w.operation == "TransactWriteItems" && families == ["TRACE", "RECEIPT"]
        })
        .count();
    let receipts = writes
        .iter()
        .filter(|w| w.items.iter().all(|k| k.0.starts_with("RECEIPT#")))
        .count();
    assert_eq!(
        (take_overs, receipts, writes.len()),
        (10, 1, 11),
        "{writes:#?}"
    );
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(20).await.expect("drained");
    assert_billed_once(&stack, &ids, "tc").await;
    // The resumed sends reached Stripe again and were dropped as repeats.
    let repeats = stack.stripe.stream_errors();
    assert_eq!(repeats.len(), 10, "{repeats:?}");
    assert!(repeats.iter().all(|e| e.contains("already exists")));
}

#[tokio::test]
async fn a_lost_stream_response_and_a_429_are_retried_exactly_once() {
    let options = StackOptions::default().var("STRIPE_API_MODE", "v2_stream");
    let options = StackOptions {
        visibility_timeout: Some(1),
        ..options
    };
    let stack = TestStack::start_with("stream3", options)
        .await
        .expect("stack");
    let at = now() - Duration::hours(1);
    let ids = seed(&stack, "tl", at);
    // The first request is recorded but its answer lost (retried); the next is throttled
    // (deferred).
    stack.stripe.fail_after_record_next(1);
    let first = stack
        .invoke_with(&NoFaults, batch(&ids[..5], "a"))
        .await
        .expect("no crash");
    assert_eq!(first.batch_item_failures.len(), 5, "retried: {first:?}");
    stack.stripe.fail_next(1, 429);
    let second = stack
        .invoke_with(&NoFaults, batch(&ids[5..], "b"))
        .await
        .expect("no crash");
    // A 429 asks to wait: the five are deferred (sent again with a delay), not failed.
    assert!(
        second.batch_item_failures.is_empty(),
        "deferred: {second:?}"
    );
    // The claims were released: the retries resume them at once.
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(20).await.expect("drained");
    assert_billed_once(&stack, &ids, "tl").await;
    assert_eq!(stack.stripe.concurrency_violations(), 0);
}

#[tokio::test]
async fn a_batch_of_150_claimed_events_goes_in_two_stream_requests() {
    let stack = stream_stack("stream150").await;
    let at = now() - Duration::hours(1);
    let ids: Vec<String> = (0..150).map(|i| format!("tx-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let customer = format!("cus_tx_{}", i % 5);
        stack.langfuse.add_trace(trace(id, &customer, 0.004, 0, at));
    }
    let response = stack
        .invoke_with(&NoFaults, batch(&ids, "a"))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(stack.stripe.stream_batches(), vec![100, 50], "two requests");
    assert_eq!(stack.stripe.sessions_created(), 1);
    assert!(stack.stripe.stream_errors().is_empty());

    // Every trace billed once, under its own identifier.
    let events = stack.stripe.events();
    assert_eq!(events.len(), 150);
    let identifiers: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.identifier.as_str()).collect();
    let expected: std::collections::BTreeSet<String> =
        ids.iter().map(|id| identifier(id, 1)).collect();
    assert!(
        identifiers
            .iter()
            .copied()
            .eq(expected.iter().map(String::as_str))
    );
    let totals = stack.stripe.totals_by_customer();
    assert_eq!(totals.len(), 5);
    assert!(totals.values().all(|t| *t == 30 * C_0004), "{totals:?}");
    for id in &ids {
        let e = entry(&stack, id).await;
        assert_eq!(
            (e.state, e.billed_credits),
            (LedgerState::Metered, C_0004),
            "{id}"
        );
    }

    // The same batch again: nothing is sent.
    let again = stack
        .invoke_with(&NoFaults, batch(&ids, "b"))
        .await
        .expect("no crash");
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    assert_eq!(
        stack.stripe.stream_batches(),
        vec![100, 50],
        "nothing resent"
    );
}

#[tokio::test]
async fn the_stream_client_renews_expired_sessions_and_splits_at_100_events() {
    let stack = TestStack::start("stream4").await.expect("stack");
    let client = stack.stripe_client.with_mode(StripeApiMode::V2Stream);
    assert!(client.batches());
    let at = now() - Duration::hours(2);
    let events: Vec<MeterEvent> = (0..250)
        .map(|i| MeterEvent {
            identifier: format!("tm_s{i}_r1"),
            customer_id: format!("cus_{}", i % 7),
            value: 3,
            timestamp: at.timestamp(),
        })
        .collect();
    let results = client.send_batch(&events).await;
    assert_eq!(results.len(), 250);
    assert!(results.iter().all(|r| matches!(r, Ok(Delivery::Recorded))));
    assert_eq!(stack.stripe.stream_batches(), vec![100, 100, 50]);
    assert_eq!(stack.stripe.sessions_created(), 1);

    // An expired token: 401 billing_meter_event_session_expired, a new session, resent.
    stack.stripe.expire_sessions();
    let again = client.send_batch(&events[..3]).await;
    assert!(again.iter().all(|r| r.is_ok()), "{again:?}");
    assert_eq!(stack.stripe.sessions_created(), 2);
    let expired = stack
        .stripe
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert_eq!(expired, 1);
    // Repeats are accepted and dropped: 250 events, 3 reported as repeats.
    assert_eq!(stack.stripe.events().len(), 250);
    assert_eq!(stack.stripe.stream_errors().len(), 3);
    assert_eq!(stack.stripe.totals_by_customer().values().sum::<u64>(), 750);
    // The events are the v1 events' equals: same identifiers, values, timestamps.
    let recorded = &stack.stripe.events()[0];
    assert_eq!(
        (
            recorded.identifier.as_str(),
            recorded.value,
            recorded.timestamp
        ),
        ("tm_s0_r1", 3, at.timestamp())
    );
}
