//! Deferrals: a message a service asked to wait for (a 429, or the shared Langfuse request
//! budget spent) goes back to the queue as a new message with a delay and is acknowledged,
//! so its receive count never grows and no backlog ends in the dead-letter queue.

use super::*;
use async_trait::async_trait;
use tracemeter::domain::message::{DEFERRALS_ATTRIBUTE, Deferral};
use tracemeter::domain::returns::Returns;
use tracemeter::ports::usage::UsageByTrace;
use tracemeter::ports::{Redelivery, UsageSource};
use tracemeter::testing::MemoryQuota;
use tracemeter::{Error, Result};

/// Langfuse answering every read with a 429 that asks for 12 seconds (longer than a read
/// waits out in-process).
struct Throttled;

fn throttled() -> Error {
    Error::Transient {
        service: "langfuse",
        detail: "GET /api/public/v2/observations answered 429 Too Many Requests".into(),
        retry_after: Some(std::time::Duration::from_secs(12)),
    }
}

#[async_trait]
impl UsageSource for Throttled {
    async fn trace_usage(&self, _trace_id: &str) -> Result<Option<TraceUsage>> {
        Err(throttled())
    }

    async fn traces_usage(&self, _trace_ids: &[String]) -> Result<UsageByTrace> {
        Err(throttled())
    }

    async fn record_billed(&self, _: &str, _: &str, _: u64) -> Result<()> {
        Ok(())
    }
}

/// A queue that refuses to take back the message `refused`.
struct Refusing<'a> {
    queue: &'a MemoryQueue,
    refused: &'static str,
}

#[async_trait]
impl Redelivery for Refusing<'_> {
    async fn delay(&self, items: &[(String, i32)]) -> Result<()> {
        self.queue.delay(items).await
    }

    async fn defer(&self, items: &[Deferral]) -> Result<Vec<String>> {
        let (refused, sent): (Vec<Deferral>, Vec<Deferral>) = items
            .iter()
            .cloned()
            .partition(|d| d.message_id == self.refused);
        self.queue.defer(&sent).await?;
        Ok(refused.into_iter().map(|d| d.message_id).collect())
    }

    async fn waiting(&self) -> Result<u64> {
        self.queue.waiting().await
    }
}

impl World {
    /// `n` messages deferred earlier, waiting in the queue.
    async fn deferred_earlier(&self, n: usize) {
        let earlier: Vec<Deferral> = (0..n)
            .map(|i| Deferral {
                message_id: format!("old{i}"),
                body: body(&format!("old{i}")),
                delay_seconds: 60,
                deferrals: 1,
            })
            .collect();
        self.queue.defer(&earlier).await.expect("earlier");
    }

    /// Runs the handler on one batch, reading usage from `usage` and answering SQS through
    /// `redelivery`.
    async fn deliver_through(
        &self,
        usage: &dyn UsageSource,
        redelivery: &dyn Redelivery,
        event: SqsEvent,
    ) -> SqsBatchResponse {
        let deps = Deps {
            config: &self.config,
            usage,
            meter: &self.meter,
            ledger: &self.ledger,
            prices: &self.ledger,
            redelivery,
            clock: &*self.clock,
        };
        let deadline = self.clock.now() + Duration::seconds(30);
        process::handle(&deps, event, deadline).await.response
    }
}

#[tokio::test]
async fn a_throttled_read_defers_the_batch_instead_of_failing_it() {
    // GIVEN three traces and a Langfuse that answers 429 (wait 12 s)
    let world = World::new();
    let bodies: Vec<String> = ["t1", "t2", "t3"].iter().map(|id| body(id)).collect();

    // WHEN the batch is processed
    let response = world
        .deliver_through(&Throttled, &world.queue, event(&bodies))
        .await;

    // THEN no message is a batch item failure (each is acknowledged), each went back to the
    // queue unchanged as a new message, delayed at least the 12 s asked, counted once
    assert!(failures(&response).is_empty(), "{response:?}");
    assert!(world.queue.delays().is_empty(), "no visibility change");
    let deferred = world.queue.deferred();
    assert_eq!(deferred.len(), 3);
    for (d, b) in deferred.iter().zip(&bodies) {
        assert_eq!(&d.body, b);
        assert_eq!(d.deferrals, 1);
        assert!((13..=900).contains(&d.delay_seconds), "{d:?}");
    }
    assert!(world.meter.events().is_empty());
}

#[tokio::test]
async fn a_message_deferred_many_times_waits_longer_and_never_grows_its_receive_count() {
    // GIVEN a self-hosted Langfuse (no request budget here) and a message deferred 6 times
    // already (its attribute says so)
    let world = World::with(
        &[("LANGFUSE_REQUESTS_PER_MINUTE", "unlimited")],
        StripeMode::V1,
    );
    let mut event = event(&[body("t1")]);
    let mut count = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
    count.string_value = Some("6".into());
    count.data_type = Some("Number".into());
    event.records[0]
        .message_attributes
        .insert(DEFERRALS_ATTRIBUTE.into(), count);

    // WHEN Langfuse throttles it again
    let response = world.deliver_through(&Throttled, &world.queue, event).await;

    // THEN it is deferred a 7th time, with the backoff of a 7th attempt (10 s base: 320 s
    // capped at the configured 300, jittered down to no less than half)
    assert!(failures(&response).is_empty());
    let deferred = world.queue.deferred();
    assert_eq!(deferred[0].deferrals, 7);
    assert!(
        (150..=300).contains(&deferred[0].delay_seconds),
        "{deferred:?}"
    );
}

#[tokio::test]
async fn budget_deferrals_come_back_one_after_the_other_behind_those_waiting() {
    // GIVEN the legacy API (one read per message) on a budget of 30 requests a minute, 58
    // messages deferred earlier still waiting, and Langfuse asking for 12 s
    let world = World::with(
        &[
            ("LANGFUSE_API", "legacy"),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "30"),
        ],
        StripeMode::V1,
    );
    world.deferred_earlier(58).await;

    // WHEN a batch of three is throttled
    let bodies: Vec<String> = ["t1", "t2", "t3"].iter().map(|id| body(id)).collect();
    let response = world
        .deliver_through(&Throttled, &world.queue, event(&bodies))
        .await;

    // THEN they come back behind the 58, in bunches of a window's budget (30 messages,
    // 65 s apart), after the 12 s asked and a second: the first two with the second bunch,
    // the third with the third; not all at once, to be deferred again
    assert!(failures(&response).is_empty(), "{response:?}");
    let delays: Vec<i32> = world.queue.deferred()[58..]
        .iter()
        .map(|d| d.delay_seconds)
        .collect();
    assert_eq!(delays, vec![78, 78, 143], "12 + 1 + bunch x 65 s");
}

/// Langfuse throttling every read, on a request budget that keeps the return schedule
/// (`MemoryQuota`, shared by the instances as the table's is).
struct ThrottledOnSchedule<'a>(&'a MemoryQuota);

#[async_trait]
impl UsageSource for ThrottledOnSchedule<'_> {
    async fn trace_usage(&self, _trace_id: &str) -> Result<Option<TraceUsage>> {
        Err(throttled())
    }

    async fn record_billed(&self, _: &str, _: &str, _: u64) -> Result<()> {
        Ok(())
    }

    async fn book_returns(
        &self,
        earliest: chrono::DateTime<chrono::Utc>,
        latest: chrono::DateTime<chrono::Utc>,
        n: usize,
        requests_per_message: f64,
    ) -> Result<Option<Returns>> {
        use tracemeter::ports::RequestQuota;
        self.0
            .book_returns(earliest, latest, n, requests_per_message)
            .await
    }
}

#[tokio::test]
async fn batches_deferred_at_once_come_back_on_one_schedule_not_into_one_window() {
    // GIVEN the legacy API (one read per message) on a budget of 30 requests a minute, its
    // return schedule shared by the instances, 58 older deferrals in the queue (the
    // schedule, not the queue's approximate count, says what is booked), and Langfuse
    // asking for 12 s
    let world = World::with(
        &[
            ("LANGFUSE_API", "legacy"),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "30"),
        ],
        StripeMode::V1,
    );
    world.deferred_earlier(58).await;
    let quota = MemoryQuota::new(30);

    // WHEN two instances defer a batch of 20 each at the same moment
    for batch in ["a", "b"] {
        let bodies: Vec<String> = (0..20).map(|i| body(&format!("{batch}{i}"))).collect();
        let response = world
            .deliver_through(&ThrottledOnSchedule(&quota), &world.queue, event(&bodies))
            .await;
        assert!(failures(&response).is_empty(), "{response:?}");
    }

    // THEN the 40 come back in bunches of a window's budget (30) one window (65 s) apart,
    // the first 12 + 1 s from now: the second batch fills the first's bunch, then the next
    let delays: Vec<i32> = world.queue.deferred()[58..]
        .iter()
        .map(|d| d.delay_seconds)
        .collect();
    let mut expected = vec![13; 30];
    expected.extend([78; 10]);
    assert_eq!(delays, expected);
}

#[tokio::test]
async fn a_deferral_the_queue_refuses_returns_as_a_failure() {
    // GIVEN a queue that will not take back m1
    let world = World::new();
    let refusing = Refusing {
        queue: &world.queue,
        refused: "m1",
    };
    let bodies: Vec<String> = ["t1", "t2"].iter().map(|id| body(id)).collect();

    // WHEN Langfuse throttles the batch
    let response = world
        .deliver_through(&Throttled, &refusing, event(&bodies))
        .await;

    // THEN m0 is deferred; m1 returns as a batch item failure with its visibility set
    assert_eq!(failures(&response), vec!["m1".to_string()]);
    assert_eq!(world.queue.deferred().len(), 1);
    assert_eq!(world.queue.delays().len(), 1);
    assert_eq!(world.queue.delays()[0].0, "receipt-m1");
}

/// Langfuse whose first read finds the budget spent for a moment (1 s), then answers.
struct BriefWait<'a> {
    usage: &'a MemoryUsage,
    waited: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl UsageSource for BriefWait<'_> {
    async fn trace_usage(&self, trace_id: &str) -> Result<Option<TraceUsage>> {
        self.usage.trace_usage(trace_id).await
    }

    async fn traces_usage(&self, trace_ids: &[String]) -> Result<UsageByTrace> {
        if !self.waited.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Transient {
                service: "langfuse",
                detail: "the shared Langfuse request budget is spent for now".into(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            });
        }
        self.usage.traces_usage(trace_ids).await
    }

    async fn record_billed(&self, t: &str, i: &str, c: u64) -> Result<()> {
        self.usage.record_billed(t, i, c).await
    }
}

#[tokio::test]
async fn a_short_wait_for_the_budget_is_sat_out_not_deferred() {
    // GIVEN two traces, and the request budget spent for one more second
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);
    world.trace("t2", "cus_2", "0.004", at);
    let brief = BriefWait {
        usage: &world.usage,
        waited: Default::default(),
    };
    let bodies: Vec<String> = ["t1", "t2"].iter().map(|id| body(id)).collect();

    // WHEN the batch is processed
    let response = world
        .deliver_through(&brief, &world.queue, event(&bodies))
        .await;

    // THEN the read waited the second out: both billed, nothing deferred or failed
    assert!(failures(&response).is_empty(), "{response:?}");
    assert!(world.queue.deferred().is_empty());
    assert_eq!(world.meter.events().len(), 2);
}
