//! The deployment-wide Langfuse request budget (`domain::quota`).

use crate::domain::quota::Grant;
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One request budget shared by every function instance of a deployment.
#[async_trait]
pub trait RequestQuota: Send + Sync {
    /// Takes the budget for one request about to be sent at `now`, or says how long until
    /// asking again is worth it. Never grants what the budget does not cover.
    async fn take(&self, now: DateTime<Utc>) -> Result<Grant>;

    /// Takes the budget for up to `want` requests about to be sent at `now`, together: how
    /// many were granted (`0..=want`); the rest waits for the next slot
    /// ([`crate::domain::quota::wait_for_next_slot`]). A budget kept in a table takes them
    /// in one conditional add, where a take each would cost a read and a write per request.
    /// By default, one [`take`](Self::take) at a time until one is refused.
    async fn take_up_to(&self, now: DateTime<Utc>, want: u32) -> Result<u32> {
        let mut granted = 0;
        while granted < want && self.take(now).await? == Grant::Granted {
            granted += 1;
        }
        Ok(granted)
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

    async fn take_up_to(&self, _now: DateTime<Utc>, want: u32) -> Result<u32> {
        Ok(want)
    }
}
