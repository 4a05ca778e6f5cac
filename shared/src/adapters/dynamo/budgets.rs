//! Budgets: a customer's policy, the per-period counter, alerts recorded once per
//! threshold, and the exceeded flag.

use super::DynamoLedger;
use super::items::{
    Item, SERVICE, alert_key, budget_key, condition_held, get_s, get_u64, key_item, ms, n,
    policy_key, s,
};
use crate::domain::budget::{BudgetMode, BudgetPolicy, BudgetUsage, Period};
use crate::error::{Error, Result};
use crate::ports::BudgetStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

impl DynamoLedger {
    /// Writes a customer's budget policy (operator tooling and tests).
    pub async fn put_budget_policy(&self, customer: &str, policy: &BudgetPolicy) -> Result<()> {
        let mut item = key_item(policy_key(customer));
        if let Some(limit) = policy.limit {
            item.insert("limit".into(), n(limit));
        }
        item.insert("period".into(), s(policy.period.as_str()));
        item.insert("mode".into(), s(policy.mode.as_str()));
        item.insert(
            "thresholds".into(),
            AttributeValue::L(policy.thresholds.iter().map(|t| n(*t)).collect()),
        );
        self.put(item).await
    }
}

#[async_trait]
impl BudgetStore for DynamoLedger {
    async fn budget_policy(&self, customer_id: &str) -> Result<Option<BudgetPolicy>> {
        let Some(item) = self.get(policy_key(customer_id), false).await? else {
            return Ok(None);
        };
        parse_policy(customer_id, &item).map(Some)
    }

    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        Ok(
            match self.get(budget_key(customer_id, period), true).await? {
                Some(item) => BudgetUsage {
                    used: get_u64(&item, "used").unwrap_or(0),
                    capped: get_u64(&item, "capped").unwrap_or(0),
                    exceeded: item
                        .get("exceeded")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false),
                },
                None => BudgetUsage::default(),
            },
        )
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
        let mut item = key_item(alert_key(customer_id, period, threshold));
        item.insert("customer_id".into(), s(customer_id));
        item.insert("period".into(), s(period));
        item.insert("threshold_pct".into(), n(threshold));
        item.insert("used".into(), n(usage.used));
        item.insert("limit".into(), n(limit));
        item.insert("created_at".into(), ms(now));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .send()
            .await;
        condition_held("PutItem", result)
    }

    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.update(
            budget_key(customer_id, period),
            "SET #exceeded = :true, #exceeded_at = if_not_exists(#exceeded_at, :now)",
            None,
            HashMap::from([
                (":true".into(), AttributeValue::Bool(true)),
                (":now".into(), ms(now)),
            ]),
        )
        .await
        .map(|_| ())
    }
}

/// A budget policy item, read back (`customer_id` names it in errors).
pub(super) fn parse_policy(customer_id: &str, item: &Item) -> Result<BudgetPolicy> {
    let bad = |what: &str| {
        Error::transient(
            SERVICE,
            format!("budget policy of customer {customer_id} is malformed: {what}"),
        )
    };
    let period =
        Period::parse(get_s(item, "period").unwrap_or("month")).ok_or_else(|| bad("period"))?;
    let mode =
        BudgetMode::parse(get_s(item, "mode").unwrap_or("hard")).ok_or_else(|| bad("mode"))?;
    let thresholds = match item.get("thresholds") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| v.as_n().ok().and_then(|n| n.parse::<u32>().ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| bad("thresholds"))?,
        _ => vec![50, 80, 100],
    };
    Ok(BudgetPolicy {
        limit: get_u64(item, "limit").filter(|l| *l > 0),
        period,
        mode,
        thresholds,
    })
}
