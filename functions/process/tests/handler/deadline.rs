//! The deadline: no slice of the batch starts that the deadline would cut; what is not
//! reached returns untried with a short visibility, the rest is billed.

use super::*;
use tracemeter::domain::deadline::UNREACHED_VISIBILITY_SECONDS;
use tracemeter::domain::meter::Delivery;

#[tokio::test]
async fn a_handler_near_its_deadline_returns_the_unreached_and_bills_the_rest() {
    // GIVEN 300 traces, a Langfuse read that takes 500 ms and a margin of 1 s
    let world = World::with(&[("DEADLINE_MARGIN_SECONDS", "1")], StripeMode::V1);
    world
        .usage
        .set_latency(std::time::Duration::from_millis(500));
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    for id in &ids {
        world.trace(id, "cus_1", "0.004", at);
    }

    // WHEN they come in one batch with 2.2 s left: two slices of 100 fit, a third does not
    let bodies: Vec<String> = ids.iter().map(|id| body(id)).collect();
    let deadline = world.clock.now() + Duration::milliseconds(2200);
    let response = world.deliver_until(&bodies, deadline).await;

    // THEN the first 200 are billed, the last 100 return untried, soon
    let failed = failures(&response);
    let expected: Vec<String> = (200..300).map(|i| format!("m{i}")).collect();
    assert_eq!(failed, expected);
    assert_eq!(world.meter.events().len(), 200);
    assert!(world.clock.now() < deadline, "returned before the deadline");
    let delays = world.queue.delays();
    assert_eq!(delays.len(), 100);
    assert!(
        delays
            .iter()
            .all(|(_, d)| *d == UNREACHED_VISIBILITY_SECONDS)
    );
    assert_eq!(world.usage.requests(), 2, "the third slice was never read");

    // AND their redelivery bills them
    let rest = world.deliver(&bodies[200..]).await;
    assert!(failures(&rest).is_empty(), "{rest:?}");
    assert_eq!(world.meter.events().len(), 300);
}

#[tokio::test]
async fn a_handler_past_its_margin_starts_nothing() {
    // GIVEN a trace and an invocation with less time left than the margin
    let world = World::new();
    world.trace("t1", "cus_1", "0.004", an_hour_ago(&world));

    // WHEN it is delivered
    let deadline = world.clock.now() + Duration::seconds(2);
    let response = world.deliver_until(&[body("t1")], deadline).await;

    // THEN nothing was read or billed, and the message returns
    assert_eq!(failures(&response), vec!["m0".to_string()]);
    assert_eq!(world.usage.requests(), 0);
    assert!(world.meter.events().is_empty());
}

/// Stripe answering each request after `1` (the meter `0` records it).
struct Slow<'a>(&'a MemoryMeter, std::time::Duration);

#[async_trait::async_trait]
impl MeterSink for Slow<'_> {
    async fn send(&self, event: &MeterEvent) -> tracemeter::Result<Delivery> {
        tokio::time::sleep(self.1).await;
        self.0.send(event).await
    }
}

#[tokio::test]
async fn a_v1_customer_lane_sends_no_event_the_deadline_would_cut() {
    // GIVEN one customer's 20 traces, Stripe v1 taking 300 ms a request, a margin of 1 s
    let world = World::with(&[("DEADLINE_MARGIN_SECONDS", "1")], StripeMode::V1);
    let at = an_hour_ago(&world);
    let ids: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for id in &ids {
        world.trace(id, "cus_big", "0.004", at);
    }
    let slow = Slow(&world.meter, std::time::Duration::from_millis(300));

    // WHEN they come in one batch with 4 s left: about nine sends fit, twenty do not
    let bodies: Vec<String> = ids.iter().map(|id| body(id)).collect();
    let deadline = world.clock.now() + Duration::seconds(4);
    let deps = Deps {
        meter: &slow,
        ..world.deps()
    };
    let response = process::handle(&deps, event(&bodies), deadline)
        .await
        .response;

    // THEN it answered in time: what was sent is billed, the rest released and deferred
    // (new messages, receive counts not grown), none a batch item failure
    assert!(world.clock.now() < deadline, "answered before the deadline");
    assert!(failures(&response).is_empty(), "{response:?}");
    let sent = world.meter.events().len();
    let deferred = world.queue.deferred();
    assert!((4..=12).contains(&sent), "{sent} sent");
    assert_eq!(sent + deferred.len(), 20, "each event sent or deferred");

    // AND the deferred messages bill the rest, each trace once
    let again: Vec<String> = deferred.iter().map(|d| d.body.clone()).collect();
    let rest = world.deliver(&again).await;
    assert!(failures(&rest).is_empty(), "{rest:?}");
    let mut identifiers: Vec<String> = world
        .meter
        .events()
        .iter()
        .map(|e| e.identifier.clone())
        .collect();
    identifiers.sort();
    identifiers.dedup();
    assert_eq!(identifiers.len(), 20);
}
