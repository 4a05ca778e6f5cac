//! Writes that act on a claim only while it is unsettled: still the entry's pending claim
//! (same revision, identifier and receipt) AND not listed as delivered by its receipt.
//!
//! A batch's deliveries are recorded in ONE receipt item (`record_delivered`), not on each
//! entry, so an entry can read `claimed` while its revision was delivered. Taking such a
//! claim over, calling it ambiguous or failing it (and giving its credits back) would be
//! wrong; a condition on the entry alone cannot see the receipt. So these writes are a
//! transaction with a `ConditionCheck` on the receipt item: either the receipt does not list
//! the identifier and the write happens, or nothing happens.

use super::DynamoLedger;
use super::items::{Item, SERVICE, key_item, n, names, receipt_key, s};
use crate::domain::ledger::PendingClaim;
use crate::error::{Error, Result};
use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem};

/// The entry's condition that pins the claim `p` (to be AND-ed with the caller's), and the
/// values it needs.
pub(super) fn pins(p: &PendingClaim, values: &mut Item) -> &'static str {
    values.insert(":pin_rev".into(), n(p.revision));
    values.insert(":pin_ident".into(), s(&p.identifier));
    match &p.receipt {
        Some(r) => {
            values.insert(":pin_receipt".into(), s(r));
            "#p_rev = :pin_rev AND #p_identifier = :pin_ident AND #p_receipt = :pin_receipt"
        }
        None => {
            "#p_rev = :pin_rev AND #p_identifier = :pin_ident AND attribute_not_exists(#p_receipt)"
        }
    }
}

impl DynamoLedger {
    /// Holds while the receipt of `p` (if any) does not list `p`'s identifier as delivered.
    pub(super) fn tx_not_delivered(&self, p: &PendingClaim) -> Result<Option<TransactWriteItem>> {
        let Some(receipt) = &p.receipt else {
            return Ok(None);
        };
        let condition = "attribute_not_exists(#delivered) OR NOT contains(#delivered, :ident)";
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key_item(receipt_key(receipt))))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[condition])))
            .expression_attribute_values(":ident", s(&p.identifier))
            .build()
            .map_err(|e| Error::transient(SERVICE, format!("building a condition check: {e}")))?;
        Ok(Some(
            TransactWriteItem::builder().condition_check(check).build(),
        ))
    }

    /// Updates the entry of trace `key` with `update` when `condition` holds on it, the claim
    /// `p` is still its pending claim, and `p`'s receipt does not list it as delivered.
    /// False when any of these does not hold.
    pub(super) async fn update_unsettled(
        &self,
        key: (String, String),
        update: &str,
        condition: &str,
        mut values: Item,
        p: &PendingClaim,
    ) -> Result<bool> {
        let condition = format!("{condition} AND {}", pins(p, &mut values));
        let Some(check) = self.tx_not_delivered(p)? else {
            return self.update(key, update, Some(&condition), values).await;
        };
        let entry = self.tx_update(key, update, Some(&condition), values)?;
        settled_unless_cancelled(self.transact(vec![entry, check]).await?, &p.identifier)
    }
}

/// A transaction's outcome: done (true), refused by a condition (false), else an error.
pub(super) fn settled_unless_cancelled(
    reasons: Option<Vec<(String, Option<Item>)>>,
    identifier: &str,
) -> Result<bool> {
    match reasons {
        None => Ok(true),
        Some(r) if r.iter().any(|(code, _)| code == "ConditionalCheckFailed") => Ok(false),
        Some(r) => Err(Error::transient(
            SERVICE,
            format!(
                "settling the claim {identifier} cancelled: {:?}",
                r.iter().map(|(code, _)| code.as_str()).collect::<Vec<_>>()
            ),
        )),
    }
}
