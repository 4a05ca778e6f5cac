//! `BudgetStore` and `CustomerDirectory`: policies, counters, alerts, user mappings.

use super::{Alert, MemoryLedger, ms};
use crate::domain::budget::{BudgetPolicy, BudgetUsage};
use crate::error::Result;
use crate::ports::{BudgetStore, CustomerDirectory};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl BudgetStore for MemoryLedger {
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>> {
        // A stored limit of 0 reads as no limit, as the adapter reads it.
        Ok(self
            .state()
            .policies
            .get(customer_id)
            .map(|p| BudgetPolicy {
                limit: p.limit.filter(|l| *l > 0),
                ..p.clone()
            }))
    }

    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        let key = (customer_id.to_string(), period.to_string());
        // A number that is no u64 (below zero) reads as 0, as `get_u64` reads it.
        let read = |v: Option<i128>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        Ok(match self.state().counters.get(&key) {
            Some(c) => BudgetUsage {
                used: read(c.used),
                capped: read(c.capped),
                exceeded: c.exceeded,
            },
            None => BudgetUsage::default(),
        })
    }

    async fn record_alert(
        &self,
        customer_id: &str,
        period: &str,
        threshold: u32,
        usage: BudgetUsage,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let key = (customer_id.to_string(), period.to_string(), threshold);
        let mut state = self.state();
        if state.alerts.contains_key(&key) {
            return Ok(false);
        }
        state.alerts.insert(
            key,
            Alert {
                customer_id: customer_id.to_string(),
                period: period.to_string(),
                threshold_pct: threshold,
                used: usage.used,
                limit,
                created_at: ms(now),
            },
        );
        Ok(true)
    }

    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        _now: DateTime<Utc>,
    ) -> Result<()> {
        let key = (customer_id.to_string(), period.to_string());
        self.state().counters.entry(key).or_default().exceeded = true;
        Ok(())
    }
}

#[async_trait]
impl CustomerDirectory for MemoryLedger {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self.state().users.get(user_id).cloned())
    }
}
