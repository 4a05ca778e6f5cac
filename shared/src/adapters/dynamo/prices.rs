//! `PriceBook`: price versions as `PRICE#<scope>` / `FROM#<RFC 3339 ms>` items, written with
//! a conditional put (`attribute_not_exists(pk)`), read with one consistent `Query` a scope.
//!
//! The index, `PRICE#default` / `SCOPES`, sits in the default scope's partition so that one
//! `Query` reads the default versions and the customers that hold versions of their own
//! (`scopes`, a string set). `put_version` adds a customer to it BEFORE storing the version,
//! so the index never misses a stored version; `complete` is set by `build_index` (one
//! filtered `Scan`), which finds the versions stored before the index existed. Until then a
//! reader cannot trust the index and reads every customer's scope.

use super::DynamoLedger;
use super::items::{Item, SERVICE, condition_held, get_s, get_time, key_item, ms, n, names, s};
use crate::domain::price_book::{
    DefaultBook, PriceScope, PriceVersion, ScopeIndex, TokenPrice, UnpricedRule,
};
use crate::error::{Error, Result};
use crate::ports::{PriceBook, PutVersion};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

/// The index's sort key in the default scope's partition.
const INDEX_SK: &str = "SCOPES";

/// The index's key.
fn index_key() -> (String, String) {
    (
        format!("PRICE#{}", PriceScope::Default.key()),
        INDEX_SK.to_string(),
    )
}

/// The index as read: complete only once `build_index` has run.
fn parse_index(item: &Item) -> ScopeIndex {
    if !matches!(item.get("complete"), Some(AttributeValue::Bool(true))) {
        return ScopeIndex::Unknown;
    }
    let names = match item.get("scopes") {
        Some(AttributeValue::Ss(names)) => names.iter().cloned().collect(),
        _ => BTreeSet::new(),
    };
    ScopeIndex::Complete(names)
}

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

impl DynamoLedger {
    /// Adds customers to the index (`ADD` to a string set: concurrent writers all land),
    /// marking it complete when `complete`.
    async fn index_scopes(&self, customers: &BTreeSet<String>, complete: bool) -> Result<()> {
        let mut parts = Vec::new();
        let mut values = HashMap::new();
        if !customers.is_empty() {
            parts.push("ADD #scopes :scopes");
            values.insert(
                ":scopes".to_string(),
                AttributeValue::Ss(customers.iter().cloned().collect()),
            );
        }
        if complete {
            parts.push("SET #complete = :complete");
            values.insert(":complete".to_string(), AttributeValue::Bool(true));
        }
        if parts.is_empty() {
            return Ok(());
        }
        self.update(index_key(), &parts.join(" "), None, values)
            .await
            .map(|_| ())
    }

    /// Stores a version with the conditional put alone, without touching the index (what a
    /// release before the index did): the index's contract check plants such versions.
    #[cfg(any(test, feature = "testing"))]
    pub async fn put_version_unindexed(
        &self,
        version: &PriceVersion,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.store_version(version, now).await.map(|_| ())
    }

    /// The conditional put of a version; when refused, whether the stored one is the same.
    async fn store_version(
        &self,
        version: &PriceVersion,
        now: DateTime<Utc>,
    ) -> Result<PutVersion> {
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

    async fn default_book(&self) -> Result<DefaultBook> {
        let condition = "#pk = :pk";
        let values = HashMap::from([(":pk".to_string(), s(index_key().0))]);
        let mut book = DefaultBook::default();
        for item in self.query_all(None, condition, values, true).await? {
            match get_s(&item, "sk") {
                Some(INDEX_SK) => book.index = parse_index(&item),
                Some(sk) if sk.starts_with("FROM#") => book
                    .versions
                    .push(parse_version(&item).ok_or_else(|| malformed(&item))?),
                _ => {}
            }
        }
        book.versions.sort_by_key(|v| v.effective_from);
        Ok(book)
    }

    async fn build_index(&self) -> Result<BTreeSet<String>> {
        let filter = "begins_with(#pk, :price) AND begins_with(#sk, :from)";
        let values = HashMap::from([
            (":price".to_string(), s("PRICE#")),
            (":from".to_string(), s("FROM#")),
        ]);
        let found: BTreeSet<String> = self
            .scan_all(filter, values)
            .await?
            .iter()
            .filter_map(|item| get_s(item, "pk")?.strip_prefix("PRICE#"))
            .filter_map(|key| match PriceScope::parse(key) {
                PriceScope::Customer(c) => Some(c),
                PriceScope::Default => None,
            })
            .collect();
        self.index_scopes(&found, true).await?;
        Ok(found)
    }

    async fn put_version(&self, version: &PriceVersion, now: DateTime<Utc>) -> Result<PutVersion> {
        if let PriceScope::Customer(c) = &version.scope {
            self.index_scopes(&BTreeSet::from([c.clone()]), false)
                .await?;
        }
        self.store_version(version, now).await
    }
}
