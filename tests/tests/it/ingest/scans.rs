//! What a run finds: every trace once over several windows, billed traces skipped, late
//! usage and late ingestion found again.

use super::*;

#[tokio::test]
async fn v2_10k_traces_over_several_windows_are_each_enqueued_exactly_once() {
    let stack = TestStack::start("ing10k").await.expect("stack");
    let base = now();
    let ids = seed(
        &stack,
        "t",
        10_000,
        base - Duration::hours(4),
        Duration::minutes(216),
    );
    let ing = stack.ingest(&[
        ("RESCAN_SECONDS", "0"),
        ("INGEST_START_LOOKBACK_SECONDS", "18000"),
    ]);
    // Sends are counted by a recording sender (moto's SQS slows down with queue depth, ~40 ms
    // per message at 10k); the real SQS adapter is exercised by the other tests.
    let rec = Recording::new(None);
    let mut requests = 0;
    let mut enqueued = 0;
    // Three scheduled runs, 2.5 h apart in time: three disjoint windows.
    for offset in [
        Duration::minutes(-150),
        Duration::minutes(-60),
        Duration::zero(),
    ] {
        clock_at(&stack, offset);
        let s = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
        assert_eq!(s.outcome, RunOutcome::Completed, "{s:?}");
        assert_eq!(s.send_failed, 0);
        assert!(s.enqueued > 0, "every window holds traces: {s:?}");
        requests += s.requests;
        enqueued += s.enqueued;
    }
    let sent = rec.sent();
    assert_eq!(enqueued, 10_000);
    assert_eq!(sent.len(), 10_000, "every trace enqueued");
    assert!(sent.values().all(|n| *n == 1), "none twice");
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    println!(
        "v2: {requests} Langfuse requests for 10000 traces (11000 observations) = {} per 1000 traces",
        per_1000(requests, 10_000)
    );
}

#[tokio::test]
async fn legacy_keyset_pages_over_several_windows_miss_nothing() {
    let stack = TestStack::start_with(
        "ingleg",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    let base = now();
    let mut ids = seed(
        &stack,
        "l",
        2_500,
        base - Duration::hours(4),
        Duration::minutes(216),
    );
    // 250 traces in one millisecond: more than a page (100) at one timestamp.
    let same = base - Duration::hours(2);
    for i in 0..250 {
        let id = format!("same-{i:03}");
        stack.langfuse.add_trace(seeded(&id, same, 1));
        ids.push(id);
    }
    let ing = stack.ingest(&[
        ("RESCAN_SECONDS", "0"),
        ("INGEST_START_LOOKBACK_SECONDS", "18000"),
    ]);
    let rec = Recording::new(None);
    let mut requests = 0;
    for offset in [
        Duration::minutes(-150),
        Duration::minutes(-60),
        Duration::zero(),
    ] {
        clock_at(&stack, offset);
        let s = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
        assert_eq!(s.outcome, RunOutcome::Completed, "{s:?}");
        assert!(s.enqueued > 0, "every window holds traces: {s:?}");
        requests += s.requests;
    }
    let sent = rec.sent();
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        set(&ids),
        "none missed"
    );
    assert!(sent.values().all(|n| *n == 1), "none twice");
    println!(
        "legacy: {requests} Langfuse requests for {} traces = {} per 1000 traces",
        ids.len(),
        per_1000(requests, ids.len())
    );
}

async fn ledger_skip_and_late_usage(api: &str) {
    let stack = TestStack::start_with(
        &format!("ingskip{api}"),
        StackOptions::default().var("LANGFUSE_API", api),
    )
    .await
    .expect("stack");
    let at = now() - Duration::hours(2);
    let ids: Vec<String> = (0..5).map(|i| format!("bill-{api}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack.langfuse.add_trace(trace(
            id,
            "cus_ing",
            0.01,
            2,
            at + Duration::seconds(i as i64),
        ));
    }
    let ing = stack.ingest(&[]);
    let first = ing.run(&stack).await.expect("ingest run");
    assert_eq!(first.enqueued, 5, "{first:?}");
    // The processor bills them.
    stack.drain(30).await.expect("processed");
    assert_eq!(stack.stripe.events().len(), 5);

    // Right after, nothing is read again: no tier is due yet.
    let next = ing.run(&stack).await.expect("ingest run");
    assert_eq!((next.rescan_ranges, next.traces_found), (0, 0), "{next:?}");

    // A late observation adds usage to a billed trace, 2 h after it started.
    stack.langfuse.add_observation(FakeObservation::generation(
        format!("{}-late", ids[2]),
        &ids[2],
        at + Duration::seconds(30),
        at + Duration::seconds(40),
        "gpt-4o-mini",
        100,
        100,
        0.004,
    ));
    // 4.5 hours on, the 6 h tier reads the range again: the ledger covers four traces, the
    // late one is enqueued again and its difference billed.
    stack.clock.advance(Duration::minutes(270));
    let late = ing.run(&stack).await.expect("ingest run");
    assert_eq!((late.enqueued, late.rescan_enqueued), (1, 1), "{late:?}");
    assert_eq!(late.skipped_covered, 4, "{late:?}");
    assert!(late.rescan_ranges >= 3, "{late:?}");
    stack.drain(30).await.expect("processed");
    let events = stack.stripe.events();
    assert_eq!(
        events.len(),
        6,
        "the late usage billed once more: {events:?}"
    );
    // A day on, the 24 h tier reads it once more: everything is covered.
    stack.clock.advance(Duration::hours(20));
    let last = ing.run(&stack).await.expect("ingest run");
    assert_eq!((last.enqueued, last.skipped_covered), (0, 5), "{last:?}");
}

#[tokio::test]
async fn v2_billed_traces_are_skipped_and_late_usage_enqueued_again() {
    ledger_skip_and_late_usage("v2").await;
}

#[tokio::test]
async fn legacy_billed_traces_are_skipped_and_late_usage_enqueued_again() {
    ledger_skip_and_late_usage("legacy").await;
}

#[tokio::test]
async fn late_ingestion_is_found_by_a_later_run_and_unsettled_traces_wait() {
    let stack = TestStack::start("inglate").await.expect("stack");
    let base = now();
    stack
        .langfuse
        .add_trace(trace("early", "cus_1", 0.01, 1, base - Duration::hours(3)));
    // Still running / not settled (settle is 15 min).
    stack.langfuse.add_trace(trace(
        "fresh",
        "cus_1",
        0.01,
        1,
        base - Duration::minutes(2),
    ));
    let ing = stack.ingest(&[]);
    let first = ing.run(&stack).await.expect("ingest run");
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!(drain_ids(&stack).await, vec!["early".to_string()]);

    // Langfuse ingests, late, a trace whose observations started 2 h ago: before the
    // watermark. The next run does not re-read that range yet.
    stack.langfuse.add_trace(trace(
        "late-arrival",
        "cus_1",
        0.01,
        1,
        base - Duration::hours(2),
    ));
    let second = ing.run(&stack).await.expect("ingest run");
    assert_eq!(second.enqueued, 0, "{second:?}");
    assert!(
        drain_ids(&stack).await.is_empty(),
        "not settled yet: {second:?}"
    );

    // 15 minutes later, "fresh" has settled.
    stack.clock.advance(Duration::minutes(15));
    ing.run(&stack).await.expect("ingest run");
    assert_eq!(drain_ids(&stack).await, vec!["fresh".to_string()]);

    // The 6 h tier reads the late trace's range once it is 6 h old (after settling), in a
    // range about an hour long: 4.5 hours after the first run it has.
    stack.clock.advance(Duration::minutes(255));
    let tiers = ing.run(&stack).await.expect("ingest run");
    let ids = drain_ids(&stack).await;
    // (Nothing processed the others here, so the tiers send them again too.)
    assert!(
        ids.contains(&"late-arrival".to_string()),
        "{ids:?} {tiers:?}"
    );
    assert!(tiers.rescan_traces_found >= 2, "{tiers:?}");
}
