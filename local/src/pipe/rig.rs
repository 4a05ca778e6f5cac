//! Budget events, received: the template's pipe played on a stack's table, a bus of the
//! stack's own standing for the default bus, and the template's `AWS::Events::Rule`
//! patterns routed to one SQS queue, whose messages are the events EventBridge delivered.

use super::{PipeEmulator, PipeSpec};
use crate::stack::{self, LocalResources, Template};
use anyhow::{Context, Result, anyhow};
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The events a stack's pipe delivered, through the template's rules.
#[derive(Debug)]
pub struct EventsRig {
    /// The pipe.
    pub pipe: PipeEmulator,
    /// The bus playing the default bus.
    pub bus: String,
    /// The queue every rule of the template targets here.
    pub queue_url: String,
    sqs: aws_sdk_sqs::Client,
    received: Mutex<Vec<Value>>,
    put: AtomicUsize,
}

impl EventsRig {
    /// Plays the template's pipe on `resources`' table in the moto at `endpoint`, with the
    /// template's rules (their event patterns) on a bus `<prefix>-bus`, to one queue.
    pub async fn start(endpoint: &str, resources: &LocalResources) -> Result<EventsRig> {
        let sdk = stack::sdk_config(endpoint).await;
        let template = Template::load()?;
        let spec = PipeSpec::from_template(&template)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("template.yaml has no AWS::Pipes::Pipe"))?;
        let table = resources
            .tables
            .get(&spec.table)
            .ok_or_else(|| anyhow!("the pipe reads {}, which is no table", spec.table))?;
        let bus = format!("{}-bus", resources.prefix);
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        events
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .context("CreateEventBus")?;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{}-events", resources.prefix))
            .send()
            .await
            .context("CreateQueue")?
            .queue_url
            .ok_or_else(|| anyhow!("CreateQueue gave no URL"))?;
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("GetQueueAttributes")?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| anyhow!("no queue ARN"))?;
        for (id, pattern) in rule_patterns(&template)? {
            let name = format!("{}-{id}", resources.prefix);
            events
                .put_rule()
                .name(&name)
                .event_bus_name(&bus)
                .event_pattern(pattern.to_string())
                .send()
                .await
                .with_context(|| format!("PutRule {id}"))?;
            let target = Target::builder()
                .id("events-queue")
                .arn(&queue_arn)
                .build()?;
            events
                .put_targets()
                .rule(&name)
                .event_bus_name(&bus)
                .targets(target)
                .send()
                .await
                .with_context(|| format!("PutTargets {id}"))?;
        }
        Ok(EventsRig {
            pipe: PipeEmulator::new(&sdk, spec, table, &bus).await?,
            bus,
            queue_url,
            sqs,
            received: Mutex::new(Vec::new()),
            put: AtomicUsize::new(0),
        })
    }

    /// Pumps the pipe, then takes from the queue until it has every event the pipe put so
    /// far (moto delivers to a rule's target a moment after PutEvents), or 10 s passed:
    /// every event received so far.
    pub async fn received(&self) -> Result<Vec<Value>> {
        let pumped = self.pipe.pump().await?;
        let put = self.put.fetch_add(pumped.put, Ordering::Relaxed) + pumped.put;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < put && Instant::now() < deadline {
            if self.take().await? == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.take().await?;
        Ok(self
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    /// Events the pipe put on the bus so far.
    pub fn put(&self) -> usize {
        self.put.load(Ordering::Relaxed)
    }

    fn count(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Takes what the queue holds now; how many.
    async fn take(&self) -> Result<usize> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .context("ReceiveMessage")?;
        let messages = out.messages.unwrap_or_default();
        for m in &messages {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default())?;
            self.received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(body);
            if let Some(handle) = m.receipt_handle() {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .context("DeleteMessage")?;
            }
        }
        Ok(messages.len())
    }

    /// The events received so far of one detail-type (pumping first).
    pub async fn of_type(&self, detail_type: &str) -> Result<Vec<Value>> {
        Ok(self
            .received()
            .await?
            .into_iter()
            .filter(|e| e["detail-type"] == detail_type)
            .collect())
    }
}

/// Each `AWS::Events::Rule` of the template with its event pattern, as JSON.
fn rule_patterns(template: &Template) -> Result<Vec<(String, Value)>> {
    template
        .resources_of_type("AWS::Events::Rule")
        .into_iter()
        .filter_map(|(id, r)| {
            let pattern = r.get("Properties")?.get("EventPattern")?;
            Some(
                serde_json::to_value(pattern)
                    .map(|p| (id.to_string(), p))
                    .with_context(|| format!("{id}.EventPattern")),
            )
        })
        .collect()
}
