//! A DynamoDB table of `template.yaml`, created as the template defines it.

use super::super::template::{Resolver, bool_value, int_value};
use super::Template;
use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, StreamSpecification,
    StreamViewType, TimeToLiveSpecification,
};
use serde_yaml::Value;

/// A table created.
pub(super) struct CreatedTable {
    pub(super) name: String,
    pub(super) arn: String,
    /// Its stream's ARN, when the template gives it a `StreamSpecification`.
    pub(super) stream_arn: Option<String>,
}

/// Creates table `id`.
pub(super) async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    template: &Template,
    resolver: &Resolver,
    id: &str,
    resource: &Value,
) -> Result<CreatedTable> {
    let props = resource
        .get("Properties")
        .ok_or_else(|| anyhow!("{id} has no Properties"))?;
    if props.get("LocalSecondaryIndexes").is_some() {
        bail!(
            "{id}.LocalSecondaryIndexes is not supported by the local stack yet: add it to stack/provision/table.rs"
        );
    }
    let name = match props.get("TableName") {
        Some(v) => resolver.string(template, v)?,
        None => format!("{}-{id}", resolver.prefix),
    };
    let mut request = dynamodb.create_table().table_name(&name);
    for (attr, kind) in pairs(props, id, "AttributeDefinitions", "AttributeType")? {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::from(kind))
                .build()?,
        );
    }
    for (attr, kind) in pairs(props, id, "KeySchema", "KeyType")? {
        request = request.key_schema(
            KeySchemaElement::builder()
                .attribute_name(attr)
                .key_type(KeyType::from(kind))
                .build()?,
        );
    }
    for index in global_indexes(props, id)? {
        request = request.global_secondary_indexes(index);
    }
    let billing = props
        .get("BillingMode")
        .and_then(Value::as_str)
        .unwrap_or("PROVISIONED");
    request = request.billing_mode(BillingMode::from(billing));
    if billing == "PROVISIONED" {
        request = request.provisioned_throughput(throughput(props, id)?);
    }
    if let Some(spec) = stream(props, id)? {
        request = request.stream_specification(spec);
    }
    let created = request
        .send()
        .await
        .with_context(|| format!("CreateTable {name}"))?;
    let description = created.table_description();
    let arn = description
        .and_then(|d| d.table_arn())
        .ok_or_else(|| anyhow!("CreateTable {name} returned no table ARN"))?
        .to_string();
    let stream_arn = description
        .and_then(|d| d.latest_stream_arn())
        .map(str::to_string);
    set_time_to_live(dynamodb, &name, id, props).await?;
    Ok(CreatedTable {
        name,
        arn,
        stream_arn,
    })
}

/// The table's `StreamSpecification` (CloudFormation enables the stream when it names a
/// view type).
fn stream(props: &Value, id: &str) -> Result<Option<StreamSpecification>> {
    let Some(spec) = props.get("StreamSpecification") else {
        return Ok(None);
    };
    let view = spec
        .get("StreamViewType")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{id}.StreamSpecification has no StreamViewType"))?;
    Ok(Some(
        StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::from(view))
            .build()?,
    ))
}

/// `(AttributeName, <kind>)` of every element of the table's `list` property.
fn pairs<'a>(
    props: &'a Value,
    id: &str,
    list: &str,
    kind: &str,
) -> Result<Vec<(&'a str, &'a str)>> {
    props
        .get(list)
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("{id} has no {list}"))?
        .iter()
        .map(|element| {
            let get = |name: &str| {
                element
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("{id}: {list} element without {name}"))
            };
            Ok((get("AttributeName")?, get(kind)?))
        })
        .collect()
}

/// The table's `GlobalSecondaryIndexes` (key schema and projection type; on-demand tables
/// only: an index's own throughput is not read).
fn global_indexes(props: &Value, id: &str) -> Result<Vec<GlobalSecondaryIndex>> {
    let Some(indexes) = props.get("GlobalSecondaryIndexes") else {
        return Ok(Vec::new());
    };
    let indexes = indexes
        .as_sequence()
        .ok_or_else(|| anyhow!("{id}.GlobalSecondaryIndexes is not a list"))?;
    indexes
        .iter()
        .map(|index| {
            let name = index
                .get("IndexName")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{id}: a global secondary index without IndexName"))?;
            let what = format!("{id}.{name}");
            let mut built = GlobalSecondaryIndex::builder().index_name(name);
            for (attr, kind) in pairs(index, &what, "KeySchema", "KeyType")? {
                built = built.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(KeyType::from(kind))
                        .build()?,
                );
            }
            let projection = index
                .get("Projection")
                .and_then(|p| p.get("ProjectionType"))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{what} has no Projection.ProjectionType"))?;
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(projection))
                .build();
            Ok(built.projection(projection).build()?)
        })
        .collect()
}

fn throughput(props: &Value, id: &str) -> Result<ProvisionedThroughput> {
    let throughput = props
        .get("ProvisionedThroughput")
        .ok_or_else(|| anyhow!("{id} is PROVISIONED without ProvisionedThroughput"))?;
    let units = |name: &str| -> Result<i64> {
        throughput
            .get(name)
            .map(int_value)
            .transpose()?
            .map(i64::from)
            .ok_or_else(|| anyhow!("{id}.ProvisionedThroughput has no {name}"))
    };
    Ok(ProvisionedThroughput::builder()
        .read_capacity_units(units("ReadCapacityUnits")?)
        .write_capacity_units(units("WriteCapacityUnits")?)
        .build()?)
}

async fn set_time_to_live(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    id: &str,
    props: &Value,
) -> Result<()> {
    let Some(ttl) = props.get("TimeToLiveSpecification") else {
        return Ok(());
    };
    if !ttl
        .get("Enabled")
        .map(bool_value)
        .transpose()?
        .unwrap_or(false)
    {
        return Ok(());
    }
    let attr = ttl
        .get("AttributeName")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{id}.TimeToLiveSpecification has no AttributeName"))?;
    dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(attr)
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("UpdateTimeToLive {name}"))?;
    Ok(())
}
