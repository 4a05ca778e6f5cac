//! Keys of every item in the table, and the attribute helpers all its adapters share.

use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::error::{Error, Result};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::HashMap;

/// The service named in transient errors.
pub(crate) const SERVICE: &str = "dynamodb";
/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Key of a trace's ledger entry.
pub fn trace_key(trace_id: &str) -> (String, String) {
    (format!("TRACE#{trace_id}"), "LEDGER".to_string())
}
/// Key of a budget counter.
pub fn budget_key(customer: &str, period: &str) -> (String, String) {
    (format!("BUDGET#{customer}"), format!("PERIOD#{period}"))
}
/// Key of a budget alert record.
pub fn alert_key(customer: &str, period: &str, pct: u32) -> (String, String) {
    (
        format!("BUDGET#{customer}"),
        format!("ALERT#{period}#{pct:03}"),
    )
}
/// Key of a budget event's item: a threshold crossed is the alert record of its threshold;
/// a hard limit reached and a limit cleared are one item per period and limit episode (how
/// many clearings came before), so each reach and each clearing is an event of its own.
pub fn budget_event_key(event: &BudgetEvent) -> (String, String) {
    let (customer, period, episode) = (&event.customer_id, &event.period, event.episode);
    match event.kind {
        BudgetEventKind::ThresholdCrossed { percent } => alert_key(customer, period, percent),
        BudgetEventKind::LimitReached => (
            format!("BUDGET#{customer}"),
            format!("LIMIT#{period}#REACHED#{episode}"),
        ),
        BudgetEventKind::LimitCleared => (
            format!("BUDGET#{customer}"),
            format!("LIMIT#{period}#CLEARED#{episode}"),
        ),
    }
}
/// Key of a customer's budget policy.
pub fn policy_key(customer: &str) -> (String, String) {
    (format!("CUSTOMER#{customer}"), "BUDGET".to_string())
}
/// Key of a user-to-customer mapping.
pub fn user_key(user_id: &str) -> (String, String) {
    (format!("USER#{user_id}"), "CUSTOMER".to_string())
}
/// Key of a delivery receipt.
pub fn receipt_key(receipt: &str) -> (String, String) {
    (format!("RECEIPT#{receipt}"), "RECEIPT".to_string())
}
/// The identifiers a receipt item records as delivered.
pub fn receipt_delivered(item: &Item) -> &[String] {
    match item.get("delivered") {
        Some(AttributeValue::Ss(ids)) => ids,
        _ => &[],
    }
}
/// Key of a malformed message record.
pub fn message_key(message_id: &str) -> (String, String) {
    (format!("MESSAGE#{message_id}"), "FAILED".to_string())
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
/// A number attribute.
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub(crate) fn key_item((pk, sk): (String, String)) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// Reads a string attribute.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}
/// Reads a whole-number attribute.
pub fn get_u64(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
/// Reads a signed whole-number attribute.
pub(super) fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
pub(crate) fn get_time(item: &Item, name: &str) -> Option<DateTime<Utc>> {
    get_i64(item, name).and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}
pub(crate) fn ms(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

/// Aliases every `#name` of the expressions to `name`.
pub(crate) fn names(exprs: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for expr in exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'#' {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                let name = &expr[start..end];
                out.insert(format!("#{name}"), name.to_string());
                i = end;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// A transient error naming the operation and the SDK's whole error chain.
pub(crate) fn sdk_error<E, R>(op: &str, e: &SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Error::transient(SERVICE, format!("{op}: {}", DisplayErrorContext(e)))
}

/// The outcome of a conditional write: `Ok(false)` when its condition failed.
pub(crate) fn condition_held<O, E, R>(
    op: &str,
    result: std::result::Result<O, SdkError<E, R>>,
) -> Result<bool>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk_error(op, &e)),
    }
}

/// The attributes of a pending claim, for `REMOVE`.
pub(super) const PENDING_FIELDS: &str = "#p_rev, #p_identifier, #p_customer, #p_billable, #p_capped, #p_total, #p_event_ts, #p_period, #p_claimed_at, #p_lease_until, #p_receipt";

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hash_name_is_aliased() {
        let m = names(&[
            "SET #state = :s, #p_rev = :r ADD #ver :one",
            "#used <= :room",
        ]);
        assert_eq!(m.get("#state").map(String::as_str), Some("state"));
        assert_eq!(m.get("#p_rev").map(String::as_str), Some("p_rev"));
        assert_eq!(m.get("#used").map(String::as_str), Some("used"));
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
