//! The records of malformed messages (`MESSAGE#<message id>` / `FAILED`): in the attention
//! index under their reason, listed from it and deleted by key.

use super::DynamoLedger;
use super::items::{Item, get_s, get_time, key_item, message_key, sdk_error};
use crate::domain::attention::MessageFailure;
use crate::error::{FailureReason, Result};
use crate::ports::MessageFailures;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

#[async_trait]
impl MessageFailures for DynamoLedger {
    async fn failed_messages(&self, since: Option<DateTime<Utc>>) -> Result<Vec<MessageFailure>> {
        let reason = FailureReason::MalformedMessage.as_str();
        let mut out: Vec<MessageFailure> = self
            .attention_items(reason, since)
            .await?
            .iter()
            .filter_map(parse_message)
            .collect();
        out.sort_by(|a, b| (a.updated_at, &a.message_id).cmp(&(b.updated_at, &b.message_id)));
        Ok(out)
    }

    async fn forget_message(&self, message_id: &str) -> Result<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item(message_key(message_id))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DeleteItem on table {}", self.table), &e))?;
        Ok(out.attributes.is_some())
    }
}

/// A message record, or `None` for any other item.
fn parse_message(item: &Item) -> Option<MessageFailure> {
    let message_id = get_s(item, "pk")?.strip_prefix("MESSAGE#")?;
    Some(MessageFailure {
        message_id: message_id.to_string(),
        reason: get_s(item, "reason").unwrap_or_default().to_string(),
        detail: get_s(item, "detail").unwrap_or_default().to_string(),
        body: get_s(item, "body").unwrap_or_default().to_string(),
        updated_at: get_time(item, "updated_at")?,
    })
}
