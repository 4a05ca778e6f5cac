#![allow(clippy::unwrap_used)]

use super::*;
use crate::stack::{Moto, sdk_config, unique_prefix};
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, KeyType, ScalarAttributeType, TimeToLiveStatus,
};
use std::time::Duration;

fn sdk_clients(sdk: &SdkConfig) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
    (
        aws_sdk_dynamodb::Client::new(sdk),
        aws_sdk_sqs::Client::new(sdk),
    )
}

async fn attrs(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> std::collections::HashMap<QueueAttributeName, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes()
        .cloned()
        .unwrap_or_default()
}

/// The ledger table: `pk`/`sk` string keys, on demand, `expires_at` as its TTL.
async fn assert_table_as_defined(dynamodb: &aws_sdk_dynamodb::Client, name: &str) {
    let table = dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let table = table.table().unwrap();
    let keys: Vec<(String, KeyType)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("pk".to_string(), KeyType::Hash),
            ("sk".to_string(), KeyType::Range)
        ]
    );
    let mut defs: Vec<(String, ScalarAttributeType)> = table
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name().to_string(), d.attribute_type().clone()))
        .collect();
    defs.sort_by(|a, b| a.0.cmp(&b.0));
    let s = ScalarAttributeType::S;
    let expected = [
        ("pk", s.clone()),
        ("reason", s.clone()),
        ("sk", s),
        ("updated_at", ScalarAttributeType::N),
    ];
    let expected: Vec<(String, ScalarAttributeType)> = expected
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    assert_eq!(defs, expected);
    // The sparse `attention` index: failed and ambiguous entries by reason and time.
    let indexes = table.global_secondary_indexes();
    assert_eq!(indexes.len(), 1);
    assert_eq!(indexes[0].index_name(), Some("attention"));
    let index_keys: Vec<(String, KeyType)> = indexes[0]
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        index_keys,
        vec![
            ("reason".to_string(), KeyType::Hash),
            ("updated_at".to_string(), KeyType::Range)
        ]
    );
    let projection = indexes[0].projection().and_then(|p| p.projection_type());
    assert_eq!(
        projection,
        Some(&aws_sdk_dynamodb::types::ProjectionType::All)
    );
    assert_eq!(
        table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .cloned(),
        Some(BillingMode::PayPerRequest)
    );
    let ttl = dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn provision_creates_what_the_template_defines() {
    let moto = Moto::shared();
    let sdk = sdk_config(moto.endpoint()).await;
    let prefix = unique_prefix("tpl");
    let res = provision(&sdk, &prefix, &ProvisionOverrides::default())
        .await
        .unwrap();
    let (dynamodb, sqs) = sdk_clients(&sdk);

    assert_eq!(res.table_name, format!("{prefix}-LedgerTable"));
    assert_table_as_defined(&dynamodb, &res.table_name).await;

    // The meter queue: named by the template's QueueName, ${AWS::StackName} = prefix.
    assert!(
        res.queue_url.ends_with(&format!("/{prefix}-meter")),
        "{}",
        res.queue_url
    );
    let queue = attrs(&sqs, &res.queue_url).await;
    assert_eq!(queue[&QueueAttributeName::VisibilityTimeout], "180");
    assert_eq!(queue[&QueueAttributeName::MessageRetentionPeriod], "345600");
    assert_eq!(queue[&QueueAttributeName::QueueArn], res.queue_arn);
    let redrive: serde_json::Value =
        serde_json::from_str(&queue[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], res.dlq_arn.as_str());
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );
    assert_eq!(res.visibility_timeout, 180);
    assert_eq!(res.max_receive_count, 5);

    let dlq = attrs(&sqs, &res.dlq_url).await;
    assert_eq!(dlq[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    // The DLQ's RedriveAllowPolicy is set too, but moto neither stores nor enforces it.

    assert_eq!(res.batch_size, 100);
    assert_eq!(res.maximum_batching_window_seconds, 5);
    assert!(res.report_batch_item_failures);
    assert_eq!(res.maximum_concurrency, Some(5));
    assert_eq!(res.function_timeout_seconds, 30);
    // AWS guidance for SQS event sources: visibility >= 6 x function timeout.
    assert!(res.visibility_timeout >= 6 * res.function_timeout_seconds);
    assert_eq!(res.tables.len(), 1);
    assert_eq!(res.queues.len(), 2);
}

#[tokio::test]
async fn overrides_apply_and_redrive_moves_messages_to_the_dlq() {
    let moto = Moto::shared();
    let sdk = sdk_config(moto.endpoint()).await;
    let overrides = ProvisionOverrides {
        visibility_timeout: Some(1),
        max_receive_count: Some(1),
    };
    let res = provision(&sdk, &unique_prefix("ovr"), &overrides)
        .await
        .unwrap();
    assert_eq!(res.visibility_timeout, 1);
    assert_eq!(res.max_receive_count, 1);
    let (_, sqs) = sdk_clients(&sdk);
    let queue = attrs(&sqs, &res.queue_url).await;
    assert_eq!(queue[&QueueAttributeName::VisibilityTimeout], "1");

    sqs.send_message()
        .queue_url(&res.queue_url)
        .message_body(r#"{"traceId":"trace-redrive"}"#)
        .send()
        .await
        .unwrap();
    let first = sqs
        .receive_message()
        .queue_url(&res.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(first.messages().len(), 1);
    // Not deleted: after the visibility timeout the next receive exceeds maxReceiveCount.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = sqs
        .receive_message()
        .queue_url(&res.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert!(second.messages().is_empty());
    let dead = sqs
        .receive_message()
        .queue_url(&res.dlq_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(dead.messages().len(), 1);
    assert_eq!(
        dead.messages()[0].body(),
        Some(r#"{"traceId":"trace-redrive"}"#)
    );
}

#[tokio::test]
async fn two_prefixes_do_not_collide() {
    let moto = Moto::shared();
    let sdk = sdk_config(moto.endpoint()).await;
    let none = ProvisionOverrides::default();
    let a = provision(&sdk, &unique_prefix("iso"), &none).await.unwrap();
    let b = provision(&sdk, &unique_prefix("iso"), &none).await.unwrap();
    assert_ne!(a.table_name, b.table_name);
    assert_ne!(a.queue_url, b.queue_url);
    assert_ne!(a.dlq_url, b.dlq_url);

    let (dynamodb, sqs) = sdk_clients(&sdk);
    dynamodb
        .put_item()
        .table_name(&a.table_name)
        .item("pk", AttributeValue::S("TRACE#t1".into()))
        .item("sk", AttributeValue::S("LEDGER".into()))
        .send()
        .await
        .unwrap();
    let count = |table: String| {
        let dynamodb = dynamodb.clone();
        async move {
            dynamodb
                .scan()
                .table_name(table)
                .send()
                .await
                .unwrap()
                .count()
        }
    };
    assert_eq!(count(a.table_name.clone()).await, 1);
    assert_eq!(count(b.table_name.clone()).await, 0);

    sqs.send_message()
        .queue_url(&a.queue_url)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let from_b = sqs
        .receive_message()
        .queue_url(&b.queue_url)
        .send()
        .await
        .unwrap();
    assert!(from_b.messages().is_empty());
    let from_a = sqs
        .receive_message()
        .queue_url(&a.queue_url)
        .send()
        .await
        .unwrap();
    assert_eq!(from_a.messages().len(), 1);
}

#[test]
fn bad_prefixes_are_refused() {
    let t = Template::load().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Never contacted: the prefix is checked first.
        let sdk = sdk_config("http://127.0.0.1:9").await;
        for bad in ["", "has space", &"x".repeat(41)] {
            let err = provision_template(&sdk, &t, bad, &ProvisionOverrides::default())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("prefix"), "{err}");
        }
    });
}
