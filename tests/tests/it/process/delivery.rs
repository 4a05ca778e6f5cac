//! Exactly once: repeats, crashes, Stripe's duplicate answers and dedup window, ambiguity,
//! overlapping batches.

use super::*;

#[tokio::test]
async fn the_same_trace_three_times_is_billed_once() {
    // v1, whose requests carry the idempotency key checked below.
    let options = StackOptions::default().var("STRIPE_API_MODE", "v1");
    let stack = TestStack::start_with("dup3", options).await.expect("stack");
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
    let response = stack
        .invoke_with(&NoFaults, event_for(&ids))
        .await
        .expect("no crash");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(stack.stripe.concurrency_violations(), 0);
    assert_eq!(stack.stripe.events().len(), 10);
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
            event(&bodies)
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
                price_version: None,
            }],
            now: now(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed, ClaimResult::Claimed);
    stack.send_traces(&["t-old-claim"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    assert_eq!(stack.stripe.events().len(), 1);
    // The stored item itself (not the receipt-resolved view) reads metered.
    let raw = stack
        .dynamo
        .get_item()
        .table_name(&stack.resources.table_name)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("TRACE#t-old-claim".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("LEDGER".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("read")
        .item
        .expect("item");
    assert_eq!(
        raw.get("state")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
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

/// Ingest's "no ledger entry" is a hint that saves the first delivery a ledger read, not a
/// fact: a first-delivered message that says so of a trace already billed (a duplicate
/// enqueue, a stale coverage read) is refused by the claim's `attribute_not_exists`, read
/// again strongly and settled as billed. Nothing is sent or counted twice, and the trace
/// claimed with it in the same customer transaction is billed.
#[tokio::test]
async fn a_wrong_no_ledger_entry_hint_bills_and_counts_nothing_twice() {
    use tracemeter::domain::message::MeterMessage;
    let stack = TestStack::start("hint").await.expect("stack");
    let at = now() - Duration::hours(1);
    for id in ["t-hint", "t-new"] {
        stack.langfuse.add_trace(trace(id, "cus_hint", 0.01, 2, at));
    }
    stack.send_traces(&["t-hint"]).await.expect("send");
    stack.drain(10).await.expect("drained");
    assert_eq!(stack.stripe.events().len(), 1);

    let hint = |id: &str| {
        MeterMessage {
            no_ledger_entry: true,
            ..MeterMessage::new(id)
        }
        .to_body()
    };
    stack
        .send_bodies(&[hint("t-hint"), hint("t-new")])
        .await
        .expect("send");
    let reports = stack.drain(10).await.expect("drained");
    assert!(reports.iter().all(|r| r.failed == 0), "{reports:?}");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 2, "{events:?}");
    for id in ["t-hint", "t-new"] {
        assert_eq!(entry(&stack, id).await.state, LedgerState::Metered, "{id}");
        let sent = events.iter().filter(|e| e.identifier == identifier(id, 1));
        assert_eq!(sent.count(), 1, "{id}: {events:?}");
    }
    let usage = stack
        .ledger
        .budget_usage("cus_hint", &Period::Month.key(at))
        .await
        .expect("counter");
    assert_eq!(usage.used, 2 * C_001_2S, "each trace counted once");
    assert_eq!(stack.dlq_depth().await.expect("dlq"), 0);
}
