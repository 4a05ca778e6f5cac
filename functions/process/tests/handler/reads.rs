//! Langfuse reads: one batch read per batch, none for what the ledger already settles.

use super::*;

/// A message for `trace_id` carrying the newest usage time ingest saw.
fn seen_body(trace_id: &str, newest: DateTime<Utc>) -> String {
    MeterMessage {
        newest_observation: Some(newest),
        ..MeterMessage::new(trace_id)
    }
    .to_body()
}

#[tokio::test]
async fn a_batch_of_many_customers_costs_one_usage_read() {
    // GIVEN 100 traces of 5 customers
    let world = World::new();
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        world.trace(id, &format!("cus_{}", i % 5), "0.004", at);
    }

    // WHEN they are processed in one batch
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let response = world.meter(&refs).await;

    // THEN Langfuse answered one request, and every trace was billed
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(world.usage.requests(), 1);
    assert_eq!(world.meter.events().len(), 100);
}

#[tokio::test]
async fn traces_missing_from_the_batch_answer_are_not_found() {
    // GIVEN two traces Langfuse knows, one it does not
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);
    world.trace("t2", "cus_2", "0.004", at);

    // WHEN the three are processed together
    let response = world.meter(&["t1", "gone", "t2"]).await;

    // THEN the unknown one is a permanent trace_not_found, the others are billed
    assert!(failures(&response).is_empty(), "{response:?}");
    let gone = world.entry("gone").await;
    assert_eq!(gone.state, LedgerState::Failed);
    assert_eq!(gone.reason.as_deref(), Some("trace_not_found"));
    assert_eq!(world.meter.events().len(), 2);
    assert_eq!(world.usage.requests(), 1);
}

#[tokio::test]
async fn a_redelivered_batch_the_ledger_covers_costs_no_read() {
    // GIVEN 20 traces billed from messages carrying the newest usage time ingest saw
    let world = World::new();
    let at = an_hour_ago(&world);
    let bodies: Vec<String> = (0..20)
        .map(|i| {
            let id = format!("t{i}");
            world.trace(&id, "cus_1", "0.004", at);
            seen_body(&id, at)
        })
        .collect();
    world.deliver(&bodies).await;
    let reads = world.usage.requests();

    // WHEN the same batch comes back
    let response = world.deliver(&bodies).await;

    // THEN the ledger settles it: no Langfuse read, nothing billed twice
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(world.usage.requests(), reads, "no Langfuse request");
    assert_eq!(world.meter.events().len(), 20);
}

#[tokio::test]
async fn usage_newer_than_the_ledger_is_read_and_billed_as_a_revision() {
    // GIVEN a billed trace
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);
    world.deliver(&[seen_body("t1", at)]).await;

    // WHEN a late observation doubles its cost and ingest enqueues it with the newer time,
    // and a message without any time (an older ingest) comes too
    let later = at + Duration::minutes(1);
    let mut usage = usage("t1", "0.008", at);
    usage.last_observation_at = Some(later);
    usage
        .metadata
        .insert("stripeCustomerId".into(), "cus_1".into());
    world.usage.put(usage);
    let response = world.deliver(&[seen_body("t1", later)]).await;

    // THEN Langfuse is read and the difference billed as revision 2
    assert!(failures(&response).is_empty(), "{response:?}");
    let e = world.entry("t1").await;
    assert_eq!((e.revision, e.total_credits), (2, 2 * C_0004));
    let reads = world.usage.requests();
    world.deliver(&[body("t1")]).await;
    assert_eq!(
        world.usage.requests(),
        reads + 1,
        "no time: read to be sure"
    );
    assert_eq!(world.entry("t1").await.revision, 2);
}

#[tokio::test]
async fn a_sub_millisecond_time_is_covered_by_the_stored_millisecond() {
    // GIVEN a trace billed when its newest observation started at .123456 (microseconds)
    let world = World::new();
    let at = an_hour_ago(&world) + Duration::microseconds(123_456);
    world.trace("t1", "cus_1", "0.004", at);
    world.deliver(&[seen_body("t1", at)]).await;
    let reads = world.usage.requests();

    // WHEN ingest enqueues it again with that same time
    world.deliver(&[seen_body("t1", at)]).await;

    // THEN the ledger (whole milliseconds) covers it: no read
    assert_eq!(world.usage.requests(), reads);
}

#[tokio::test]
async fn batch_reads_are_chunked_as_langfuse_would() {
    // GIVEN Langfuse answers at most 40 traces a request (the URL length)
    let world = World::new();
    world.usage.batch_limit(40);
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    for id in &ids {
        world.trace(id, "cus_1", "0.004", at);
    }

    // WHEN 100 are processed
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    world.meter(&refs).await;

    // THEN 3 requests were made, and each trace was read once
    assert_eq!(world.usage.requests(), 3);
    assert!(ids.iter().all(|id| world.usage.calls_for(id) == 1));
}

#[tokio::test]
async fn a_late_observation_that_costs_nothing_is_recorded_once() {
    // GIVEN a billed trace, then a late observation that adds no credits
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);
    world.deliver(&[seen_body("t1", at)]).await;
    let later = at + Duration::minutes(1);
    let mut usage = usage("t1", "0.004", at);
    usage.last_observation_at = Some(later);
    usage
        .metadata
        .insert("stripeCustomerId".into(), "cus_1".into());
    world.usage.put(usage);

    // WHEN ingest enqueues it with the newer time, twice
    let reads = world.usage.requests();
    world.deliver(&[seen_body("t1", later)]).await;
    world.deliver(&[seen_body("t1", later)]).await;

    // THEN it was read once, nothing billed; the entry now covers the late observation
    assert_eq!(world.usage.requests(), reads + 1);
    let e = world.entry("t1").await;
    assert_eq!((e.revision, e.last_observation_at), (1, Some(later)));
    assert_eq!(world.meter.events().len(), 1);
}
