//! Transient faults retried (a Stripe v1 event's without failing batch-mates, a Langfuse
//! batch read's for the whole batch); throttles (429s) deferred as new messages; permanent
//! failures recorded and acknowledged.

use super::*;

/// One transient fault (not a throttle) in a batch of three: the `failed` messages it
/// concerns fail with their visibility extended (Stripe v1: the one event's; Langfuse: the
/// batch's one usage read, so all three); the others are billed; the retries bill the rest,
/// once.
async fn transient_fault(label: &str, failed: usize, inject: impl Fn(&TestStack)) {
    // Stripe v1: a fault concerns one event (the v2 stream's request carries them all).
    let options = StackOptions::default()
        .var("STRIPE_API_MODE", "v1")
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
    let ev = receive_all(&stack, 3).await;
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
    let billed = stack.stripe.events().len();
    assert_eq!(billed, 3, "{label}: the failed messages came back");
    let totals = stack.stripe.totals_by_customer();
    assert_eq!(
        totals.values().sum::<u64>(),
        3 * C_001_2S,
        "{label}: {totals:?}"
    );
    assert_eq!(stack.stripe.events().len(), 3);
}

#[tokio::test]
async fn stripe_500_is_retried_without_failing_batch_mates() {
    transient_fault("s500", 1, |s| s.stripe.fail_next(1, 500)).await;
}

/// Another caller keeps cus_a's one concurrent slot past the in-process tries: its message
/// is deferred, its batch mates billed, and it bills once when the slot is free.
#[tokio::test]
async fn stripe_429_defers_its_message_without_failing_batch_mates() {
    throttle(
        "s429",
        1,
        |s| s.stripe.hold_customer("cus_a"),
        |s| s.stripe.release_customer("cus_a"),
    )
    .await;
}

/// A 429 for a customer slot that frees soon (another instance's request of ~100 ms) is
/// waited out in-process: the event is sent again with the same idempotency key, nothing
/// is deferred or failed, each trace is billed once.
#[tokio::test]
async fn a_short_stripe_429_is_waited_out_and_sent_again() {
    let options = StackOptions::default().var("STRIPE_API_MODE", "v1");
    let stack = TestStack::start_with("s429short", options)
        .await
        .expect("stack");
    let at = now() - Duration::hours(1);
    for (i, cus) in ["cus_a", "cus_b", "cus_c"].iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(&format!("t{i}"), cus, 0.01, 2, at));
    }
    stack.send_traces(&["t0", "t1", "t2"]).await.expect("send");
    let ev = receive_all(&stack, 3).await;
    stack.stripe.hold_customer("cus_a");
    let stripe = stack.stripe.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stripe.release_customer("cus_a");
    });
    let result = stack.invoke_with(&NoFaults, ev.clone()).await;
    release.await.expect("release");
    let response = result.as_ref().expect("no crash").clone();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let report = stack.esm.complete(&ev, &result).await.expect("complete");
    assert_eq!(report.deleted, 3);
    let events = stack.stripe.events();
    assert_eq!(events.len(), 3, "{events:?}");
    let requests = stack.stripe.requests();
    let for_a: Vec<_> = requests
        .iter()
        .filter(|r| r.body.contains("cus_a"))
        .collect();
    assert!(for_a.len() >= 2, "a 429 then the retry: {for_a:?}");
    assert_eq!(for_a[0].status, 429);
    let keys: std::collections::HashSet<_> = for_a
        .iter()
        .map(|r| r.headers.get("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 1, "one idempotency key: {for_a:?}");
}

#[tokio::test]
async fn a_langfuse_rate_limit_defers_the_batch_and_bills_each_once() {
    // Langfuse's window is spent for the next 60 s: longer than a read sits out.
    throttle(
        "l429",
        3,
        |s| s.langfuse.set_rate_limit(Some(0)),
        |s| s.langfuse.set_rate_limit(None),
    )
    .await;
}

#[tokio::test]
async fn a_short_langfuse_429_is_sat_out_within_the_invocation() {
    let stack = TestStack::start("l429short").await.expect("stack");
    let at = now() - Duration::hours(1);
    for (i, cus) in ["cus_a", "cus_b", "cus_c"].iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(&format!("t{i}"), cus, 0.01, 2, at));
    }
    stack.send_traces(&["t0", "t1", "t2"]).await.expect("send");
    stack.langfuse.fail_next(1, 429); // Retry-After: 1
    let ev = receive_all(&stack, 3).await;
    let result = stack.invoke_with(&NoFaults, ev.clone()).await;
    let response = result.as_ref().expect("no crash").clone();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(
        stack.stripe.events().len(),
        3,
        "billed in the same invocation"
    );
    let reads = stack.langfuse.requests();
    assert_eq!(reads.iter().filter(|r| r.status == 429).count(), 1);
    assert_eq!(reads.len(), 2, "the 429, then the read that answered");
}

/// One 429 in a batch of three: the `deferred` messages it concerns are acknowledged and
/// sent again as new messages with a delay (receive count back to 1, `deferrals` 1), so a
/// long throttled backlog never reaches the dead-letter queue; the others are billed; the
/// deferred come back after their delay and are billed, once.
async fn throttle(
    label: &str,
    deferred: usize,
    inject: impl Fn(&TestStack),
    release: impl Fn(&TestStack),
) {
    // Stripe v1: a 429 concerns one event (the v2 stream's request carries them all).
    let options = StackOptions::default()
        .var("STRIPE_API_MODE", "v1")
        .var("RETRY_BASE_SECONDS", 2)
        .var("RETRY_MAX_SECONDS", 8);
    let stack = TestStack::start_with(label, options).await.expect("stack");
    let at = now() - Duration::hours(1);
    for (i, cus) in ["cus_a", "cus_b", "cus_c"].iter().enumerate() {
        stack
            .langfuse
            .add_trace(trace(&format!("t{i}"), cus, 0.01, 2, at));
    }
    stack.send_traces(&["t0", "t1", "t2"]).await.expect("send");
    inject(&stack);
    let ev = receive_all(&stack, 3).await;
    let result = stack.invoke_with(&NoFaults, ev.clone()).await;
    let response = result.as_ref().expect("no crash").clone();
    assert!(
        response.batch_item_failures.is_empty(),
        "{label}: {response:?}"
    );
    let report = stack.esm.complete(&ev, &result).await.expect("complete");
    assert_eq!(report.deleted, 3, "{label}: every original acknowledged");
    assert_eq!(stack.stripe.events().len(), 3 - deferred, "{label}");
    release(&stack);

    // The deferred come back as new messages, first receive, counted once deferred.
    let back = receive_all(&stack, deferred).await;
    for record in &back.records {
        assert_eq!(record.attributes["ApproximateReceiveCount"], "1", "{label}");
        let count = record.message_attributes["deferrals"]
            .string_value
            .as_deref();
        assert_eq!(count, Some("1"), "{label}");
    }
    let result = stack.invoke_with(&NoFaults, back.clone()).await;
    stack.esm.complete(&back, &result).await.expect("complete");
    let totals = stack.stripe.totals_by_customer();
    assert_eq!(
        totals.values().sum::<u64>(),
        3 * C_001_2S,
        "{label}: {totals:?}"
    );
    assert_eq!(stack.stripe.events().len(), 3);
    assert_eq!(stack.dlq_depth().await.expect("dlq"), 0);
}

/// Receives until `n` messages are in hand (moto may return fewer per receive).
async fn receive_all(stack: &TestStack, n: usize) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut records = Vec::new();
    while records.len() < n {
        let ev = stack
            .esm
            .receive(15)
            .await
            .expect("receive")
            .expect("messages");
        records.extend(ev.records);
    }
    let mut ev = aws_lambda_events::event::sqs::SqsEvent::default();
    ev.records = records;
    ev
}

#[tokio::test]
async fn langfuse_500_retries_the_batch_read_and_bills_each_once() {
    transient_fault("l500", 3, |s| s.langfuse.fail_next(1, 500)).await;
}

#[tokio::test]
async fn permanent_failures_are_recorded_with_their_reason_and_acknowledged() {
    let stack = TestStack::start("perm").await.expect("stack");
    let at = now() - Duration::hours(1);
    // No metadata, a user without mapping, no default customer.
    stack.langfuse.add_trace(unmapped_trace("t-unmapped", at));
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
    let malformed = malformed_messages(&stack).await;
    assert_eq!(malformed.len(), 2);
    for item in &malformed {
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
async fn a_permanent_stripe_rejection_gives_the_budget_back() {
    // v1: Stripe refuses the event at once (the stream's refusals come later, as error
    // reports: `stripe_errors` covers those).
    let options = StackOptions::default().var("STRIPE_API_MODE", "v1");
    let stack = TestStack::start_with("reject", options)
        .await
        .expect("stack");
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

/// The ledger's records of malformed messages (`MESSAGE#<message id>`).
async fn malformed_messages(
    stack: &TestStack,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let out = stack
        .dynamo
        .scan()
        .table_name(&stack.resources.table_name)
        .filter_expression("begins_with(pk, :m)")
        .expression_attribute_values(":m", tracemeter::adapters::dynamo::s("MESSAGE#"))
        .send()
        .await
        .expect("scan");
    out.items().to_vec()
}

/// A trace without customer metadata whose user has no mapping.
fn unmapped_trace(id: &str, at: chrono::DateTime<chrono::Utc>) -> FakeTrace {
    FakeTrace::new(id, at)
        .user("u-nobody")
        .observation(FakeObservation::generation(
            "o1", id, at, at, "gpt-4o", 10, 10, 0.01,
        ))
}
