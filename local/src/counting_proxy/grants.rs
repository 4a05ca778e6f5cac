//! The IAM grants a DynamoDB call needs, read from its request: each action
//! (`dynamodb:GetItem`, ...) with the item family (`TRACE#`, the partition key's prefix up to
//! its first `#`) it touches. `TransactWriteItems` needs the action of each of its items
//! (`PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem`); `BatchGetItem` and
//! `BatchWriteItem` their own action on each key's family. A call without a partition key
//! (`Scan`) touches every family: `*`.

use serde_json::Value;

/// The partition key attribute of the table.
const PK: &str = "pk";

/// `(action, family)` for each item the call `op` (`DynamoDB_20120810.GetItem`) touches.
pub fn table_grants(op: &str, body: &[u8]) -> Vec<(String, String)> {
    let Some(action) = op.strip_prefix("DynamoDB_20120810.") else {
        return Vec::new();
    };
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let grant = |action: &str, family: String| (format!("dynamodb:{action}"), family);
    match action {
        "GetItem" | "UpdateItem" | "DeleteItem" => vec![grant(action, family(&json["Key"]))],
        "PutItem" => vec![grant(action, family(&json["Item"]))],
        "Query" => vec![grant(action, query_family(&json))],
        "BatchGetItem" => each_table(&json["RequestItems"], |t| {
            keys(&t["Keys"]).map(|k| grant(action, family(k))).collect()
        }),
        "BatchWriteItem" => each_table(&json["RequestItems"], |t| {
            keys(t)
                .map(|r| {
                    let item = r["PutRequest"]["Item"].clone();
                    let key = r["DeleteRequest"]["Key"].clone();
                    grant(action, family(if item.is_null() { &key } else { &item }))
                })
                .collect()
        }),
        "TransactWriteItems" => keys(&json["TransactItems"])
            .flat_map(|t| {
                [
                    ("Put", "PutItem", "Item"),
                    ("Update", "UpdateItem", "Key"),
                    ("Delete", "DeleteItem", "Key"),
                    ("ConditionCheck", "ConditionCheckItem", "Key"),
                ]
                .into_iter()
                .filter(|(kind, _, _)| !t[*kind].is_null())
                .map(|(kind, action, key)| grant(action, family(&t[kind][key])))
                .collect::<Vec<_>>()
            })
            .collect(),
        _ => vec![grant(action, "*".to_string())],
    }
}

fn keys(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn each_table(
    request_items: &Value,
    per_table: impl Fn(&Value) -> Vec<(String, String)>,
) -> Vec<(String, String)> {
    let tables = request_items.as_object().into_iter().flatten();
    tables.flat_map(|(_, t)| per_table(t)).collect()
}

/// The family of an item or key: its partition key's prefix through the first `#`.
fn family(item: &Value) -> String {
    prefix(item[PK]["S"].as_str())
}

/// The item family of a partition key value: its prefix through the first `#` (`*` when
/// there is none).
pub fn prefix(pk: Option<&str>) -> String {
    match pk.and_then(|pk| pk.find('#').map(|i| &pk[..=i])) {
        Some(family) => family.to_string(),
        None => "*".to_string(),
    }
}

/// A query's family: the value its key condition binds to the partition key.
fn query_family(json: &Value) -> String {
    let names = json["ExpressionAttributeNames"].as_object();
    let alias = names
        .into_iter()
        .flatten()
        .find(|(_, name)| name.as_str() == Some(PK))
        .map_or(PK, |(alias, _)| alias.as_str());
    let condition = json["KeyConditionExpression"].as_str().unwrap_or_default();
    let value = condition.split(" AND ").find_map(|clause| {
        let (left, right) = clause.split_once('=')?;
        (left.trim() == alias).then(|| right.trim())
    });
    prefix(value.and_then(|v| json["ExpressionAttributeValues"][v]["S"].as_str()))
}

#[cfg(test)]
mod tests {
    use super::table_grants;
    use serde_json::json;

    fn grants(op: &str, body: serde_json::Value) -> Vec<(String, String)> {
        let op = format!("DynamoDB_20120810.{op}");
        table_grants(&op, body.to_string().as_bytes())
    }

    fn g(action: &str, family: &str) -> (String, String) {
        (format!("dynamodb:{action}"), family.to_string())
    }

    #[test]
    fn each_call_names_its_actions_and_item_families() {
        let key = |pk: &str| json!({"pk": {"S": pk}, "sk": {"S": "x"}});
        assert_eq!(
            grants("GetItem", json!({"Key": key("TRACE#t1")})),
            [g("GetItem", "TRACE#")]
        );
        assert_eq!(
            grants("PutItem", json!({"Item": key("BUDGET#c#2026-11#50")})),
            [g("PutItem", "BUDGET#")]
        );
        let query = json!({
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :from AND :to",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": {":pk": {"S": "QUOTA#langfuse"}, ":from": {"S": "SLOT#1"}},
        });
        assert_eq!(grants("Query", query), [g("Query", "QUOTA#")]);
        let batch = json!({"RequestItems": {"t": {"Keys": [key("TRACE#a"), key("TRACE#b")]}}});
        assert_eq!(
            grants("BatchGetItem", batch),
            [g("BatchGetItem", "TRACE#"), g("BatchGetItem", "TRACE#")]
        );
        let transaction = json!({"TransactItems": [
            {"Update": {"Key": key("TRACE#a")}},
            {"Put": {"Item": key("RECEIPT#r")}},
            {"ConditionCheck": {"Key": key("BUDGET#c")}},
        ]});
        assert_eq!(
            grants("TransactWriteItems", transaction),
            [
                g("UpdateItem", "TRACE#"),
                g("PutItem", "RECEIPT#"),
                g("ConditionCheckItem", "BUDGET#")
            ]
        );
        assert_eq!(grants("Scan", json!({})), [g("Scan", "*")]);
        assert_eq!(
            table_grants("AmazonSQS.SendMessage", b"{}"),
            Vec::<(String, String)>::new()
        );
    }
}
