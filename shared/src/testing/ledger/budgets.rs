//! `BudgetStore` and `CustomerDirectory`: policies, counters, budget events, user mappings.

use super::{MemoryLedger, ms};
use crate::adapters::dynamo::budget_event_key;
use crate::domain::budget::{BudgetMode, BudgetPolicy, BudgetUsage};
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
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
        let state = self.state();
        let mut usage = match state.counters.get(&key) {
            Some(c) => BudgetUsage {
                used: read(c.used),
                capped: read(c.capped),
                exceeded: c.exceeded,
                clears: c.clears,
                ..BudgetUsage::default()
            },
            None => BudgetUsage::default(),
        };
        // The events recorded, as the table marks them on the counter.
        for e in state.events.values() {
            if e.customer_id != customer_id || e.period != period {
                continue;
            }
            match e.kind {
                BudgetEventKind::ThresholdCrossed { percent } => {
                    usage.alerted.insert(percent);
                }
                BudgetEventKind::LimitReached => {
                    usage.reached = usage.reached.max(Some(e.episode));
                }
                BudgetEventKind::LimitCleared => {}
            }
        }
        Ok(usage)
    }

    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool> {
        let key = budget_event_key(event);
        let mut state = self.state();
        if state.events.contains_key(&key) {
            return Ok(false);
        }
        let at = ms(event.at);
        state.events.insert(
            key,
            BudgetEvent {
                at,
                ..event.clone()
            },
        );
        Ok(true)
    }

    async fn clear_exceeded(&self, event: &BudgetEvent) -> Result<bool> {
        let key = (event.customer_id.clone(), event.period.clone());
        let mut state = self.state();
        // As the transaction's condition: a raised flag in the event's episode, and under a
        // hard limit, usage under it.
        let limit = i128::from(event.limit);
        let hard = event.mode == BudgetMode::Hard && event.limit > 0;
        let event_key = budget_event_key(event);
        if state.events.contains_key(&event_key) {
            return Ok(false);
        }
        let Some(counter) = state.counters.get_mut(&key).filter(|c| {
            c.exceeded && c.clears == event.episode && (!hard || c.used.is_none_or(|u| u < limit))
        }) else {
            return Ok(false);
        };
        counter.exceeded = false;
        counter.clears += 1;
        counter.limit = Some(event.limit).filter(|l| *l > 0);
        let at = ms(event.at);
        state.events.insert(
            event_key,
            BudgetEvent {
                at,
                ..event.clone()
            },
        );
        Ok(true)
    }

    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        episode: u64,
        _now: DateTime<Utc>,
    ) -> Result<bool> {
        let key = (customer_id.to_string(), period.to_string());
        let mut state = self.state();
        let counter = state.counters.entry(key).or_default();
        if counter.clears != episode {
            return Ok(false);
        }
        counter.exceeded = true;
        Ok(true)
    }
}

#[async_trait]
impl CustomerDirectory for MemoryLedger {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self.state().users.get(user_id).cloned())
    }
}
