//! Provisioning: the DynamoDB tables and SQS queues of `template.yaml`, created in moto as
//! the template says, under a prefix of their own.

mod table;

use super::template::{Resolver, int_value};
use super::{PROCESS_FUNCTION, Template};
use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;
use std::collections::BTreeMap;
use table::create_table;

/// Test-only changes to what the template says, applied to the process function's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionOverrides {
    /// The meter queue's VisibilityTimeout in seconds (tests want 1-2 s, not 180).
    pub visibility_timeout: Option<i32>,
    /// The meter queue's RedrivePolicy maxReceiveCount.
    pub max_receive_count: Option<i32>,
}

/// A queue created in moto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalQueue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// The resources `template.yaml` defines, created in moto under one prefix.
#[derive(Debug, Clone)]
pub struct LocalResources {
    /// The prefix (plays `AWS::StackName`).
    pub prefix: String,
    /// The ledger table (`TABLE_NAME` of the functions).
    pub table_name: String,
    /// The queue of the process function's SQS event source (`QUEUE_URL` of the functions).
    pub queue_url: String,
    pub queue_arn: String,
    /// The meter queue's dead-letter queue.
    pub dlq_url: String,
    pub dlq_arn: String,
    /// The meter queue's VisibilityTimeout as created (after overrides), seconds.
    pub visibility_timeout: i32,
    /// The meter queue's RedrivePolicy maxReceiveCount as created (after overrides).
    pub max_receive_count: i32,
    /// The SQS event source's BatchSize.
    pub batch_size: i32,
    /// The SQS event source's MaximumBatchingWindowInSeconds.
    pub maximum_batching_window_seconds: i32,
    /// The SQS event source reports partial batch failures.
    pub report_batch_item_failures: bool,
    /// The SQS event source's ScalingConfig.MaximumConcurrency.
    pub maximum_concurrency: Option<i32>,
    /// The process function's Timeout, seconds.
    pub function_timeout_seconds: i32,
    /// Every table the template defines: logical id -> table name.
    pub tables: BTreeMap<String, String>,
    /// Every queue the template defines: logical id -> queue.
    pub queues: BTreeMap<String, LocalQueue>,
}

/// Creates, in the stack `sdk` points at, the DynamoDB tables and SQS queues of
/// `template.yaml`, named after `prefix` (`<prefix>-<LogicalId>`, or the template's own name
/// with `${AWS::StackName}` = `prefix`), so tests with different prefixes never collide.
pub async fn provision(
    sdk: &SdkConfig,
    prefix: &str,
    overrides: &ProvisionOverrides,
) -> Result<LocalResources> {
    provision_template(sdk, &Template::load()?, prefix, overrides).await
}

/// [`provision`] for a given template.
pub async fn provision_template(
    sdk: &SdkConfig,
    template: &Template,
    prefix: &str,
    overrides: &ProvisionOverrides,
) -> Result<LocalResources> {
    if prefix.is_empty()
        || prefix.len() > 40
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("prefix {prefix:?} must be 1-40 characters of [A-Za-z0-9_-]");
    }
    let mut p = Provisioning {
        template,
        overrides,
        meter_queue: template
            .sqs_event_source(PROCESS_FUNCTION)?
            .queue_logical_id,
        resolver: Resolver {
            prefix: prefix.to_string(),
            ..Resolver::default()
        },
        dynamodb: aws_sdk_dynamodb::Client::new(sdk),
        sqs: aws_sdk_sqs::Client::new(sdk),
    };
    let tables = p.create_tables().await?;
    // Queues in two passes: create them all, then set the policies that refer to each other.
    let queues = p.create_queues().await?;
    let mut meter_redrive = None;
    for (id, resource) in template.resources_of_type("AWS::SQS::Queue") {
        if let Some(redrive) = p.set_policies(id, resource, &queues).await? {
            meter_redrive = Some(redrive);
        }
    }
    p.resources(tables, queues, meter_redrive).await
}

/// One provisioning: the template, the names resolved so far and the clients.
struct Provisioning<'a> {
    template: &'a Template,
    overrides: &'a ProvisionOverrides,
    /// The logical id of the process function's queue.
    meter_queue: String,
    resolver: Resolver,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Provisioning<'_> {
    async fn create_tables(&mut self) -> Result<BTreeMap<String, String>> {
        let mut tables = BTreeMap::new();
        for (id, resource) in self.template.resources_of_type("AWS::DynamoDB::Table") {
            let table = create_table(&self.dynamodb, self.template, &self.resolver, id, resource)
                .await
                .with_context(|| format!("creating table {id}"))?;
            let mut attributes = BTreeMap::from([
                ("Ref".to_string(), table.name.clone()),
                ("Arn".to_string(), table.arn),
            ]);
            if let Some(stream) = table.stream_arn {
                attributes.insert("StreamArn".to_string(), stream);
            }
            self.resolver.attributes.insert(id.to_string(), attributes);
            tables.insert(id.to_string(), table.name);
        }
        Ok(tables)
    }

    async fn create_queues(&mut self) -> Result<BTreeMap<String, LocalQueue>> {
        let mut queues = BTreeMap::new();
        for (id, resource) in self.template.resources_of_type("AWS::SQS::Queue") {
            let queue = self.create_queue(id, resource).await?;
            self.resolver.attributes.insert(
                id.to_string(),
                BTreeMap::from([
                    ("Ref".to_string(), queue.url.clone()),
                    ("Arn".to_string(), queue.arn.clone()),
                    ("QueueName".to_string(), queue.name.clone()),
                    ("QueueUrl".to_string(), queue.url.clone()),
                ]),
            );
            queues.insert(id.to_string(), queue);
        }
        Ok(queues)
    }

    async fn create_queue(&self, id: &str, resource: &Value) -> Result<LocalQueue> {
        let props = resource.get("Properties");
        let name = match props.and_then(|p| p.get("QueueName")) {
            Some(v) => self.resolver.string(self.template, v)?,
            None => format!("{}-{id}", self.resolver.prefix),
        };
        if props.and_then(|p| p.get("FifoQueue")).is_some() {
            bail!("{id}: FIFO queues are not supported by the local stack yet");
        }
        let created = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(self.queue_attributes(id, props)?))
            .send()
            .await
            .with_context(|| format!("creating queue {id} ({name})"))?;
        let url = created
            .queue_url()
            .ok_or_else(|| anyhow!("CreateQueue {name} returned no URL"))?
            .to_string();
        let arn = queue_attribute(&self.sqs, &url, QueueAttributeName::QueueArn).await?;
        Ok(LocalQueue { name, url, arn })
    }

    /// The queue's attributes as the template sets them, with the overrides for the meter
    /// queue.
    fn queue_attributes(
        &self,
        id: &str,
        props: Option<&Value>,
    ) -> Result<std::collections::HashMap<QueueAttributeName, String>> {
        let mut attributes = std::collections::HashMap::new();
        for (prop, attr) in [
            ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
            (
                "MessageRetentionPeriod",
                QueueAttributeName::MessageRetentionPeriod,
            ),
            ("DelaySeconds", QueueAttributeName::DelaySeconds),
            ("MaximumMessageSize", QueueAttributeName::MaximumMessageSize),
            (
                "ReceiveMessageWaitTimeSeconds",
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            ),
        ] {
            if let Some(v) = props.and_then(|p| p.get(prop)) {
                let value = int_value(v).with_context(|| format!("{id}.{prop}"))?;
                attributes.insert(attr, value.to_string());
            }
        }
        if id == self.meter_queue
            && let Some(vt) = self.overrides.visibility_timeout
        {
            attributes.insert(QueueAttributeName::VisibilityTimeout, vt.to_string());
        }
        Ok(attributes)
    }

    /// Sets the queue's redrive policies; for the meter queue, returns its dead-letter
    /// target and maxReceiveCount.
    async fn set_policies(
        &self,
        id: &str,
        resource: &Value,
        queues: &BTreeMap<String, LocalQueue>,
    ) -> Result<Option<(String, i32)>> {
        let Some(props) = resource.get("Properties") else {
            return Ok(None);
        };
        let mut attributes = Vec::new();
        let mut meter_redrive = None;
        if let Some(policy) = props.get("RedrivePolicy") {
            let (target, max) = self.redrive_policy(id, policy)?;
            if id == self.meter_queue {
                meter_redrive = Some((target.clone(), max));
            }
            let json = serde_json::json!({ "deadLetterTargetArn": target, "maxReceiveCount": max });
            attributes.push((QueueAttributeName::RedrivePolicy, json.to_string()));
        }
        if let Some(policy) = props.get("RedriveAllowPolicy") {
            let json = self.redrive_allow_policy(id, policy, queues)?;
            attributes.push((QueueAttributeName::RedriveAllowPolicy, json.to_string()));
        }
        if !attributes.is_empty() {
            self.sqs
                .set_queue_attributes()
                .queue_url(&queues[id].url)
                .set_attributes(Some(attributes.into_iter().collect()))
                .send()
                .await
                .with_context(|| format!("setting the redrive policies of {id}"))?;
        }
        Ok(meter_redrive)
    }

    /// (dead-letter target ARN, maxReceiveCount), the meter queue's overridden.
    fn redrive_policy(&self, id: &str, policy: &Value) -> Result<(String, i32)> {
        let target = policy
            .get("deadLetterTargetArn")
            .ok_or_else(|| anyhow!("{id}.RedrivePolicy has no deadLetterTargetArn"))?;
        let target = self.resolver.string(self.template, target)?;
        let mut max = int_value(
            policy
                .get("maxReceiveCount")
                .ok_or_else(|| anyhow!("{id}.RedrivePolicy has no maxReceiveCount"))?,
        )?;
        if id == self.meter_queue
            && let Some(m) = self.overrides.max_receive_count
        {
            max = m;
        }
        Ok((target, max))
    }

    fn redrive_allow_policy(
        &self,
        id: &str,
        policy: &Value,
        queues: &BTreeMap<String, LocalQueue>,
    ) -> Result<serde_json::Value> {
        let permission = policy
            .get("redrivePermission")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{id}.RedriveAllowPolicy has no redrivePermission"))?;
        let mut json = serde_json::json!({ "redrivePermission": permission });
        if let Some(list) = policy
            .get("sourceQueueArnList")
            .and_then(Value::as_sequence)
        {
            let arns = list
                .iter()
                .map(|v| self.resolver.string(self.template, v))
                .collect::<Result<Vec<_>>>()?;
            // moto neither stores nor enforces this policy: check here that it names
            // queues of the template (the template builds the ARN from a queue name).
            if let Some(stray) = arns.iter().find(|a| !queues.values().any(|q| &q.arn == *a)) {
                bail!("{id}.RedriveAllowPolicy names {stray}, which is no queue of the template");
            }
            json["sourceQueueArnList"] = serde_json::json!(arns);
        }
        Ok(json)
    }

    /// What was created, as the functions and the event source mapping see it.
    async fn resources(
        self,
        tables: BTreeMap<String, String>,
        queues: BTreeMap<String, LocalQueue>,
        meter_redrive: Option<(String, i32)>,
    ) -> Result<LocalResources> {
        let template = self.template;
        let source = template.sqs_event_source(PROCESS_FUNCTION)?;
        let table_name = template_env_ref(template, &self.resolver, "TABLE_NAME")?;
        let meter = queues
            .get(&self.meter_queue)
            .ok_or_else(|| {
                anyhow!(
                    "{PROCESS_FUNCTION}'s SQS event reads {}, which is not an AWS::SQS::Queue",
                    self.meter_queue
                )
            })?
            .clone();
        let (dlq_arn, max_receive_count) =
            meter_redrive.ok_or_else(|| anyhow!("{} has no RedrivePolicy", self.meter_queue))?;
        let dlq = queues
            .values()
            .find(|q| q.arn == dlq_arn)
            .ok_or_else(|| {
                anyhow!("the dead-letter target {dlq_arn} is not a queue of the template")
            })?
            .clone();
        let visibility_timeout: i32 =
            queue_attribute(&self.sqs, &meter.url, QueueAttributeName::VisibilityTimeout)
                .await?
                .parse()
                .context("VisibilityTimeout")?;
        Ok(LocalResources {
            prefix: self.resolver.prefix.clone(),
            table_name,
            queue_url: meter.url,
            queue_arn: meter.arn,
            dlq_url: dlq.url,
            dlq_arn: dlq.arn,
            visibility_timeout,
            max_receive_count,
            batch_size: source.batch_size,
            maximum_batching_window_seconds: source.maximum_batching_window_seconds,
            report_batch_item_failures: source.report_batch_item_failures,
            maximum_concurrency: source.maximum_concurrency,
            function_timeout_seconds: template.function_timeout(PROCESS_FUNCTION)?,
            tables,
            queues,
        })
    }
}

/// The process function's environment variable `name`, resolved in the local stack.
fn template_env_ref(template: &Template, resolver: &Resolver, name: &str) -> Result<String> {
    let env = template.function_env(PROCESS_FUNCTION)?;
    let value = env
        .get(name)
        .ok_or_else(|| anyhow!("{PROCESS_FUNCTION} has no environment variable {name}"))?;
    resolver
        .string(template, value)
        .with_context(|| format!("resolving {name}"))
}

async fn queue_attribute(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
) -> Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .with_context(|| format!("GetQueueAttributes {name} of {url}"))?;
    out.attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .ok_or_else(|| anyhow!("{url} has no attribute {name}"))
}

#[cfg(test)]
mod tests;
