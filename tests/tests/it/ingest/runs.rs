//! How a run behaves: its lease, its checkpoint, Langfuse's rate limit, its request budget,
//! failed sends.

use super::*;

#[tokio::test]
async fn two_runs_started_together_one_works_the_other_exits() {
    let stack = TestStack::start("inglease").await.expect("stack");
    let ids = seed(
        &stack,
        "c",
        30,
        now() - Duration::hours(2),
        Duration::minutes(30),
    );
    stack
        .langfuse
        .set_latency(std::time::Duration::from_millis(300));
    let ing = stack.ingest(&[]);
    let (a, b) = tokio::join!(ing.run(&stack), ing.run(&stack));
    let (a, b) = (a.expect("ingest run a"), b.expect("ingest run b"));
    let outcomes = [a.outcome, b.outcome];
    assert!(outcomes.contains(&RunOutcome::Completed), "{a:?} {b:?}");
    assert!(outcomes.contains(&RunOutcome::LeaseHeld), "{a:?} {b:?}");
    let held = if a.outcome == RunOutcome::LeaseHeld {
        &a
    } else {
        &b
    };
    assert_eq!((held.requests, held.enqueued), (0, 0));
    let got = drain_ids(&stack).await;
    assert_eq!(got.len(), 30, "enqueued once, by one run");
    assert_eq!(set(&got), set(&ids));
    // The lease was released: the next run works.
    stack.langfuse.set_latency(std::time::Duration::ZERO);
    let next = ing.run(&stack).await.expect("ingest run");
    assert_ne!(next.outcome, RunOutcome::LeaseHeld);
}

#[tokio::test]
async fn a_lease_put_retried_after_a_lost_answer_is_still_ours() {
    // The SDK retries a put whose answer was lost; moto already stored the lease. The retry
    // must succeed for its owner (found by the reliability suite) and fail for anyone else.
    let stack = TestStack::start("inglease2").await.expect("stack");
    let ing = stack.ingest(&[]);
    let at = stack.clock.now();
    let until = at + Duration::seconds(60);
    let take = |owner: &'static str| ing.store.acquire_lease("v2", owner, at, until);
    assert!(take("run-a").await.expect("first put"));
    assert!(take("run-a").await.expect("retried put"), "its own lease");
    assert!(!take("run-b").await.expect("other run"), "held by run-a");
    ing.store
        .release_lease("v2", "run-a")
        .await
        .expect("release");
    assert!(take("run-b").await.expect("after release"));
}

#[tokio::test]
async fn a_run_cut_off_mid_window_resumes_from_its_checkpoint() {
    let stack = TestStack::start_with(
        "ingcut",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    let ids = seed(
        &stack,
        "r",
        500,
        now() - Duration::hours(3),
        Duration::hours(2),
    );
    let ing = stack.ingest(&[("INGEST_TIME_BUDGET_MARGIN_SECONDS", "1")]);
    stack
        .langfuse
        .set_latency(std::time::Duration::from_millis(400));
    // About 2 s of work: a few pages of the 8.
    let cut = ing.run_with(&stack, &ing.sqs, 3).await.expect("ingest run");
    assert_eq!(cut.outcome, RunOutcome::OutOfTime, "{cut:?}");
    assert!(cut.pages >= 1 && cut.enqueued < 500, "{cut:?}");
    let saved = ing.store.load_cursor("legacy").await.expect("cursor");
    let pending = saved.pending.expect("position saved");
    assert!(pending.position > pending.from, "{saved:?}");
    assert_eq!(
        saved.watermark, None,
        "watermark moves only when the window is done"
    );
    let mut got = drain_ids(&stack).await;

    stack.langfuse.set_latency(std::time::Duration::ZERO);
    let resumed = ing.run(&stack).await.expect("ingest run");
    assert!(resumed.resumed, "{resumed:?}");
    assert_eq!(resumed.outcome, RunOutcome::Completed);
    assert_eq!(resumed.scan_from, Some(pending.from));
    assert!(
        resumed.pages < 6,
        "resumed at the checkpoint, not from the start: {resumed:?}"
    );
    got.extend(drain_ids(&stack).await);
    assert_eq!(set(&got), set(&ids), "none lost across the cut");
    let done = ing.store.load_cursor("legacy").await.expect("cursor");
    assert_eq!(done.pending, None);
    assert_eq!(done.watermark, Some(pending.to));
}

#[tokio::test]
async fn a_429_storm_slows_the_run_without_failing_or_losing_traces() {
    let stack = TestStack::start_with(
        "ing429",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    let ids = seed(
        &stack,
        "q",
        300,
        now() - Duration::hours(3),
        Duration::hours(2),
    );
    // One request per 2 s window; the run needs 4.
    stack
        .langfuse
        .set_rate_limit_window(Some(1), std::time::Duration::from_secs(2));
    let ing = stack.ingest(&[]);
    let s = ing.run(&stack).await.expect("ingest run");
    assert_eq!(s.outcome, RunOutcome::Completed, "{s:?}");
    assert!(s.rate_limited >= 1, "{s:?}");
    assert!(s.waited_ms >= 1000, "{s:?}");
    let got = drain_ids(&stack).await;
    assert_eq!(set(&got), set(&ids));
    let statuses: Vec<u16> = stack.langfuse.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429));
}

#[tokio::test]
async fn the_request_budget_stops_a_run_instead_of_overrunning_its_deadline() {
    let stack = TestStack::start_with(
        "ingbudget",
        StackOptions::default().var("LANGFUSE_API", "legacy"),
    )
    .await
    .expect("stack");
    seed(
        &stack,
        "b",
        500,
        now() - Duration::hours(3),
        Duration::hours(2),
    );
    let ing = stack.ingest(&[("LANGFUSE_REQUESTS_PER_MINUTE", "2")]);
    let started = std::time::Instant::now();
    let s = ing
        .run_with(&stack, &ing.sqs, 10)
        .await
        .expect("ingest run");
    assert_eq!(s.outcome, RunOutcome::OutOfTime, "{s:?}");
    assert_eq!(s.requests, 2, "no more than the budget: {s:?}");
    assert_eq!(s.rate_limited, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(stack.langfuse.request_count(), 2);
    // Two pages of 100 rows; the keyset re-reads the last timestamp of page 1 and drops it.
    assert_eq!(s.enqueued, 199);
    assert_eq!(drain_ids(&stack).await.len(), 199);
}

#[tokio::test]
async fn sqs_send_failures_are_retried_or_reported_never_lost() {
    let stack = TestStack::start("ingsend").await.expect("stack");
    let ids = seed(
        &stack,
        "s",
        50,
        now() - Duration::hours(2),
        Duration::minutes(30),
    );
    let ing = stack.ingest(&[]);
    let rec = Recording::new(Some(&ing.sqs));
    // Three entries fail twice, then go through; one fails every time.
    for id in &ids[..3] {
        rec.flaky.lock().expect("lock").insert(id.clone(), 2);
    }
    rec.broken.lock().expect("lock").insert(ids[40].clone());
    let first = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
    assert_eq!(first.outcome, RunOutcome::SendFailures, "{first:?}");
    assert_eq!(first.send_failed, 1, "{first:?}");
    assert!(first.send_retries >= 6, "{first:?}");
    assert_eq!(first.enqueued, 49);
    let mut got = drain_ids(&stack).await;
    assert!(!got.contains(&ids[40]));
    for id in &ids[..3] {
        assert!(got.contains(id), "retried and delivered: {id}");
    }
    // The page was not checkpointed past: the next run reads it again and delivers.
    rec.broken.lock().expect("lock").clear();
    let second = ing.run_with(&stack, &rec, 60).await.expect("ingest run");
    assert_eq!(second.outcome, RunOutcome::Completed, "{second:?}");
    got.extend(drain_ids(&stack).await);
    assert_eq!(set(&got), set(&ids), "none lost");

    // A queue that does not exist: every entry fails; reported, the run stops, nothing lost.
    let missing = SqsSender::new(
        stack.sqs.clone(),
        format!("{}-missing", stack.resources.queue_url),
    );
    // A trace newer than the watermark: the next fresh range holds it.
    let at = stack.clock.now() - Duration::minutes(10);
    stack
        .langfuse
        .add_trace(trace("after", "cus_1", 0.01, 1, at));
    stack.clock.advance(Duration::minutes(10));
    let ing_fast = stack.ingest(&[("INGEST_SEND_ATTEMPTS", "2")]);
    let broken = ing_fast
        .run_with(&stack, &missing, 60)
        .await
        .expect("ingest run");
    assert_eq!(broken.outcome, RunOutcome::SendFailures, "{broken:?}");
    assert!(broken.send_failed >= 1);
    let fixed = ing_fast.run(&stack).await.expect("ingest run");
    assert_eq!(fixed.outcome, RunOutcome::Completed);
    assert!(drain_ids(&stack).await.contains(&"after".to_string()));
}
