//! EventBridge Pipes, played locally (moto has no Pipes): the template's
//! `AWS::Pipes::Pipe` from a DynamoDB table's stream to the default event bus, read FROM
//! template.yaml (filter criteria, input template, detail-type path, source, starting
//! position, batch size), so what tests see is the template's behaviour. [`PipeEmulator::pump`]
//! reads the moto stream, filters, renders and calls PutEvents on moto's EventBridge;
//! [`EventsRig`] adds a bus and a queue behind the template's example rule, so tests count
//! the events EventBridge delivered.
//!
//! Locally the default bus is played by a bus of the stack's own prefix, so tests running in
//! one moto never see each other's events.

pub mod pattern;
pub mod record;
mod rig;

pub use rig::EventsRig;

use crate::stack::{REGION, Template, intrinsic};
use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;

/// A pipe of the template, as the emulator plays it.
#[derive(Debug, Clone)]
pub struct PipeSpec {
    /// Logical id of the pipe.
    pub id: String,
    /// Logical id of the table whose stream is the source.
    pub table: String,
    /// `TRIM_HORIZON` or `LATEST`.
    pub starting_position: String,
    /// Records per PutEvents batch.
    pub batch_size: usize,
    /// The filter patterns (a record passes when any matches; none: all pass).
    pub filters: Vec<Value>,
    /// `EventBridgeEventBusParameters.Source`.
    pub source: String,
    /// `EventBridgeEventBusParameters.DetailType`: a literal or a JSON path (`$.…`).
    pub detail_type: String,
    /// `TargetParameters.InputTemplate` (none: the record itself is the detail).
    pub input_template: Option<String>,
}

impl PipeSpec {
    /// The template's pipes from a table stream to the default event bus.
    pub fn from_template(template: &Template) -> Result<Vec<PipeSpec>> {
        template
            .resources_of_type("AWS::Pipes::Pipe")
            .into_iter()
            .map(|(id, resource)| parse(id, resource).with_context(|| format!("pipe {id}")))
            .collect()
    }

    /// What the pipe puts on the bus for one stream record (as [`record::to_event`] shapes
    /// it); `None` when the filter drops it.
    pub fn entry(&self, event: &Value) -> Result<Option<(String, Value)>> {
        let mut passes = self.filters.is_empty();
        for filter in &self.filters {
            passes = passes || pattern::matches(filter, event)?;
        }
        if !passes {
            return Ok(None);
        }
        let detail_type = match self.detail_type.starts_with("$.") {
            true => pattern::path(event, &self.detail_type)?
                .as_str()
                .ok_or_else(|| anyhow!("{}: the detail-type path is no string", self.id))?
                .to_string(),
            false => self.detail_type.clone(),
        };
        let detail = match &self.input_template {
            Some(t) => pattern::render(t, event)?,
            None => event.clone(),
        };
        Ok(Some((detail_type, detail)))
    }
}

fn text<'a>(v: &'a Yaml, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(Yaml::as_str)
        .ok_or_else(|| anyhow!("no {name} (a literal string)"))
}

fn parse(id: &str, resource: &Yaml) -> Result<PipeSpec> {
    let props = resource
        .get("Properties")
        .ok_or_else(|| anyhow!("no Properties"))?;
    let table = match props.get("Source").and_then(intrinsic) {
        Some(("Fn::GetAtt", Yaml::String(s))) => s.strip_suffix(".StreamArn").map(str::to_string),
        Some(("Fn::GetAtt", Yaml::Sequence(parts))) if parts.len() == 2 => parts[1]
            .as_str()
            .filter(|a| *a == "StreamArn")
            .and(parts[0].as_str().map(str::to_string)),
        _ => None,
    }
    .ok_or_else(|| anyhow!("Source must be !GetAtt <table>.StreamArn"))?;
    let target = match props.get("Target").and_then(intrinsic) {
        Some(("Fn::Sub", Yaml::String(s))) => s.clone(),
        _ => text(props, "Target")?.to_string(),
    };
    if !target.ends_with(":event-bus/default") {
        bail!("Target {target:?}: the local pipe plays the default event bus only");
    }
    let source = props
        .get("SourceParameters")
        .ok_or_else(|| anyhow!("no SourceParameters"))?;
    let stream = source
        .get("DynamoDBStreamParameters")
        .ok_or_else(|| anyhow!("no DynamoDBStreamParameters"))?;
    let filters = match source.get("FilterCriteria").and_then(|f| f.get("Filters")) {
        Some(Yaml::Sequence(list)) => list
            .iter()
            .map(|f| Ok(serde_json::from_str(text(f, "Pattern")?)?))
            .collect::<Result<Vec<Value>>>()?,
        _ => Vec::new(),
    };
    let target = props
        .get("TargetParameters")
        .ok_or_else(|| anyhow!("no TargetParameters"))?;
    let bus = target
        .get("EventBridgeEventBusParameters")
        .ok_or_else(|| anyhow!("no EventBridgeEventBusParameters"))?;
    Ok(PipeSpec {
        id: id.to_string(),
        table,
        starting_position: text(stream, "StartingPosition")?.to_string(),
        batch_size: stream
            .get("BatchSize")
            .and_then(Yaml::as_u64)
            .map_or(100, |b| b as usize)
            .clamp(1, 10_000),
        filters,
        source: text(bus, "Source")?.to_string(),
        detail_type: text(bus, "DetailType")?.to_string(),
        input_template: target
            .get("InputTemplate")
            .and_then(Yaml::as_str)
            .map(str::to_string),
    })
}

/// What one [`PipeEmulator::pump`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Stream records read.
    pub read: usize,
    /// Events put on the bus (records that passed the filter).
    pub put: usize,
}

/// One pipe, polling one table's stream in moto.
#[derive(Debug)]
pub struct PipeEmulator {
    spec: PipeSpec,
    streams: aws_sdk_dynamodbstreams::Client,
    events: aws_sdk_eventbridge::Client,
    stream_arn: String,
    bus: String,
    /// Shard id -> the iterator to read next (`None`: the shard is closed and read).
    shards: tokio::sync::Mutex<BTreeMap<String, Option<String>>>,
}

impl PipeEmulator {
    /// The pipe `spec` on `table`'s stream, putting events on `bus` (the local default bus).
    pub async fn new(
        sdk: &aws_config::SdkConfig,
        spec: PipeSpec,
        table: &str,
        bus: &str,
    ) -> Result<PipeEmulator> {
        let described = aws_sdk_dynamodb::Client::new(sdk)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .with_context(|| format!("DescribeTable {table}"))?;
        let stream_arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| anyhow!("{table} has no stream: the template's table needs one"))?
            .to_string();
        Ok(PipeEmulator {
            spec,
            streams: aws_sdk_dynamodbstreams::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
            stream_arn,
            bus: bus.to_string(),
            shards: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The pipe it plays.
    pub fn spec(&self) -> &PipeSpec {
        &self.spec
    }

    /// Reads every record the stream has now, and puts what passes the filter on the bus.
    pub async fn pump(&self) -> Result<Pumped> {
        let mut shards = self.shards.lock().await;
        let described = self
            .streams
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .context("DescribeStream")?;
        let ids: Vec<String> = described
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut pumped = Pumped::default();
        for id in ids {
            if !shards.contains_key(&id) {
                let iterator = self.first_iterator(&id).await?;
                shards.insert(id.clone(), Some(iterator));
            }
            let Some(Some(iterator)) = shards.get(&id).cloned() else {
                continue;
            };
            let (next, read) = self.read_shard(iterator).await?;
            pumped.read += read.0;
            pumped.put += read.1;
            shards.insert(id, next);
        }
        Ok(pumped)
    }

    async fn first_iterator(&self, shard: &str) -> Result<String> {
        let out = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::from(
                self.spec.starting_position.as_str(),
            ))
            .send()
            .await
            .context("GetShardIterator")?;
        out.shard_iterator
            .ok_or_else(|| anyhow!("GetShardIterator gave no iterator"))
    }

    /// Reads a shard up to its end now: (the next iterator, (records read, events put)).
    async fn read_shard(&self, mut iterator: String) -> Result<(Option<String>, (usize, usize))> {
        let (mut read, mut put) = (0, 0);
        loop {
            let out = self
                .streams
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
                .context("GetRecords")?;
            let records = out.records();
            let empty = records.is_empty();
            read += records.len();
            let events: Vec<Value> = records
                .iter()
                .map(|r| record::to_event(r, &self.stream_arn, REGION))
                .collect();
            for batch in events.chunks(self.spec.batch_size) {
                put += self.deliver(batch).await?;
            }
            match out.next_shard_iterator {
                Some(next) if !empty => iterator = next,
                next => return Ok((next, (read, put))),
            }
        }
    }

    /// Filters and shapes one batch and puts it on the bus (10 entries per PutEvents).
    async fn deliver(&self, batch: &[Value]) -> Result<usize> {
        let mut entries = Vec::new();
        for event in batch {
            if let Some((detail_type, detail)) = self.spec.entry(event)? {
                entries.push(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(&self.spec.source)
                        .detail_type(detail_type)
                        .detail(detail.to_string())
                        .build(),
                );
            }
        }
        for chunk in entries.chunks(10) {
            let out = self
                .events
                .put_events()
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .context("PutEvents")?;
            if out.failed_entry_count() > 0 {
                bail!(
                    "PutEvents refused {} entries: {:?}",
                    out.failed_entry_count(),
                    out.entries()
                );
            }
        }
        Ok(entries.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> PipeSpec {
        let pipes = PipeSpec::from_template(&Template::load().unwrap()).unwrap();
        assert_eq!(pipes.len(), 1, "{pipes:?}");
        pipes.into_iter().next().unwrap()
    }

    fn record(name: &str, image: Value) -> Value {
        let keys = json!({"pk": image["pk"], "sk": image["sk"]});
        json!({"eventName": name, "dynamodb": {"Keys": keys, "NewImage": image}})
    }

    #[test]
    fn the_templates_pipe_forwards_budget_event_inserts_only() {
        let spec = spec();
        assert_eq!(
            (spec.table.as_str(), spec.source.as_str()),
            ("LedgerTable", "tracemeter")
        );
        let item = json!({
            "pk": {"S": "BUDGET#cus_1"}, "sk": {"S": "LIMIT#2026-11#REACHED#0"},
            "detail_type": {"S": "Budget Limit Reached"}, "customer_id": {"S": "cus_1"},
            "period": {"S": "2026-11"}, "used": {"N": "150"}, "limit": {"N": "150"},
            "percent": {"N": "100"}, "mode": {"S": "hard"}, "at": {"S": "2026-11-29T10:00:00.000Z"},
        });
        let (detail_type, detail) = spec
            .entry(&record("INSERT", item.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(detail_type, "Budget Limit Reached");
        assert_eq!(
            detail,
            json!({"customer": "cus_1", "period": "2026-11", "used": "150", "limit": "150",
                "percent": "100", "mode": "hard", "at": "2026-11-29T10:00:00.000Z"})
        );
        assert_eq!(spec.entry(&record("MODIFY", item.clone())).unwrap(), None);
        assert_eq!(spec.entry(&record("REMOVE", item)).unwrap(), None);
        let counter = json!({"pk": {"S": "BUDGET#cus_1"}, "sk": {"S": "PERIOD#2026-11"},
            "used": {"N": "150"}, "exceeded": {"BOOL": true}});
        assert_eq!(spec.entry(&record("INSERT", counter)).unwrap(), None);
        let trace = json!({"pk": {"S": "TRACE#t"}, "sk": {"S": "LEDGER"},
            "detail_type": {"S": "Budget Limit Reached"}});
        assert_eq!(spec.entry(&record("INSERT", trace)).unwrap(), None);
    }
}
