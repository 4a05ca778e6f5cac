//! `BatchGetItem` over any number of keys: chunks of 100 (the API's maximum), unprocessed
//! keys asked again with a short backoff, eventually consistent unless asked otherwise.

use super::items::{Item, SERVICE, sdk_error};
use crate::error::{Error, Result};
use aws_sdk_dynamodb::types::KeysAndAttributes;
use std::collections::HashMap;
use std::time::Duration;

/// Keys per `BatchGetItem` call (the API maximum).
pub const BATCH_GET_KEYS: usize = 100;
/// Rounds of `UnprocessedKeys` retries before giving up.
const UNPROCESSED_ROUNDS: u32 = 8;

/// Which attributes to read: a projection expression and its `#name` -> attribute map.
pub(crate) type Projection<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// The items of `keys` that exist (in no particular order).
pub(crate) async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<Item>,
    projection: Option<Projection<'_>>,
    consistent: bool,
) -> Result<Vec<Item>> {
    let mut out = Vec::with_capacity(keys.len());
    let mut keys = keys;
    while !keys.is_empty() {
        let rest = keys.split_off(keys.len().min(BATCH_GET_KEYS));
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(consistent);
        if let Some((expression, names)) = projection {
            let names: HashMap<String, String> = names
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            request = request
                .projection_expression(expression)
                .set_expression_attribute_names(Some(names));
        }
        let request = request
            .build()
            .map_err(|e| Error::transient(SERVICE, format!("BatchGetItem request: {e}")))?;
        out.extend(chunk(client, table, request).await?);
        keys = rest;
    }
    Ok(out)
}

/// One chunk of at most 100 keys, its unprocessed keys asked again.
async fn chunk(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    mut request: KeysAndAttributes,
) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for round in 0..=UNPROCESSED_ROUNDS {
        let result = client
            .batch_get_item()
            .request_items(table, request.clone())
            .send()
            .await
            .map_err(|e| sdk_error("BatchGetItem", &e))?;
        if let Some(mut responses) = result.responses
            && let Some(items) = responses.remove(table)
        {
            out.extend(items);
        }
        match result
            .unprocessed_keys
            .and_then(|mut u| u.remove(table))
            .filter(|k| !k.keys().is_empty())
        {
            None => return Ok(out),
            Some(unprocessed) => {
                tracing::info!(
                    unprocessed = unprocessed.keys().len(),
                    round,
                    "BatchGetItem returned unprocessed keys; retrying them"
                );
                request = unprocessed;
                let backoff = 50u64.saturating_mul(1 << round.min(6));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
        }
    }
    Err(Error::transient(
        SERVICE,
        format!(
            "BatchGetItem: keys still unprocessed after {UNPROCESSED_ROUNDS} retries (throttled)"
        ),
    ))
}

impl super::DynamoLedger {
    /// The items of `ids` under `key` (eventually consistent), each with its id: the part of
    /// its partition key after `prefix`.
    pub(super) async fn batch_by_key(
        &self,
        ids: &[String],
        key: fn(&str) -> (String, String),
        prefix: &str,
    ) -> Result<Vec<(String, Item)>> {
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        let keys = unique
            .iter()
            .map(|id| super::items::key_item(key(id)))
            .collect();
        let items = batch_get(&self.client, &self.table, keys, None, false).await?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let id = super::items::get_s(&item, "pk")?
                    .strip_prefix(prefix)?
                    .to_string();
                Some((id, item))
            })
            .collect())
    }
}
