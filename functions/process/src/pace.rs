//! The instance's pace: how long a trace took in its recent slices, shared by its
//! invocations (built once per cold start), so each slice is sized to the time left
//! (`tracemeter::domain::deadline::slice_size`) and a slow spell (a throttled table, a slow
//! Stripe) shrinks the slices instead of running the invocation past its deadline.

use std::sync::Mutex;
use std::time::Duration;
use tracemeter::domain::deadline::next_pace;

/// Time per trace, as measured (unknown until the first slice).
#[derive(Debug, Default)]
pub struct Pace(Mutex<Option<Duration>>);

impl Pace {
    /// The current estimate.
    pub(crate) fn per_trace(&self) -> Option<Duration> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slice of `traces` took `elapsed`.
    pub(crate) fn observe(&self, elapsed: Duration, traces: usize) {
        let mut pace = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *pace = next_pace(*pace, elapsed, traces);
    }
}
