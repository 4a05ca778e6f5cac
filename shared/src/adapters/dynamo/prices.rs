//! `PriceBook`: price versions as `PRICE#<scope>` / `FROM#<RFC 3339 ms>` items, written with
//! a conditional put (`attribute_not_exists(pk)`), read with one consistent `Query`.

use super::DynamoLedger;
use super::items::{Item, SERVICE, condition_held, get_s, get_time, key_item, ms, n, names, s};
use crate::domain::price_book::{PriceScope, PriceVersion, TokenPrice, UnpricedRule};
use crate::error::{Error, Result};
use crate::ports::{PriceBook, PutVersion};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The key of a scope's version from `from`.
pub fn price_key(scope: &PriceScope, from: DateTime<Utc>) -> (String, String) {
    (
        format!("PRICE#{}", scope.key()),
        format!("FROM#{}", from.to_rfc3339_opts(SecondsFormat::Millis, true)),
    )
}

fn item_of(v: &PriceVersion, now: DateTime<Utc>) -> Item {
    let tokens: Vec<Value> = v
        .token_prices
        .iter()
        .map(|t| {
            json!({"pattern": t.pattern, "input": t.input_per_million.normalize().to_string(),
                   "output": t.output_per_million.normalize().to_string()})
        })
        .collect();
    let mut item = key_item(price_key(&v.scope, v.effective_from));
    item.extend([
        ("effective_from".to_string(), ms(v.effective_from)),
        (
            "credit_price_usd".to_string(),
            n(v.credit_price_usd.normalize()),
        ),
        ("margin".to_string(), n(v.margin.normalize())),
        (
            "compute_usd_per_minute".to_string(),
            n(v.compute_usd_per_minute.normalize()),
        ),
        (
            "token_prices".to_string(),
            s(Value::Array(tokens).to_string()),
        ),
        (
            "token_prices_always".to_string(),
            AttributeValue::Bool(v.token_prices_always),
        ),
        ("unpriced".to_string(), s(v.unpriced.as_str())),
        ("created_at".to_string(), ms(now)),
    ]);
    item
}

fn decimal(item: &Item, name: &str) -> Option<Decimal> {
    match item.get(name)? {
        AttributeValue::N(v) => v.parse().ok(),
        _ => None,
    }
}

/// A stored version, `None` when the item is malformed.
fn parse_version(item: &Item) -> Option<PriceVersion> {
    let scope = PriceScope::parse(get_s(item, "pk")?.strip_prefix("PRICE#")?);
    let tokens: Vec<Value> = serde_json::from_str(get_s(item, "token_prices")?).ok()?;
    let token_prices = tokens
        .iter()
        .map(|t| {
            Some(TokenPrice {
                pattern: t["pattern"].as_str()?.to_string(),
                input_per_million: t["input"].as_str()?.parse().ok()?,
                output_per_million: t["output"].as_str()?.parse().ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(PriceVersion {
        scope,
        effective_from: get_time(item, "effective_from")?,
        credit_price_usd: decimal(item, "credit_price_usd")?,
        margin: decimal(item, "margin")?,
        compute_usd_per_minute: decimal(item, "compute_usd_per_minute")?,
        token_prices,
        token_prices_always: matches!(
            item.get("token_prices_always"),
            Some(AttributeValue::Bool(true))
        ),
        unpriced: UnpricedRule::parse(get_s(item, "unpriced")?)?,
    })
}

fn malformed(item: &Item) -> Error {
    Error::transient(
        SERVICE,
        format!("price version item is malformed: {item:?}"),
    )
}

#[async_trait]
impl PriceBook for DynamoLedger {
    async fn versions(&self, scope: &PriceScope) -> Result<Vec<PriceVersion>> {
        let condition = "#pk = :pk AND begins_with(#sk, :from)";
        let values = HashMap::from([
            (":pk".to_string(), s(format!("PRICE#{}", scope.key()))),
            (":from".to_string(), s("FROM#")),
        ]);
        let items = self.query_all(None, condition, values, true).await?;
        let mut out = items
            .iter()
            .map(|item| parse_version(item).ok_or_else(|| malformed(item)))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|v| v.effective_from);
        Ok(out)
    }

    async fn put_version(&self, version: &PriceVersion, now: DateTime<Utc>) -> Result<PutVersion> {
        let condition = "attribute_not_exists(#pk)";
        let item = item_of(version, now);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[condition])))
            .send()
            .await;
        if condition_held("PutItem", result)? {
            return Ok(PutVersion::Written);
        }
        let key = price_key(&version.scope, version.effective_from);
        let stored = self.get(key, true).await?.ok_or_else(|| {
            Error::transient(SERVICE, "a price version vanished after a refused put")
        })?;
        let existing = parse_version(&stored).ok_or_else(|| malformed(&stored))?;
        let wanted = parse_version(&item).ok_or_else(|| malformed(&item))?;
        Ok(if existing == wanted {
            PutVersion::Unchanged
        } else {
            PutVersion::Conflict(Box::new(existing))
        })
    }
}
