//! The capacity units a DynamoDB request consumes, by DynamoDB's rules.

use serde_json::Value;

/// Capacity units a DynamoDB request consumes (items assumed within 1 KB / 4 KB).
pub fn capacity(op: &str, body: &[u8]) -> (f64, f64) {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let consistent = |v: &Value| v.get("ConsistentRead").and_then(Value::as_bool) == Some(true);
    let read = |v: &Value| if consistent(v) { 1.0 } else { 0.5 };
    match op.rsplit('.').next().unwrap_or_default() {
        "PutItem" | "UpdateItem" | "DeleteItem" => (1.0, 0.0),
        "BatchWriteItem" => {
            let items = json
                .get("RequestItems")
                .and_then(Value::as_object)
                .map(|tables| {
                    tables
                        .values()
                        .filter_map(Value::as_array)
                        .map(Vec::len)
                        .sum::<usize>()
                })
                .unwrap_or(0);
            (items as f64, 0.0)
        }
        "TransactWriteItems" => {
            let items = json
                .get("TransactItems")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let checks = items
                .iter()
                .filter(|i| i.get("ConditionCheck").is_some())
                .count();
            let writes = items.len() - checks;
            (2.0 * writes as f64, 2.0 * checks as f64)
        }
        "GetItem" | "Query" => (0.0, read(&json)),
        "BatchGetItem" => {
            let units = json
                .get("RequestItems")
                .and_then(Value::as_object)
                .map(|tables| {
                    tables
                        .values()
                        .map(|t| {
                            let keys = t.get("Keys").and_then(Value::as_array).map_or(0, Vec::len);
                            keys as f64 * read(t)
                        })
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (0.0, units)
        }
        "TransactGetItems" => {
            let items = json
                .get("TransactItems")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            (0.0, 2.0 * items as f64)
        }
        _ => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_follows_dynamodb_rules() {
        let tx = br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}}]}"#;
        assert_eq!(
            capacity("DynamoDB_20120810.TransactWriteItems", tx),
            (4.0, 2.0)
        );
        assert_eq!(capacity("DynamoDB_20120810.UpdateItem", b"{}"), (1.0, 0.0));
        assert_eq!(
            capacity("DynamoDB_20120810.GetItem", br#"{"ConsistentRead":true}"#),
            (0.0, 1.0)
        );
        let batch = br#"{"RequestItems":{"t":{"Keys":[{},{},{}]}}}"#;
        assert_eq!(
            capacity("DynamoDB_20120810.BatchGetItem", batch),
            (0.0, 1.5)
        );
        let bw = br#"{"RequestItems":{"t":[{"PutRequest":{}},{"PutRequest":{}}]}}"#;
        assert_eq!(capacity("DynamoDB_20120810.BatchWriteItem", bw), (2.0, 0.0));
    }
}
