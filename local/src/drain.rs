//! The one queue-drain loop: concurrent pollers of the event source mapping that receive a
//! batch, invoke the function on it and complete it (delete what succeeded), until the queue is
//! empty, visible and in flight. The tests' `TestStack::drain`, the `make run` runner, the
//! reliability suite and the benchmark all drain through [`drain`]; what differs is a
//! parameter ([`Drain`]) and the invocation (the in-process handler, with or without injected
//! aborts, or a release bootstrap under the Runtime API emulator).

use crate::esm::{EventSourceMapping, PollReport};
use anyhow::{Result, bail};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use indicatif::ProgressBar;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a drain ends whether or not the queue is empty.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    /// Fail: the queue was not drained in time.
    Fail(Instant),
    /// Stop where it is (the benchmark's time limit: what is left is reported).
    Stop(Instant),
}

/// How to drain.
#[derive(Debug, Clone)]
pub struct Drain {
    /// Concurrent pollers (at least one).
    pub pollers: usize,
    /// How long one receive waits for messages, in seconds.
    pub wait_seconds: i32,
    /// Polls (empty ones included) each poller makes before the drain fails.
    pub max_polls: Option<usize>,
    /// The time limit, if any.
    pub deadline: Option<Deadline>,
    /// Empty checks in a row (an empty receive, then a queue depth of 0 visible and 0 in
    /// flight) that mean the queue is drained.
    pub quiet_checks: usize,
    /// Count failed receive, delete and depth calls and go on (a fault-injecting proxy sits
    /// between the pollers and moto) instead of failing the drain.
    pub tolerate_errors: bool,
    /// Advanced by every message deleted.
    pub progress: Option<ProgressBar>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            pollers: 1,
            wait_seconds: 1,
            max_polls: None,
            deadline: None,
            quiet_checks: 1,
            tolerate_errors: false,
            progress: None,
        }
    }
}

/// What a drain did.
#[derive(Debug, Default, Clone)]
pub struct Drained {
    /// Every completed batch, in completion order.
    pub polls: Vec<PollReport>,
    /// Invocations.
    pub invocations: u64,
    /// Invocations that failed as a whole (the batch comes back).
    pub failed_invocations: u64,
    /// Messages an invocation that answered reported as failed (back to the queue).
    pub retried: u64,
    /// Event source mapping calls (receive, delete, depth) that failed, when tolerated.
    pub esm_errors: u64,
    /// Messages deleted.
    pub deleted: usize,
}

/// Polls the queue with `options.pollers` concurrent pollers, invoking `invoke(poller, batch)`
/// on each batch received, until the queue is empty (or the deadline).
pub async fn drain<F, Fut, E>(
    esm: &EventSourceMapping,
    options: &Drain,
    invoke: F,
) -> Result<Drained>
where
    F: Fn(usize, SqsEvent) -> Fut,
    Fut: Future<Output = std::result::Result<SqsBatchResponse, E>>,
{
    let state = Mutex::new(Drained::default());
    let pollers = (0..options.pollers.max(1)).map(|index| {
        let poller = Poller {
            esm,
            options,
            state: &state,
        };
        let invoke = &invoke;
        async move { poller.run(index, invoke).await }
    });
    let results = futures::future::join_all(pollers).await;
    let drained = state.into_inner().unwrap_or_else(|e| e.into_inner());
    for result in results {
        result.map_err(|e| e.context(format!("batches completed: {:?}", drained.polls)))?;
    }
    Ok(drained)
}

/// One poller of a drain.
struct Poller<'a> {
    esm: &'a EventSourceMapping,
    options: &'a Drain,
    state: &'a Mutex<Drained>,
}

impl Poller<'_> {
    async fn run<F, Fut, E>(&self, index: usize, invoke: &F) -> Result<()>
    where
        F: Fn(usize, SqsEvent) -> Fut,
        Fut: Future<Output = std::result::Result<SqsBatchResponse, E>>,
    {
        let (mut polls, mut quiet) = (0, 0);
        loop {
            if self.out_of_time()? {
                return Ok(());
            }
            if let Some(max) = self.options.max_polls
                && polls >= max
            {
                bail!("the queue was not drained after {max} polls");
            }
            polls += 1;
            let event = match self.esm.receive(self.options.wait_seconds).await {
                Ok(Some(event)) => event,
                Ok(None) => {
                    match self.empty().await? {
                        Some(true) => quiet += 1,
                        Some(false) => quiet = 0,
                        None => {}
                    }
                    if quiet >= self.options.quiet_checks.max(1) {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    self.tolerate(e)?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            quiet = 0;
            let result = invoke(index, event.clone()).await;
            self.record_invocation(result.is_err());
            match self.esm.complete(&event, &result).await {
                Ok(report) => self.record(report),
                Err(e) => self.tolerate(e)?,
            }
        }
    }

    /// True when a [`Deadline::Stop`] passed; an error when a [`Deadline::Fail`] did.
    fn out_of_time(&self) -> Result<bool> {
        match self.options.deadline {
            Some(Deadline::Fail(at)) if Instant::now() >= at => {
                bail!("the queue was not drained before the deadline")
            }
            Some(Deadline::Stop(at)) => Ok(Instant::now() >= at),
            _ => Ok(false),
        }
    }

    /// Whether the queue is empty, visible and in flight (None: the depth call failed and
    /// was tolerated).
    async fn empty(&self) -> Result<Option<bool>> {
        match self.esm.depth(&self.esm.queue_url).await {
            Ok((visible, in_flight)) => Ok(Some(visible == 0 && in_flight == 0)),
            Err(e) => self.tolerate(e).map(|()| None),
        }
    }

    fn tolerate(&self, error: anyhow::Error) -> Result<()> {
        if !self.options.tolerate_errors {
            return Err(error);
        }
        self.lock().esm_errors += 1;
        Ok(())
    }

    fn record_invocation(&self, failed: bool) {
        let mut state = self.lock();
        state.invocations += 1;
        state.failed_invocations += u64::from(failed);
    }

    fn record(&self, report: PollReport) {
        if let Some(bar) = &self.options.progress {
            bar.inc(report.deleted as u64);
        }
        let mut state = self.lock();
        if !report.invocation_failed {
            state.retried += report.failed as u64;
        }
        state.deleted += report.deleted;
        state.polls.push(report);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Drained> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
