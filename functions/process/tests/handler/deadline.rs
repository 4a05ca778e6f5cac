//! The deadline: no slice of the batch starts that the deadline would cut; what is not
//! reached returns untried with a short visibility, the rest is billed.

use super::*;
use tracemeter::domain::deadline::UNREACHED_VISIBILITY_SECONDS;

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
