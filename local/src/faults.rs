//! Rate-based fault injection, shared by the Langfuse and Stripe fakes, the AWS proxy and the
//! process handler's aborts (see [`invoke`]): each boundary gets a [`Chaos`] that, for a share `rate` of
//! the calls it sees, picks one of its fault kinds (uniformly) and counts what it injected.
//!
//! The draws come from a seeded generator, so a run's fault *rates* are reproducible; which
//! call gets which fault also depends on the order concurrent calls arrive in.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use process::Deps;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracemeter::domain::meter::{Delivery, MeterEvent};
use tracemeter::ports::MeterSink;

/// A rate-based fault injector for one boundary.
#[derive(Debug)]
pub struct Chaos {
    boundary: &'static str,
    kinds: &'static [&'static str],
    /// The rate in parts per million (atomic so it can be switched off mid-run).
    rate_ppm: AtomicU64,
    seed: u64,
    draws: AtomicU64,
    calls: AtomicU64,
    /// The first calls that draw a fault whatever the rate (while the boundary is on), so
    /// that a short run meets the boundary's faults at least this often.
    minimum: AtomicU64,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

/// splitmix64: a well-mixed 64-bit value from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Chaos {
    /// A boundary (`langfuse`, `stripe`, `aws`, `process`) with its fault kinds, injecting on
    /// a share `rate` (0.0–1.0) of calls.
    pub fn new(
        boundary: &'static str,
        kinds: &'static [&'static str],
        rate: f64,
        seed: u64,
    ) -> Arc<Chaos> {
        let chaos = Chaos {
            boundary,
            kinds,
            rate_ppm: AtomicU64::new(0),
            seed: mix(seed ^ boundary.len() as u64 ^ (boundary.as_bytes()[0] as u64) << 8),
            draws: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            minimum: AtomicU64::new(0),
            counts: Mutex::new(BTreeMap::new()),
        };
        chaos.set_rate(rate);
        Arc::new(chaos)
    }

    /// The boundary's name.
    pub fn boundary(&self) -> &'static str {
        self.boundary
    }

    /// Changes the rate (0.0 switches the boundary off).
    pub fn set_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.rate_ppm.store(ppm, Ordering::Relaxed);
    }

    /// The first `n` calls that draw (while the boundary is on) inject a fault, whatever the
    /// rate: a boundary that sees few calls in a short run (the process handler's
    /// invocations: a handful at batch 100) still meets its faults.
    pub fn set_minimum(&self, n: u64) {
        self.minimum.store(n, Ordering::Relaxed);
    }

    /// The current rate.
    pub fn rate(&self) -> f64 {
        self.rate_ppm.load(Ordering::Relaxed) as f64 / 1_000_000.0
    }

    /// A uniform number below `n` from the generator (for choosing where a fault lands).
    pub fn below(&self, n: u64) -> u64 {
        let i = self.draws.fetch_add(1, Ordering::Relaxed);
        mix(self.seed ^ mix(i)) % n.max(1)
    }

    /// Draws once without counting: the fault kind for this call, if any.
    pub fn pick(&self) -> Option<&'static str> {
        let ppm = self.rate_ppm.load(Ordering::Relaxed);
        if ppm == 0 || self.kinds.is_empty() {
            return None;
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let i = self.draws.fetch_add(1, Ordering::Relaxed);
        let r = mix(self.seed ^ mix(i));
        if r % 1_000_000 >= ppm && call >= self.minimum.load(Ordering::Relaxed) {
            return None;
        }
        let kind = (r / 1_000_000) % self.kinds.len() as u64;
        Some(self.kinds[kind as usize])
    }

    /// Draws once and counts what it injects.
    pub fn draw(&self) -> Option<&'static str> {
        let kind = self.pick()?;
        self.record(kind);
        Some(kind)
    }

    /// Counts one injected fault of `kind`.
    pub fn record(&self, kind: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Faults injected so far, by kind (every kind listed, zeros included).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        self.kinds
            .iter()
            .map(|k| (*k, counts.get(k).copied().unwrap_or(0)))
            .collect()
    }

    /// Calls that drew while the boundary was on (the denominator of its rate).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Faults injected so far, all kinds.
    pub fn injected(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// One invocation's abort, as a Lambda timeout or crash would cut it short: the invocation
/// dies at its `nth` step check (after a claim or after Stripe, whichever comes then).
#[derive(Debug)]
pub struct Abort {
    nth: usize,
    seen: AtomicUsize,
    chaos: Arc<Chaos>,
}

/// Where an invocation can die: around each Stripe call, as a Lambda timeout or crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The claim transaction committed; Stripe not called yet.
    AfterClaim,
    /// Stripe accepted the event; the ledger not yet marked.
    AfterStripe,
}

/// The invocation died (a simulated Lambda timeout or crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    /// Where.
    pub step: Step,
    /// The meter event it died at (or why).
    pub identifier: String,
}

/// Decides where an invocation dies.
pub trait Faults: Send + Sync {
    /// Called at each step; an error kills the invocation there.
    fn check(&self, step: Step, identifier: &str) -> Result<(), Crash>;
}

/// No faults.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaults;

impl Faults for NoFaults {
    fn check(&self, _step: Step, _identifier: &str) -> Result<(), Crash> {
        Ok(())
    }
}

/// A Stripe port that dies where `faults` says: before a call (after the claim) or after a
/// call that succeeded (after Stripe). Dying means never returning; [`invoke`] then drops the
/// handler's future, which is exactly what a Lambda timeout does.
struct Crashing<'a> {
    inner: &'a dyn MeterSink,
    faults: &'a dyn Faults,
    crash: Mutex<Option<Crash>>,
    died: Notify,
}

impl Crashing<'_> {
    async fn check(&self, step: Step, identifier: &str) {
        if let Err(crash) = self.faults.check(step, identifier) {
            *self.crash.lock().unwrap_or_else(|e| e.into_inner()) = Some(crash);
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
    }

    async fn died(&self) -> Crash {
        self.died.notified().await;
        let crash = self.crash.lock().unwrap_or_else(|e| e.into_inner()).clone();
        crash.unwrap_or(Crash {
            step: Step::AfterClaim,
            identifier: String::new(),
        })
    }
}

#[async_trait]
impl MeterSink for Crashing<'_> {
    async fn send(&self, event: &MeterEvent) -> tracemeter::Result<Delivery> {
        self.check(Step::AfterClaim, &event.identifier).await;
        let result = self.inner.send(event).await;
        if result.is_ok() {
            self.check(Step::AfterStripe, &event.identifier).await;
        }
        result
    }

    fn batches(&self) -> bool {
        self.inner.batches()
    }

    async fn send_batch(&self, events: &[MeterEvent]) -> Vec<tracemeter::Result<Delivery>> {
        for e in events {
            self.check(Step::AfterClaim, &e.identifier).await;
        }
        let results = self.inner.send_batch(events).await;
        for (e, r) in events.iter().zip(&results) {
            if r.is_ok() {
                self.check(Step::AfterStripe, &e.identifier).await;
            }
        }
        results
    }
}

/// Runs the real handler with `faults` around its Stripe calls. `Err`: the invocation died
/// (its future was dropped at the fault, as a Lambda timeout drops it) and the whole batch
/// comes back.
pub async fn invoke(
    deps: &Deps<'_>,
    faults: &dyn Faults,
    event: SqsEvent,
    deadline: DateTime<Utc>,
) -> Result<SqsBatchResponse, Crash> {
    let meter = Crashing {
        inner: deps.meter,
        faults,
        crash: Mutex::new(None),
        died: Notify::new(),
    };
    let deps = Deps {
        meter: &meter,
        ..*deps
    };
    tokio::select! {
        biased;
        crash = meter.died() => Err(crash),
        handled = process::handle(&deps, event, deadline) => Ok(handled.response),
    }
}

/// The process boundary's fault kinds (named by where the abort landed; an invocation that
/// passed fewer step checks than planned dies after its work, before it answers).
pub const PROCESS_KINDS: &[&str] = &[
    "abort_after_claim",
    "abort_after_stripe",
    "abort_before_response",
];

impl Abort {
    /// Decides, once per invocation of a batch of `messages`, whether it dies and at which
    /// of its step checks (each message passes up to two). An abort planned past the last
    /// check (a batch of already billed traces) is left to [`Abort::before_response`].
    pub fn plan(chaos: &Arc<Chaos>, messages: usize) -> Option<Abort> {
        chaos.pick()?;
        Some(Abort {
            nth: chaos.below(messages.max(1) as u64) as usize,
            seen: AtomicUsize::new(0),
            chaos: chaos.clone(),
        })
    }
}

impl Abort {
    /// After the handler returned: if the planned abort never came (fewer checks than
    /// planned), the invocation dies now, before its answer reaches the event source
    /// mapping, as a timeout at the very end would. True when it dies here.
    pub fn before_response(&self) -> bool {
        if self.seen.load(Ordering::Relaxed) > self.nth {
            return false;
        }
        self.chaos.record("abort_before_response");
        true
    }
}

impl Faults for Abort {
    fn check(&self, step: Step, identifier: &str) -> Result<(), Crash> {
        if self.seen.fetch_add(1, Ordering::Relaxed) != self.nth {
            return Ok(());
        }
        self.chaos.record(match step {
            Step::AfterClaim => "abort_after_claim",
            Step::AfterStripe => "abort_after_stripe",
        });
        Err(Crash {
            step,
            identifier: identifier.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_holds_and_every_kind_is_drawn() {
        let chaos = Chaos::new("langfuse", &["a", "b", "c"], 0.1, 7);
        for _ in 0..100_000 {
            chaos.draw();
        }
        let counts = chaos.counts();
        let total = chaos.injected();
        assert!((9_500..=10_500).contains(&total), "{total}");
        for (kind, n) in counts {
            assert!(n > 3_000, "{kind}: {n}");
        }
        chaos.set_rate(0.0);
        assert!((0..1000).all(|_| chaos.draw().is_none()));
        assert_eq!(chaos.injected(), total);
    }

    #[test]
    fn the_minimum_draws_a_fault_on_the_first_calls_whatever_the_rate() {
        let chaos = Chaos::new("process", PROCESS_KINDS, 0.000_001, 3);
        chaos.set_minimum(3);
        let first: Vec<bool> = (0..3).map(|_| chaos.draw().is_some()).collect();
        assert_eq!(first, vec![true; 3]);
        assert!((0..1000).filter(|_| chaos.draw().is_some()).count() < 3);
        // Switched off, the minimum does not apply.
        let off = Chaos::new("process", PROCESS_KINDS, 0.0, 3);
        off.set_minimum(3);
        assert!(off.draw().is_none());
    }

    #[test]
    fn an_abort_fires_once_at_its_check() {
        let chaos = Chaos::new("process", PROCESS_KINDS, 1.0, 1);
        let abort = Abort::plan(&chaos, 3).unwrap();
        let mut fired = 0;
        for i in 0..3 {
            for step in [Step::AfterClaim, Step::AfterStripe] {
                if abort.check(step, &format!("t{i}")).is_err() {
                    fired += 1;
                }
            }
        }
        assert_eq!(fired, 1);
        assert_eq!(chaos.injected(), 1);
        assert!(!abort.before_response(), "already died at its check");
        // A batch with fewer checks than planned dies before its response.
        let late = Abort {
            nth: 5,
            seen: AtomicUsize::new(0),
            chaos: chaos.clone(),
        };
        assert!(late.check(Step::AfterClaim, "t").is_ok());
        assert!(late.before_response());
        assert_eq!(chaos.counts()["abort_before_response"], 1);
        let none = Chaos::new("process", PROCESS_KINDS, 0.0, 1);
        assert!(Abort::plan(&none, 10).is_none());
    }
}
