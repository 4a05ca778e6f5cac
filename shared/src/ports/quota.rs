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
}

/// No budget to keep (self-hosted Langfuse): every request is granted, nothing is counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unmetered;

#[async_trait]
impl RequestQuota for Unmetered {
    async fn take(&self, _now: DateTime<Utc>) -> Result<Grant> {
        Ok(Grant::Granted)
    }
}
