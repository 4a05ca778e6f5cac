//! The operator's items: budget policies (listed with a scan of the policy items: there is
//! one per customer with a budget) and user mappings.

use super::DynamoLedger;
use super::budgets::parse_policy;
use super::items::{budget_key, get_s, get_u64, key_item, names, s, sdk_error, user_key};
use crate::domain::budget::BudgetPolicy;
use crate::error::Result;
use crate::ports::CustomerAdmin;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use std::collections::HashMap;

#[async_trait]
impl CustomerAdmin for DynamoLedger {
    async fn set_budget_policy(&self, customer_id: &str, policy: &BudgetPolicy) -> Result<()> {
        self.put_budget_policy(customer_id, policy).await
    }

    async fn budget_policies(&self) -> Result<Vec<(String, BudgetPolicy)>> {
        let filter = "#sk = :budget AND begins_with(#pk, :customer)";
        let values = HashMap::from([
            (":budget".to_string(), s("BUDGET")),
            (":customer".to_string(), s("CUSTOMER#")),
        ]);
        let mut out = Vec::new();
        for item in self.scan_all(filter, values).await? {
            if let Some(customer) = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("CUSTOMER#")) {
                out.push((customer.to_string(), parse_policy(customer, &item)?));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn budget_alerts(&self, customer_id: &str, period: &str) -> Result<Vec<u32>> {
        let condition = "#pk = :pk AND begins_with(#sk, :prefix)";
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[condition])))
            .expression_attribute_values(":pk", s(budget_key(customer_id, period).0))
            .expression_attribute_values(":prefix", s(format!("ALERT#{period}#")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("Query on table {}", self.table), &e))?;
        let mut pcts: Vec<u32> = out
            .items()
            .iter()
            .filter_map(|item| get_u64(item, "threshold_pct"))
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        pcts.sort_unstable();
        Ok(pcts)
    }

    async fn map_user(&self, user_id: &str, customer_id: &str) -> Result<()> {
        self.put_user_mapping(user_id, customer_id).await
    }

    async fn unmap_user(&self, user_id: &str) -> Result<Option<String>> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item(user_key(user_id))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DeleteItem on table {}", self.table), &e))?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(|item| get_s(item, "customer_id"))
            .map(str::to_string))
    }
}
