//! Customers: the Langfuse user to Stripe customer mapping.

use super::DynamoLedger;
use super::items::{get_s, key_item, s, user_key};
use crate::error::Result;
use crate::ports::CustomerDirectory;
use async_trait::async_trait;
use std::collections::HashMap;

impl DynamoLedger {
    /// Maps a Langfuse user id to a Stripe customer (operator tooling and tests).
    pub async fn put_user_mapping(&self, user_id: &str, customer: &str) -> Result<()> {
        let mut item = key_item(user_key(user_id));
        item.insert("customer_id".into(), s(customer));
        self.put(item).await
    }
}

#[async_trait]
impl CustomerDirectory for DynamoLedger {
    async fn customer_for_user(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self
            .get(user_key(user_id), false)
            .await?
            .and_then(|item| get_s(&item, "customer_id").map(str::to_string)))
    }

    /// One eventually consistent `BatchGetItem` per 100 users.
    async fn customers_for_users(
        &self,
        user_ids: &[String],
    ) -> Result<HashMap<String, Option<String>>> {
        let found = self
            .batch_by_key(user_ids, user_key, "USER#")
            .await?
            .into_iter()
            .map(|(user, item)| (user, get_s(&item, "customer_id").map(str::to_string)));
        let mut out: HashMap<String, Option<String>> =
            user_ids.iter().map(|u| (u.clone(), None)).collect();
        out.extend(found);
        Ok(out)
    }
}
