//! A DynamoDB stream record as EventBridge Pipes hands it to its filter and input template:
//! the Lambda-style record (`eventName`, `dynamodb.Keys`, `dynamodb.NewImage`, ...), with
//! attribute values in DynamoDB JSON (`{"S": "..."}`, `{"N": "123"}`).

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// The record as the pipe sees it.
pub fn to_event(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut dynamodb = Map::new();
    if let Some(d) = record.dynamodb() {
        if let Some(t) = d.approximate_creation_date_time() {
            dynamodb.insert("ApproximateCreationDateTime".into(), json!(t.secs()));
        }
        for (name, image) in [
            ("Keys", d.keys()),
            ("NewImage", d.new_image()),
            ("OldImage", d.old_image()),
        ] {
            if let Some(image) = image {
                dynamodb.insert(name.into(), item(image));
            }
        }
        if let Some(seq) = d.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), json!(seq));
        }
        if let Some(size) = d.size_bytes() {
            dynamodb.insert("SizeBytes".into(), json!(size));
        }
        if let Some(view) = d.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
        }
    }
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventVersion": record.event_version(),
        "eventSource": record.event_source(),
        "awsRegion": record.aws_region().unwrap_or(region),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    })
}

fn item(image: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        image
            .iter()
            .map(|(k, v)| (k.clone(), attribute(v)))
            .collect(),
    )
}

/// One attribute value in DynamoDB JSON.
pub fn attribute(value: &AttributeValue) -> Value {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        base64::engine::general_purpose::STANDARD.encode(b.as_ref())
    };
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b)}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(n) => json!({"NULL": n}),
        AttributeValue::M(m) => json!({"M": item(m)}),
        AttributeValue::L(l) => json!({"L": l.iter().map(attribute).collect::<Vec<_>>()}),
        AttributeValue::Ss(ss) => json!({"SS": ss}),
        AttributeValue::Ns(ns) => json!({"NS": ns}),
        AttributeValue::Bs(bs) => json!({"BS": bs.iter().map(b64).collect::<Vec<_>>()}),
        _ => json!({"UNKNOWN": format!("{value:?}")}),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord};

    #[test]
    fn a_record_reads_as_dynamodb_json() {
        let image = HashMap::from([
            ("pk".to_string(), AttributeValue::S("BUDGET#c".into())),
            ("used".to_string(), AttributeValue::N("150".into())),
            ("ok".to_string(), AttributeValue::Bool(true)),
            (
                "l".to_string(),
                AttributeValue::L(vec![AttributeValue::N("1".into())]),
            ),
        ]);
        let record = Record::builder()
            .event_name(OperationType::Insert)
            .dynamodb(
                StreamRecord::builder()
                    .set_keys(Some(HashMap::from([(
                        "pk".to_string(),
                        AttributeValue::S("BUDGET#c".into()),
                    )])))
                    .set_new_image(Some(image))
                    .build(),
            )
            .build();
        let event = to_event(&record, "arn:stream", "us-east-1");
        assert_eq!(event["eventName"], "INSERT");
        assert_eq!(event["dynamodb"]["Keys"]["pk"]["S"], "BUDGET#c");
        assert_eq!(event["dynamodb"]["NewImage"]["used"]["N"], "150");
        assert_eq!(event["dynamodb"]["NewImage"]["ok"]["BOOL"], true);
        assert_eq!(event["dynamodb"]["NewImage"]["l"]["L"][0]["N"], "1");
        assert_eq!(event["eventSourceARN"], "arn:stream");
        assert!(event["dynamodb"].get("OldImage").is_none());
    }
}
