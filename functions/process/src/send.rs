//! Phase 3, send: the claimed events go to Stripe. v1: one request per event, and one
//! customer's requests one after the other (Stripe allows one concurrent call per customer
//! and meter). v2 stream: all of them in as few requests as possible; a request refused
//! for one bad event is split until the bad event is found, and the rest is billed.

use crate::claim::Claimed;
use crate::{Deps, Outcome};
use futures::StreamExt;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tracemeter::adapters::stripe::MAX_STREAM_EVENTS;
use tracemeter::domain::meter::{Delivery, MeterEvent};
use tracemeter::domain::retry;
use tracemeter::{Error, Result};
use tracing::{error, info, warn};

/// A claim and, unless Stripe has its event (`None`), its final outcome.
pub(crate) type Sent = (Claimed, Option<Outcome>);

/// Sends the claimed events.
pub(crate) async fn send_claims(deps: &Deps<'_>, claims: Vec<Claimed>) -> Vec<Sent> {
    if claims.is_empty() {
        Vec::new()
    } else if deps.meter.batches() {
        send_stream(deps, claims).await
    } else {
        send_one_by_one(deps, claims).await
    }
}

/// Stream requests of up to 100 events. A request Stripe refuses as a whole (a 400 caused by
/// one bad event) is split in halves and each half sent again, down to the single events
/// it rejects: one bad event never fails its batch-mates.
async fn send_stream(deps: &Deps<'_>, claims: Vec<Claimed>) -> Vec<Sent> {
    let mut out = Vec::with_capacity(claims.len());
    let mut pending: VecDeque<Vec<Claimed>> = VecDeque::new();
    let mut claims = claims.into_iter().peekable();
    while claims.peek().is_some() {
        pending.push_back(claims.by_ref().take(MAX_STREAM_EVENTS).collect());
    }
    while let Some(mut group) = pending.pop_front() {
        let events: Vec<MeterEvent> = group
            .iter()
            .map(|c| MeterEvent::for_claim(&c.pending))
            .collect();
        let results = deps.meter.send_batch(&events).await;
        if group.len() > 1 && refused_as_a_whole(&results) {
            warn!(
                events = group.len(),
                "Stripe refused a stream request: sending its halves to find the bad event"
            );
            let right = group.split_off(group.len() / 2);
            pending.push_front(right);
            pending.push_front(group);
            continue;
        }
        let mut results = results.into_iter();
        for c in group {
            let result = results
                .next()
                .unwrap_or_else(|| Err(Error::transient("stripe", "no result for the event")));
            let settled = settle(deps, &c, result).await;
            out.push((c, settled));
        }
    }
    out
}

/// True when every event of a request was rejected for good: the request was refused.
fn refused_as_a_whole(results: &[Result<Delivery>]) -> bool {
    !results.is_empty()
        && results
            .iter()
            .all(|r| matches!(r, Err(Error::Permanent { .. })))
}

async fn send_one_by_one(deps: &Deps<'_>, claims: Vec<Claimed>) -> Vec<Sent> {
    let mut by_customer: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
    for c in claims {
        by_customer
            .entry(c.pending.customer_id.clone())
            .or_default()
            .push(c);
    }
    let sent: Vec<Vec<Sent>> = futures::stream::iter(by_customer.into_values())
        .map(|claims| async move {
            let mut out = Vec::with_capacity(claims.len());
            let mut waited = Duration::ZERO;
            for c in claims {
                let result = send_v1(deps, &c, &mut waited).await;
                let settled = settle(deps, &c, result).await;
                out.push((c, settled));
            }
            out
        })
        .buffer_unordered(deps.concurrency())
        .collect()
        .await;
    sent.into_iter().flatten().collect()
}

/// Tries per v1 event while Stripe asks for a short wait.
const V1_TRIES: u32 = 3;
/// The longest wait Stripe may ask for and have it sat out in-process (a 429 without
/// `Retry-After` asks for 1 s).
const V1_SHORT_WAIT: Duration = Duration::from_secs(1);
/// The most one customer's lane of an invocation waits in-process in all; then a 429
/// settles as a transient failure (the message is deferred), so a customer whose slot
/// stays taken cannot hold the invocation.
const V1_LANE_WAIT: Duration = Duration::from_secs(5);

/// One v1 event. A 429 (another instance holds the customer's one concurrent slot for the
/// ~100 ms of its request) is waited out in-process and the event sent again with the same
/// idempotency key, up to [`V1_TRIES`] and [`V1_LANE_WAIT`]: cheaper than a deferral (a
/// lease released, a redelivery, a take-over), and the slot is usually free again at once.
async fn send_v1(deps: &Deps<'_>, c: &Claimed, waited: &mut Duration) -> Result<Delivery> {
    let event = MeterEvent::for_claim(&c.pending);
    let mut attempt = 1;
    loop {
        let result = deps.meter.send(&event).await;
        let asked = match &result {
            Err(
                e @ Error::Transient {
                    service: "stripe", ..
                },
            ) => e.retry_after().filter(|w| *w <= V1_SHORT_WAIT),
            _ => None,
        };
        let Some(asked) = asked.filter(|_| attempt < V1_TRIES) else {
            return result;
        };
        let pause = retry::short_wait(asked, &c.pending.identifier, attempt);
        if *waited + pause > V1_LANE_WAIT {
            return result;
        }
        *waited += pause;
        info!(trace_id = %c.trace_id, pause_ms = pause.as_millis() as u64, attempt,
              "Stripe asked to wait (another request of the customer in flight): trying again");
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

/// What Stripe's answer means for a claimed revision. `None`: Stripe has the event.
/// A permanent rejection is recorded and the budget increment undone; a transient failure
/// ends the claim's lease so the retry resumes at once.
async fn settle(deps: &Deps<'_>, c: &Claimed, result: Result<Delivery>) -> Option<Outcome> {
    let (trace_id, p) = (c.trace_id.as_str(), &c.pending);
    match result {
        Ok(Delivery::Recorded) => None,
        Ok(Delivery::AlreadyRecorded) => {
            info!(trace_id, identifier = %p.identifier, "Stripe already had this event: treated as delivered");
            None
        }
        Err(Error::Permanent { reason, detail }) => {
            let now = deps.clock.now();
            match deps
                .ledger
                .fail_claim(trace_id, p, reason, &detail, now)
                .await
            {
                Ok(true) => {
                    error!(trace_id, identifier = %p.identifier, reason = %reason, detail = %detail,
                           "Stripe rejected the meter event: recorded, budget increment undone");
                    Some(Outcome::Permanent(reason))
                }
                Ok(false) => Some(Outcome::Permanent(reason)),
                Err(e) => Some(crate::failure::outcome(deps, trace_id, e).await),
            }
        }
        Err(e) => {
            if let Err(release) = deps
                .ledger
                .release(trace_id, p.revision, deps.clock.now())
                .await
            {
                warn!(trace_id, error = %release, "could not release the claim's lease; the retry waits for it");
            }
            warn!(trace_id, error = %e, "Stripe failed for now, will retry");
            Some(Outcome::retry_after(&e))
        }
    }
}
