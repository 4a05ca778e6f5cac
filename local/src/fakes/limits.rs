//! Rate limits and injected failures of the fakes.

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// Outcome of a [`FixedWindow`] check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateDecision {
    /// No limit configured.
    Unlimited,
    /// Within the limit.
    Allowed {
        limit: u32,
        remaining: u32,
        reset_unix: i64,
    },
    /// Over the limit until the window resets.
    Limited {
        limit: u32,
        retry_after_secs: u64,
        reset_unix: i64,
    },
}

/// A fixed-window request counter (window starts at the first request after the previous one
/// ended).
#[derive(Debug, Clone)]
pub(crate) struct FixedWindow {
    limit: Option<u32>,
    window: Duration,
    started: Option<(Instant, DateTime<Utc>)>,
    count: u32,
}

impl FixedWindow {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            limit: None,
            window,
            started: None,
            count: 0,
        }
    }

    /// Sets the limit (None = unlimited) and starts a fresh window.
    pub(crate) fn set_limit(&mut self, limit: Option<u32>) {
        self.limit = limit;
        self.started = None;
        self.count = 0;
    }

    /// Sets the limit per `window` and starts a fresh window.
    pub(crate) fn set_limit_per(&mut self, limit: Option<u32>, window: Duration) {
        self.window = window;
        self.set_limit(limit);
    }

    /// Counts one request and says whether it may proceed.
    pub(crate) fn check(&mut self) -> RateDecision {
        let Some(limit) = self.limit else {
            return RateDecision::Unlimited;
        };
        let now = Instant::now();
        let (started, started_wall) = match self.started {
            Some((started, wall)) if now.duration_since(started) < self.window => (started, wall),
            _ => {
                let fresh = (now, Utc::now());
                self.started = Some(fresh);
                self.count = 0;
                fresh
            }
        };
        let reset_at = started + self.window;
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::zero());
        let reset_wall = started_wall + window;
        // Round the reset up to a whole second so a client never retries early.
        let reset_unix = if reset_wall.timestamp_subsec_nanos() > 0 {
            reset_wall.timestamp() + 1
        } else {
            reset_wall.timestamp()
        };
        if self.count >= limit {
            let left = reset_at.saturating_duration_since(now);
            let mut retry_after_secs = left.as_secs();
            if left.subsec_nanos() > 0 {
                retry_after_secs += 1;
            }
            return RateDecision::Limited {
                limit,
                retry_after_secs: retry_after_secs.max(1),
                reset_unix,
            };
        }
        self.count += 1;
        RateDecision::Allowed {
            limit,
            remaining: limit - self.count,
            reset_unix,
        }
    }
}

/// "Answer the next `remaining` requests with `status`."
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailPlan {
    remaining: usize,
    status: u16,
}

impl FailPlan {
    pub(crate) fn new(remaining: usize, status: u16) -> Self {
        Self { remaining, status }
    }

    /// Consumes one planned failure, returning its status.
    pub(crate) fn take(&mut self) -> Option<u16> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_limits_and_reports_reset() {
        let mut window = FixedWindow::new(Duration::from_secs(60));
        assert_eq!(window.check(), RateDecision::Unlimited);
        window.set_limit(Some(2));
        let now = Utc::now().timestamp();
        assert!(matches!(
            window.check(),
            RateDecision::Allowed { remaining: 1, .. }
        ));
        assert!(matches!(
            window.check(),
            RateDecision::Allowed { remaining: 0, .. }
        ));
        match window.check() {
            RateDecision::Limited {
                limit,
                retry_after_secs,
                reset_unix,
            } => {
                assert_eq!(limit, 2);
                assert!((1..=60).contains(&retry_after_secs));
                assert!(reset_unix >= now + 59 && reset_unix <= now + 62);
            }
            other => panic!("expected limited, got {other:?}"),
        }
    }
}
