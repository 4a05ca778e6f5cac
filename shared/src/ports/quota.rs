//! The deployment-wide Langfuse request budget (`domain::quota`).

use crate::domain::quota::{Grant, Taken};
use crate::domain::returns::Returns;
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// One request budget shared by every function instance of a deployment.
#[async_trait]
pub trait RequestQuota: Send + Sync {
    /// Takes the budget for one request about to be sent at `now`, or says how long until
    /// asking again is worth it. Never grants what the budget does not cover.
    async fn take(&self, now: DateTime<Utc>) -> Result<Grant>;

    /// Takes the budget for up to `want` requests about to be sent at `now`, together: how
    /// many were granted (`0..=want`), and when fewer, how long until the budget has room
    /// for the rest (or the whole budget, if the rest is more). A budget kept in a table takes them in one conditional add, where a take each
    /// would cost a read and a write per request. By default, one [`take`](Self::take) at a
    /// time until one is refused.
    async fn take_up_to(&self, now: DateTime<Utc>, want: u32) -> Result<Taken> {
        let mut granted = 0;
        while granted < want {
            if let Grant::Wait(wait) = self.take(now).await? {
                return Ok(Taken { granted, wait });
            }
            granted += 1;
        }
        Ok(Taken {
            granted,
            wait: Duration::ZERO,
        })
    }

    /// Books the return of `n` messages deferred for lack of this budget, each needing
    /// `requests_per_message` requests, none before `earliest` nor after `latest`, on the
    /// schedule every instance shares ([`crate::domain::returns`]): each one's return time.
    /// `None` when the budget keeps no schedule (the caller spreads them by itself).
    async fn book_returns(
        &self,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        n: usize,
        requests_per_message: f64,
    ) -> Result<Option<Returns>> {
        let _ = (earliest, latest, n, requests_per_message);
        Ok(None)
    }
}

/// No budget to keep (self-hosted Langfuse): every request is granted, nothing is counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unmetered;

#[async_trait]
impl RequestQuota for Unmetered {
    async fn take(&self, _now: DateTime<Utc>) -> Result<Grant> {
        Ok(Grant::Granted)
    }

    async fn take_up_to(&self, _now: DateTime<Utc>, want: u32) -> Result<Taken> {
        Ok(Taken {
            granted: want,
            wait: Duration::ZERO,
        })
    }
}
