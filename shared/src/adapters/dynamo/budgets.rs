//! Budgets: a customer's policy, the per-period counter, budget events recorded once each
//! (threshold crossed, limit reached, limit cleared), and the exceeded flag.

use super::DynamoLedger;
use super::batch_get::batch_get;
use super::items::{
    Item, SERVICE, budget_event_key, budget_key, condition_held, get_s, get_u64, key_item, ms, n,
    policy_key, s,
};
use crate::domain::budget::{BudgetMode, BudgetPolicy, BudgetUsage, Period};
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::error::{Error, Result};
use crate::ports::BudgetStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
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

    /// One eventually consistent `BatchGetItem` per 100 customers.
    async fn budget_policies_of(
        &self,
        customer_ids: &[String],
    ) -> Result<HashMap<String, Option<BudgetPolicy>>> {
        let mut out: HashMap<String, Option<BudgetPolicy>> =
            customer_ids.iter().map(|c| (c.clone(), None)).collect();
        for (customer, item) in self
            .batch_by_key(customer_ids, policy_key, "CUSTOMER#")
            .await?
        {
            let policy = parse_policy(&customer, &item)?;
            out.insert(customer, Some(policy));
        }
        Ok(out)
    }

    async fn budget_usage(&self, customer_id: &str, period: &str) -> Result<BudgetUsage> {
        let item = self.get(budget_key(customer_id, period), true).await?;
        Ok(item.as_ref().map(usage_of).unwrap_or_default())
    }

    /// One strongly consistent `BatchGetItem` per 100 counters.
    async fn budget_usages(
        &self,
        counters: &[(String, String)],
    ) -> Result<HashMap<(String, String), BudgetUsage>> {
        let by_key: HashMap<(String, String), &(String, String)> = counters
            .iter()
            .map(|c| (budget_key(&c.0, &c.1), c))
            .collect();
        let keys = by_key.keys().map(|k| key_item(k.clone())).collect();
        let mut out: HashMap<(String, String), BudgetUsage> = counters
            .iter()
            .map(|c| (c.clone(), BudgetUsage::default()))
            .collect();
        for item in batch_get(&self.client, &self.table, keys, None, true).await? {
            let key = (get_s(&item, "pk"), get_s(&item, "sk"));
            if let (Some(pk), Some(sk)) = key
                && let Some(counter) = by_key.get(&(pk.to_string(), sk.to_string()))
            {
                out.insert((*counter).clone(), usage_of(&item));
            }
        }
        Ok(out)
    }

    /// A conditional put of the event's item, then the mark on the counter that it is
    /// recorded (whoever put it), so that a check reading the counter does not put it again.
    /// Should the mark fail, the next check's put is refused and marks it.
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(event)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .send()
            .await;
        let created = condition_held("PutItem", result)?;
        if let Err(e) = self.mark_recorded(event).await {
            // The event exists either way; a later check's put is refused and marks it.
            tracing::warn!(customer = %event.customer_id, period = %event.period, error = %e,
                           "could not mark the budget event on its counter");
        }
        Ok(created)
    }

    async fn clear_exceeded(&self, event: &BudgetEvent) -> Result<bool> {
        let (customer, period) = (event.customer_id.as_str(), event.period.as_str());
        let (update, condition, values) = clearing(event);
        let clear = self.tx_update(
            budget_key(customer, period),
            update,
            Some(&condition),
            values,
        )?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_item(event)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .build()
            .map_err(|e| Error::transient(SERVICE, format!("building a put: {e}")))?;
        let put = TransactWriteItem::builder().put(put).build();
        let Some(reasons) = self.transact(vec![clear, put]).await? else {
            return Ok(true);
        };
        // The flag is down, usage is not under the limit, or another caller cleared this
        // episode (and wrote its event) first: nothing changed.
        if reasons.iter().any(|r| r.0 == "ConditionalCheckFailed") {
            return Ok(false);
        }
        Err(Error::transient(
            SERVICE,
            format!("clearing the exceeded flag of {customer} {period}: {reasons:?}"),
        ))
    }

    async fn set_exceeded(
        &self,
        customer_id: &str,
        period: &str,
        episode: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.update(
            budget_key(customer_id, period),
            "SET #exceeded = :true, #exceeded_at = if_not_exists(#exceeded_at, :now)",
            Some(episode_condition(episode)),
            HashMap::from([
                (":true".into(), AttributeValue::Bool(true)),
                (":now".into(), ms(now)),
                (":episode".into(), n(episode)),
            ]),
        )
        .await
    }
}

/// A counter item read back (the processor's check, `budget show`, reconcile).
pub(super) fn usage_of(item: &Item) -> BudgetUsage {
    BudgetUsage {
        used: get_u64(item, "used").unwrap_or(0),
        capped: get_u64(item, "capped").unwrap_or(0),
        exceeded: item
            .get("exceeded")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        clears: get_u64(item, "clears").unwrap_or(0),
        alerted: item
            .get("alerted")
            .and_then(|v| v.as_ns().ok())
            .map(|ns| ns.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default(),
        reached: get_u64(item, "reached"),
    }
}

impl DynamoLedger {
    /// Marks a recorded threshold or limit event on its period's counter (what
    /// [`BudgetUsage::alerted`] and [`BudgetUsage::reached`] read).
    async fn mark_recorded(&self, event: &BudgetEvent) -> Result<()> {
        let (update, condition, value) = match event.kind {
            BudgetEventKind::ThresholdCrossed { percent } => (
                "ADD #alerted :mark",
                None,
                AttributeValue::Ns(vec![percent.to_string()]),
            ),
            // Episodes only grow: a later episode's mark is never set back.
            BudgetEventKind::LimitReached => (
                "SET #reached = :mark",
                Some("attribute_not_exists(#reached) OR #reached < :mark"),
                n(event.episode),
            ),
            BudgetEventKind::LimitCleared => return Ok(()),
        };
        let values = HashMap::from([(":mark".to_string(), value)]);
        self.update(
            budget_key(&event.customer_id, &event.period),
            update,
            condition,
            values,
        )
        .await
        .map(|_| ())
    }
}

/// Only in the episode the caller read: a caller that decided on an older reading of the
/// counter changes nothing (a clearing since then started a new episode).
fn episode_condition(episode: u64) -> &'static str {
    match episode {
        0 => "(attribute_not_exists(#clears) OR #clears = :episode)",
        _ => "#clears = :episode",
    }
}

/// Clearing the flag ends the episode (`clears` + 1); the new limit goes on the counter (a
/// gateway reads it there; none for a budget without a limit). Only a raised flag, in the
/// event's episode, and under a hard limit only while usage is under it.
fn clearing(event: &BudgetEvent) -> (&'static str, String, Item) {
    let mut values = HashMap::from([
        (":false".into(), AttributeValue::Bool(false)),
        (":true".into(), AttributeValue::Bool(true)),
        (":one".into(), n(1u64)),
        (":episode".into(), n(event.episode)),
    ]);
    let mut condition = format!("#exceeded = :true AND {}", episode_condition(event.episode));
    if event.mode == BudgetMode::Hard && event.limit > 0 {
        condition.push_str(" AND (attribute_not_exists(#used) OR #used < :limit)");
    }
    let update = if event.limit > 0 {
        values.insert(":limit".into(), n(event.limit));
        "SET #exceeded = :false, #limit = :limit ADD #clears :one REMOVE #exceeded_at"
    } else {
        "SET #exceeded = :false ADD #clears :one REMOVE #exceeded_at, #limit"
    };
    (update, condition, values)
}

/// A budget event's item: its key, what the pipe's input template reads (`detail_type`,
/// `customer_id`, `period`, `used`, `limit`, `percent`, `mode`, `at`), and for a threshold
/// the `threshold_pct` the operator's `budget show` lists.
fn event_item(event: &BudgetEvent) -> Item {
    let mut item = key_item(budget_event_key(event));
    item.insert("detail_type".into(), s(event.kind.detail_type()));
    item.insert("customer_id".into(), s(&event.customer_id));
    item.insert("period".into(), s(&event.period));
    if let BudgetEventKind::ThresholdCrossed { percent } = event.kind {
        item.insert("threshold_pct".into(), n(percent));
    }
    item.insert("used".into(), n(event.used));
    item.insert("limit".into(), n(event.limit));
    item.insert("percent".into(), n(event.percent()));
    item.insert("mode".into(), s(event.mode.as_str()));
    item.insert(
        "at".into(),
        s(event.at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    item.insert("created_at".into(), ms(event.at));
    item
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
