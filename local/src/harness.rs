//! One isolated local stack per test: moto (shared per process, resources under a unique
//! prefix), a Langfuse fake, a Stripe fake, the real adapters and the real handler.

use crate::drain::{self, Drain, Drained};
use crate::esm::{EventSourceMapping, PollReport};
use crate::fakes::langfuse::LangfuseFake;
use crate::fakes::stripe::StripeFake;
use crate::faults::{Crash, Faults, NoFaults};
use crate::stack::{self, LocalResources, LocalSecrets, Moto, ProvisionOverrides};
use crate::write_meter::WriteMeter;
use anyhow::Result;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use process::Deps;
use std::collections::HashMap;
use std::sync::Arc;
use tracemeter::adapters::credential::Credential;
use tracemeter::adapters::dynamo::{DynamoLedger, DynamoQuota};
use tracemeter::adapters::ingest_store::DynamoIngestStore;
use tracemeter::adapters::langfuse::LangfuseClient;
use tracemeter::adapters::langfuse::scan::LangfuseScanner;
use tracemeter::adapters::price_cache::{PRICE_CACHE_TTL, PriceCache};
use tracemeter::adapters::secrets::SecretsManagerSource;
use tracemeter::adapters::sqs::SqsRedelivery;
use tracemeter::adapters::sqs::SqsSender;
use tracemeter::adapters::stripe::StripeClient;
use tracemeter::clock::{OffsetClock, SystemClock};
use tracemeter::config::{IngestConfig, LangfuseKeys, ProcessConfig, StripeKey};
use tracemeter::ports::{PriceBook, QueueSender};

/// Langfuse public key used by the fakes.
pub const LANGFUSE_PUBLIC_KEY: &str = "pk-lf-local-0000";
/// Langfuse secret key used by the fakes.
pub const LANGFUSE_SECRET_KEY: &str = "sk-lf-local-secret-7f3a";
/// Stripe secret key used by the fake.
pub const STRIPE_SECRET_KEY: &str = "sk_test_local_secret_9d21";
/// The meter's event name.
pub const METER_EVENT_NAME: &str = "llm_credits";

/// A running local stack.
pub struct TestStack {
    /// moto's endpoint.
    pub endpoint: String,
    /// The resources of template.yaml.
    pub resources: LocalResources,
    /// Langfuse fake.
    pub langfuse: LangfuseFake,
    /// Stripe fake.
    pub stripe: StripeFake,
    /// Typed configuration, as the function reads it.
    pub config: ProcessConfig,
    /// The environment the functions would get: the secrets' ARNs, no key.
    pub env: HashMap<String, String>,
    /// The Langfuse and Stripe secrets in moto (rotate them here).
    pub secrets: LocalSecrets,
    /// The Langfuse keys the in-process adapters use, read from their secret.
    pub langfuse_keys: Credential<LangfuseKeys>,
    /// The Stripe key the in-process adapters use, read from its secret.
    pub stripe_key: Credential<StripeKey>,
    /// The DynamoDB adapter.
    pub ledger: DynamoLedger,
    /// The price book as the process function reads it: through its cache (60 s, on the
    /// system clock). `prices.clear()` stands for waiting out the TTL after a backdated change.
    pub prices: PriceCache<DynamoLedger>,
    /// The stack's own DynamoDB client (the same interceptor as the adapter's): what the
    /// local tooling reads of the table itself (reports, item sizes).
    pub dynamo: aws_sdk_dynamodb::Client,
    /// The Langfuse adapter.
    pub langfuse_client: LangfuseClient,
    /// The Stripe adapter.
    pub stripe_client: StripeClient,
    /// The SQS adapter.
    pub redelivery: SqsRedelivery,
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// The event source mapping.
    pub esm: EventSourceMapping,
    /// The clock the handler sees.
    pub clock: OffsetClock,
    /// Every DynamoDB write made through `ledger` (the handler's client).
    pub dynamo_writes: WriteMeter,
}

/// The ingest function's real adapters, built as its `main` builds them.
pub struct IngestRig {
    /// Its configuration.
    pub config: IngestConfig,
    /// Lease, cursor, ledger coverage.
    pub store: DynamoIngestStore,
    /// The meter queue.
    pub sqs: SqsSender,
    /// Langfuse listing.
    pub lister: LangfuseScanner,
}

impl IngestRig {
    /// Runs the real ingest handler once, as the schedule would, sending to `queue`, with
    /// `seconds` until the invocation's deadline.
    pub async fn run_with(
        &self,
        stack: &TestStack,
        queue: &dyn QueueSender,
        seconds: i64,
    ) -> std::result::Result<ingest::IngestSummary, tracemeter::Error> {
        let deps = ingest::Deps {
            config: &self.config,
            lister: &self.lister,
            store: &self.store,
            queue,
            clock: &stack.clock,
        };
        let event = serde_json::json!({
            "id": "local-schedule", "detail-type": "Scheduled Event", "source": "aws.events"
        });
        let deadline =
            tracemeter::clock::Clock::now(&stack.clock) + chrono::Duration::seconds(seconds);
        ingest::handle(&deps, &event, deadline).await
    }

    /// Runs the real ingest handler with the real SQS adapter and a 60 s deadline.
    pub async fn run(
        &self,
        stack: &TestStack,
    ) -> std::result::Result<ingest::IngestSummary, tracemeter::Error> {
        self.run_with(stack, &self.sqs, 60).await
    }
}

/// Options for a stack.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Extra or overriding environment variables of the function.
    pub env: Vec<(String, String)>,
    /// The queue's visibility timeout (tests use 1-2 s).
    pub visibility_timeout: Option<i32>,
    /// The queue's maxReceiveCount.
    pub max_receive_count: Option<i32>,
    /// Where the functions' AWS clients send their calls (a fault-injecting proxy in front of
    /// moto); None: moto itself. Provisioning always talks to moto directly.
    pub aws_endpoint: Option<String>,
}

impl StackOptions {
    /// Adds a variable.
    pub fn var(mut self, name: &str, value: impl ToString) -> StackOptions {
        self.env.push((name.to_string(), value.to_string()));
        self
    }
}

impl TestStack {
    /// A stack with defaults and a short visibility timeout.
    pub async fn start(label: &str) -> Result<TestStack> {
        TestStack::start_with(label, StackOptions::default()).await
    }

    /// A stack with options.
    pub async fn start_with(label: &str, options: StackOptions) -> Result<TestStack> {
        init_test_logs();
        let moto = Moto::try_shared()?;
        let endpoint = moto.endpoint().to_string();
        let sdk = stack::sdk_config(&endpoint).await;
        let overrides = ProvisionOverrides {
            visibility_timeout: Some(options.visibility_timeout.unwrap_or(2)),
            max_receive_count: options.max_receive_count,
        };
        let resources = stack::provision(&sdk, &stack::unique_prefix(label), &overrides).await?;
        let client_endpoint = options.aws_endpoint.clone().unwrap_or(endpoint.clone());
        let sdk = stack::sdk_config(&client_endpoint).await;
        let langfuse = LangfuseFake::start(LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY).await;
        let stripe = StripeFake::start(STRIPE_SECRET_KEY).await;
        let mut env = function_env(&langfuse, &stripe, &resources);
        for (k, v) in stack::safe_aws_env(&client_endpoint) {
            env.insert(k.to_string(), v);
        }
        for (k, v) in options.env {
            env.insert(k, v);
        }
        let moto_sdk = stack::sdk_config(&endpoint).await;
        let secrets = store_keys(&moto_sdk, &resources.prefix, &mut env).await?;
        let config = ProcessConfig::from_lookup(&|name| env.get(name).cloned())?;
        let source = secrets_source(&sdk);
        let langfuse_keys = Credential::load(&config.langfuse.keys, source.clone()).await?;
        let stripe_key = Credential::load(&config.stripe.key, source).await?;
        let dynamo_writes = WriteMeter::default();
        let dynamo = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(dynamo_writes.clone())
                .build(),
        );
        let ledger = DynamoLedger::new(dynamo.clone(), &resources.table_name);
        // What the deploy guide has the operator run once: `tracemeter price index`.
        ledger.build_index().await?;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let redelivery = SqsRedelivery::new(sqs.clone(), &resources.queue_url);
        let esm = EventSourceMapping {
            sqs: sqs.clone(),
            queue_url: resources.queue_url.clone(),
            queue_arn: resources.queue_arn.clone(),
            batch_size: resources.batch_size,
            region: "us-east-1".into(),
            batching_window: std::time::Duration::ZERO,
        };
        Ok(TestStack {
            endpoint,
            langfuse_client: LangfuseClient::new(&config.langfuse, langfuse_keys.clone())?
                .with_quota(DynamoQuota::for_limit(
                    dynamo.clone(),
                    &resources.table_name,
                    "langfuse",
                    config.langfuse.requests,
                )),
            stripe_client: StripeClient::new(&config.stripe, stripe_key.clone())?,
            secrets,
            langfuse_keys,
            stripe_key,
            resources,
            langfuse,
            stripe,
            config,
            env,
            prices: PriceCache::new(ledger.clone(), Arc::new(SystemClock), PRICE_CACHE_TTL),
            ledger,
            dynamo,
            redelivery,
            sqs,
            esm,
            clock: OffsetClock::new(),
            dynamo_writes,
        })
    }

    /// The handler's dependencies.
    pub fn deps(&self) -> Deps<'_> {
        Deps {
            config: &self.config,
            usage: &self.langfuse_client,
            meter: &self.stripe_client,
            ledger: &self.ledger,
            prices: &self.prices,
            redelivery: &self.redelivery,
            clock: &self.clock,
        }
    }

    /// Invokes the real handler on an event (30 s deadline).
    pub async fn invoke_with(
        &self,
        faults: &dyn Faults,
        event: SqsEvent,
    ) -> Result<SqsBatchResponse, Crash> {
        let deadline = tracemeter::clock::Clock::now(&self.clock) + chrono::Duration::seconds(30);
        crate::faults::invoke(&self.deps(), faults, event, deadline).await
    }

    /// The ingest function's adapters for this stack, with its environment plus `vars`.
    /// Unless `vars` says otherwise, the Langfuse request budget is unlimited and a run stops
    /// 2 s before its deadline.
    pub fn ingest(&self, vars: &[(&str, &str)]) -> IngestRig {
        let mut env = self.env.clone();
        env.insert("INGEST_TIME_BUDGET_MARGIN_SECONDS".into(), "2".into());
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let config = IngestConfig::from_lookup(&|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("ingest configuration: {e}"));
        IngestRig {
            store: DynamoIngestStore::new(self.dynamo.clone(), &config.table_name),
            sqs: SqsSender::new(self.sqs.clone(), &config.queue_url),
            lister: LangfuseScanner::new(&config, self.langfuse_keys.clone())
                .unwrap_or_else(|e| panic!("Langfuse scanner: {e}"))
                .with_quota(DynamoQuota::for_limit(
                    self.dynamo.clone(),
                    &config.table_name,
                    "langfuse",
                    config.langfuse.requests,
                )),
            config,
        }
    }

    /// Sends message bodies to the queue (10 per call).
    pub async fn send_bodies(&self, bodies: &[String]) -> Result<()> {
        send_bodies_to(&self.sqs, &self.resources.queue_url, bodies).await
    }

    /// Enqueues trace ids as ingest would.
    pub async fn send_traces(&self, trace_ids: &[&str]) -> Result<()> {
        let bodies: Vec<String> = trace_ids
            .iter()
            .map(|id| tracemeter::domain::message::MeterMessage::new(*id).to_body())
            .collect();
        self.send_bodies(&bodies).await
    }

    /// Polls one batch and invokes the handler with `faults`.
    pub async fn poll_with(
        &self,
        faults: &dyn Faults,
        wait_seconds: i32,
    ) -> Result<Option<PollReport>> {
        self.esm
            .poll(wait_seconds, |event| self.invoke_with(faults, event))
            .await
    }

    /// Polls until the queue is empty (visible and in flight), up to `max_polls` polls.
    pub async fn drain(&self, max_polls: usize) -> Result<Vec<PollReport>> {
        let options = Drain {
            max_polls: Some(max_polls),
            ..Drain::default()
        };
        self.drain_with(&options).await.map(|drained| drained.polls)
    }

    /// Drains the queue as `options` say, invoking the real handler without faults.
    pub async fn drain_with(&self, options: &Drain) -> Result<Drained> {
        drain::drain(&self.esm, options, |_, event| {
            self.invoke_with(&NoFaults, event)
        })
        .await
    }

    /// Messages in the dead-letter queue.
    pub async fn dlq_depth(&self) -> Result<i64> {
        let (visible, in_flight) = self.esm.depth(&self.resources.dlq_url).await?;
        Ok(visible + in_flight)
    }
}

/// The functions' variables on this stack, with the fakes' keys (moved into the secrets by
/// [`store_keys`] before any function sees them).
fn function_env(
    langfuse: &LangfuseFake,
    stripe: &StripeFake,
    resources: &LocalResources,
) -> HashMap<String, String> {
    HashMap::from([
        ("LANGFUSE_BASE_URL".into(), langfuse.base_url()),
        ("LANGFUSE_PUBLIC_KEY".into(), LANGFUSE_PUBLIC_KEY.into()),
        ("LANGFUSE_SECRET_KEY".into(), LANGFUSE_SECRET_KEY.into()),
        ("LANGFUSE_API".into(), "v2".into()),
        ("LANGFUSE_TIMEOUT_MS".into(), "3000".into()),
        ("LANGFUSE_REQUESTS_PER_MINUTE".into(), "unlimited".into()),
        ("STRIPE_API_BASE".into(), stripe.base_url()),
        ("STRIPE_METER_EVENTS_BASE".into(), stripe.base_url()),
        ("STRIPE_SECRET_KEY".into(), STRIPE_SECRET_KEY.into()),
        ("STRIPE_METER_EVENT_NAME".into(), METER_EVENT_NAME.into()),
        ("STRIPE_TIMEOUT_MS".into(), "3000".into()),
        ("TABLE_NAME".into(), resources.table_name.clone()),
        ("QUEUE_URL".into(), resources.queue_url.clone()),
        ("RETRY_BASE_SECONDS".into(), "1".into()),
        ("RETRY_MAX_SECONDS".into(), "2".into()),
    ])
}

/// The in-process adapters' secret source: through the stack's AWS endpoint (a counting or
/// fault-injecting proxy sees the reads), with more attempts than the SDK's default 3, as the
/// chaos run's proxy injects AWS faults from the start.
fn secrets_source(
    sdk: &aws_config::SdkConfig,
) -> std::sync::Arc<dyn tracemeter::ports::SecretSource> {
    let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(6);
    let config = aws_sdk_secretsmanager::config::Builder::from(sdk)
        .retry_config(retry)
        .build();
    std::sync::Arc::new(SecretsManagerSource::new(
        aws_sdk_secretsmanager::Client::from_conf(config),
    ))
}

/// Moves the keys out of `env` into the stack's secrets in moto (the fakes' keys, or the real
/// services' test keys a local run was given) and puts the secrets' ARNs in their place, as
/// the template does: no key in any function variable.
async fn store_keys(
    sdk: &aws_config::SdkConfig,
    prefix: &str,
    env: &mut HashMap<String, String>,
) -> Result<LocalSecrets> {
    let mut take = |name: &str| env.remove(name).unwrap_or_default();
    let (public_key, secret_key) = (take("LANGFUSE_PUBLIC_KEY"), take("LANGFUSE_SECRET_KEY"));
    let stripe_key = take("STRIPE_SECRET_KEY");
    let secrets =
        LocalSecrets::create(sdk, prefix, (&public_key, &secret_key), &stripe_key).await?;
    env.insert("LANGFUSE_SECRET_ARN".into(), secrets.langfuse_arn.clone());
    env.insert("STRIPE_SECRET_ARN".into(), secrets.stripe_arn.clone());
    Ok(secrets)
}

/// Logs of the code under test, captured per test (shown when a test fails) and scanned for
/// the test secrets ([`crate::logscan`]).
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,aws_smithy_runtime=warn,aws_config=warn,hyper=warn",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_writer(crate::logscan::Scanning(
            tracing_subscriber::fmt::TestWriter::new(),
        ))
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Sends message bodies to `queue_url` (10 per call); fails if any entry was not sent.
pub async fn send_bodies_to(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: &[String],
) -> Result<()> {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("e{i}"))
                    .message_body(body)
                    .build()
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
        anyhow::ensure!(out.failed().is_empty(), "send failed: {:?}", out.failed());
    }
    Ok(())
}
