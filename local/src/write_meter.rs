//! Counts the DynamoDB writes a client makes (an SDK interceptor), so tests can compute the
//! write capacity they cost with DynamoDB's rules: a standard write costs 1 WCU per KB of the
//! item, a transactional write 2 WCU per KB per item (each item rounded up to whole KB).
//! Every attempted write is counted: a failed conditional write or a cancelled transaction
//! consumes capacity too.

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An item key: `(pk, sk)`.
pub type Key = (String, String);

/// One write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// `TransactWriteItems`, `UpdateItem`, `PutItem`, `DeleteItem` or `BatchWriteItem`.
    pub operation: &'static str,
    /// Whether its items are written transactionally (2 WCU per KB).
    pub transactional: bool,
    /// The keys of the items it writes (condition checks included: they cost like writes).
    pub items: Vec<Key>,
}

/// The interceptor; clones share the log.
#[derive(Debug, Clone, Default)]
pub struct WriteMeter {
    log: Arc<Mutex<Vec<WriteOp>>>,
}

fn key_of(item: &HashMap<String, AttributeValue>) -> Key {
    let get = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    (get("pk"), get("sk"))
}

fn key_opt(key: Option<&HashMap<String, AttributeValue>>) -> Vec<Key> {
    key.map(key_of).into_iter().collect()
}

impl WriteMeter {
    /// The writes so far.
    pub fn ops(&self) -> Vec<WriteOp> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the writes so far.
    pub fn reset(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn push(&self, op: WriteOp) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }
}

impl Intercept for WriteMeter {
    fn name(&self) -> &'static str {
        "WriteMeter"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let input = context.input();
        let op = if let Some(t) = input.downcast_ref::<TransactWriteItemsInput>() {
            let items = t
                .transact_items()
                .iter()
                .map(|i| {
                    if let Some(u) = i.update() {
                        key_of(u.key())
                    } else if let Some(p) = i.put() {
                        key_of(p.item())
                    } else if let Some(d) = i.delete() {
                        key_of(d.key())
                    } else if let Some(c) = i.condition_check() {
                        key_of(c.key())
                    } else {
                        Key::default()
                    }
                })
                .collect();
            Some(("TransactWriteItems", true, items))
        } else if let Some(u) = input.downcast_ref::<UpdateItemInput>() {
            Some(("UpdateItem", false, key_opt(u.key())))
        } else if let Some(p) = input.downcast_ref::<PutItemInput>() {
            Some(("PutItem", false, key_opt(p.item())))
        } else if let Some(d) = input.downcast_ref::<DeleteItemInput>() {
            Some(("DeleteItem", false, key_opt(d.key())))
        } else if let Some(b) = input.downcast_ref::<BatchWriteItemInput>() {
            let items = b
                .request_items()
                .into_iter()
                .flat_map(|m| m.values())
                .flatten()
                .filter_map(|w| {
                    w.put_request()
                        .map(|p| key_of(p.item()))
                        .or_else(|| w.delete_request().map(|d| key_of(d.key())))
                })
                .collect();
            Some(("BatchWriteItem", false, items))
        } else {
            None
        };
        if let Some((operation, transactional, items)) = op {
            self.push(WriteOp {
                operation,
                transactional,
                items,
            });
        }
        Ok(())
    }
}

/// An item's size by DynamoDB's rules: attribute names plus values (strings and binaries
/// by length, numbers about one byte per two significant digits plus one, sets and lists
/// the sum of their elements plus overhead).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    significant.div_ceil(2) + 1
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
        AttributeValue::Ns(ns) => ns.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// The WCU of `ops` given each item's size in bytes (items not found count as 1 KB).
pub fn write_units(ops: &[WriteOp], sizes: &HashMap<Key, usize>) -> u64 {
    ops.iter()
        .map(|op| {
            let per_kb = if op.transactional { 2 } else { 1 };
            op.items
                .iter()
                .map(|k| {
                    let kb = sizes.get(k).copied().unwrap_or(1).max(1).div_ceil(1024) as u64;
                    per_kb * kb
                })
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_units_follow_dynamodb_rules() {
        let item = HashMap::from([
            ("pk".to_string(), AttributeValue::S("TRACE#abc".into())),
            ("ver".to_string(), AttributeValue::N("12345".into())),
            ("ok".to_string(), AttributeValue::Bool(true)),
        ]);
        // 2 + 9, 3 + (3 + 1), 2 + 1
        assert_eq!(item_size(&item), 21);
        let ops = vec![
            WriteOp {
                operation: "TransactWriteItems",
                transactional: true,
                items: vec![("a".into(), "1".into()), ("b".into(), "1".into())],
            },
            WriteOp {
                operation: "UpdateItem",
                transactional: false,
                items: vec![("a".into(), "1".into())],
            },
        ];
        let sizes = HashMap::from([
            (("a".to_string(), "1".to_string()), 700),
            (("b".to_string(), "1".to_string()), 1500),
        ]);
        // 2×1 + 2×2 + 1×1
        assert_eq!(write_units(&ops, &sizes), 7);
    }
}
