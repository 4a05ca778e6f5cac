//! The local AWS stack as a library: a moto server on 127.0.0.1 and the DynamoDB tables and SQS
//! queues that `template.yaml` defines, created in it exactly as the template says.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tracemeter_local::stack::{self, Moto, ProvisionOverrides};
//! let moto = Moto::shared();
//! let sdk = stack::sdk_config(moto.endpoint()).await;
//! let res = stack::provision(&sdk, &stack::unique_prefix("demo"), &ProvisionOverrides {
//!     visibility_timeout: Some(1),
//!     ..Default::default()
//! })
//! .await?;
//! println!("{} {}", res.table_name, res.queue_url);
//! # Ok(())
//! # }
//! ```
//!
//! Safety rules kept here: moto binds 127.0.0.1 only; every SDK config is built explicitly
//! (static test credentials, fixed region, loopback endpoint), so the SDK never looks for
//! credentials on the EC2 metadata address; the moto process is stopped with the test process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;

/// The region every local client uses.
pub const REGION: &str = "us-east-1";
/// moto's default account id: what `${AWS::AccountId}` resolves to locally.
pub const ACCOUNT_ID: &str = "123456789012";
/// Logical id of the function whose SQS event source the local runner plays.
pub const PROCESS_FUNCTION: &str = "ProcessFunction";
/// Logical id of the scheduled ingest function.
pub const INGEST_FUNCTION: &str = "IngestFunction";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root (the workspace directory holding `template.yaml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `<repo>/template.yaml`.
pub fn template_path() -> PathBuf {
    repo_root().join("template.yaml")
}

/// `<repo>/local/scripts/moto_guard.py`, which runs moto for as long as a watched process lives.
pub fn moto_guard() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("moto_guard.py")
}

/// `<repo>/.venv/bin/python`, the interpreter that has moto (made by `make venv`).
pub fn venv_python() -> PathBuf {
    repo_root().join(".venv").join("bin").join("python")
}

// ---------------------------------------------------------------------------------------------
// moto server
// ---------------------------------------------------------------------------------------------

/// A moto server on 127.0.0.1, run by `local/scripts/moto_guard.py` from the project venv.
///
/// The guard watches the test process and stops moto as soon as it is gone, so even the shared
/// instance (never dropped) leaves nothing running. An owned instance ([`Moto::start`]) is also
/// killed, by its pid, when dropped.
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    port: u16,
    child: Mutex<Option<Child>>,
}

static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();

impl Moto {
    /// The one moto server of this test process, started on first use.
    ///
    /// Tests that share it must isolate themselves with their own resource names
    /// ([`unique_prefix`]) and must not call [`Moto::reset`] on it.
    ///
    /// # Panics
    /// If moto cannot be started; the message says why (e.g. the venv is missing).
    pub fn shared() -> &'static Moto {
        match Self::try_shared() {
            Ok(moto) => moto,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Like [`Moto::shared`], returning the start-up error instead of panicking.
    pub fn try_shared() -> Result<&'static Moto> {
        match SHARED.get_or_init(|| Moto::start().map_err(|e| format!("{e:#}"))) {
            Ok(moto) => Ok(moto),
            Err(e) => Err(anyhow!("{e}")),
        }
    }

    /// Starts a moto server of its own, on a free loopback port; it is stopped on drop.
    pub fn start() -> Result<Moto> {
        let python = venv_python();
        if !python.exists() {
            bail!(
                "moto needs the project venv, but {} does not exist: run `make venv` (dev/venv.sh)",
                python.display()
            );
        }
        let guard = moto_guard();
        let mut child = Command::new(&python)
            .arg(&guard)
            .arg("0")
            .arg(std::process::id().to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), guard.display()))?;
        match Self::wait_for_port(&mut child) {
            Ok(port) => Ok(Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                child: Mutex::new(Some(child)),
            }),
            Err(e) => {
                stop_child(&mut child);
                Err(e.context(format!(
                    "moto did not start from {}: check the venv (run `make venv`)",
                    python.display()
                )))
            }
        }
    }

    fn wait_for_port(child: &mut Child) -> Result<u16> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let stdout = child
            .stdout
            .take()
            .context("moto guard has no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            // The receiver may be gone after a timeout; nothing to do then.
            let _ = tx.send(read.map(|_| line));
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(anyhow!(e).context("reading the moto guard's port line")),
            Err(_) => bail!(
                "moto guard printed no port within {}s",
                STARTUP_TIMEOUT.as_secs()
            ),
        };
        let Some(port) = line
            .trim()
            .strip_prefix("MOTO_PORT=")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            let status = child.try_wait().ok().flatten();
            bail!(
                "moto guard exited or misbehaved before listening (printed {line:?}, exit status {status:?}; its stderr is above)"
            );
        };
        loop {
            if http_answers(port) {
                return Ok(port);
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("moto guard exited with {status} before answering HTTP");
            }
            if Instant::now() > deadline {
                bail!(
                    "moto on 127.0.0.1:{port} did not answer HTTP within {}s",
                    STARTUP_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the guard process (the one that runs moto).
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Child::id))
    }

    /// Clears all moto state (`POST /moto-api/reset`). Never on [`Moto::shared`] while other
    /// tests may be using it.
    pub async fn reset(&self) -> Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = client
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .context("POST /moto-api/reset")?;
        if !resp.status().is_success() {
            bail!("POST /moto-api/reset answered {}", resp.status());
        }
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.child.lock()
            && let Some(mut child) = guard.take()
        {
            stop_child(&mut child);
        }
    }
}

/// Kills the child by its pid and reaps it.
fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// True when something on 127.0.0.1:`port` answers an HTTP request.
fn http_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

// ---------------------------------------------------------------------------------------------
// SDK configuration
// ---------------------------------------------------------------------------------------------

/// An AWS SDK config for the local stack at `endpoint`: static test credentials, region
/// us-east-1, the loopback endpoint. Nothing is looked up in the environment that could
/// reach the EC2 metadata address (credentials and region are given).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "tracemeter-local-stack",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// The environment a child process (a function binary, `cargo lambda watch`, a script) needs to
/// talk to the local stack at `endpoint` and nothing else: pass it to `Command::envs`.
///
/// This does not change the test process's own environment: `std::env::set_var` is `unsafe`
/// in edition 2024 and the workspace forbids `unsafe_code`; in-process code uses
/// [`sdk_config`], and the shell scripts (`dev/aws-env.sh`) export the same variables.
pub fn safe_aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_DEFAULT_REGION", REGION.to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
    ]
}

/// A resource-name prefix unique to this process and call: `<label>-<pid>-<n>` (lower case).
pub fn unique_prefix(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let label: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{label}-{}-{n}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// template.yaml
// ---------------------------------------------------------------------------------------------

/// `template.yaml`, parsed. CloudFormation short tags (`!Ref`, `!GetAtt`, `!Sub`, ...) are
/// kept as YAML tagged values; the long forms (`Ref`, `Fn::GetAtt`, `Fn::Sub`) work as well.
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

/// The SQS event source of a function, as the template defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsEventSource {
    /// Logical id of the event (key under `Events`).
    pub event_id: String,
    /// Logical id of the queue (`Queue: !GetAtt <id>.Arn`).
    pub queue_logical_id: String,
    pub batch_size: i32,
    pub maximum_batching_window_seconds: i32,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `ScalingConfig.MaximumConcurrency`, if set.
    pub maximum_concurrency: Option<i32>,
}

impl Template {
    /// Reads and parses `<repo>/template.yaml`.
    pub fn load() -> Result<Template> {
        let path = template_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Template::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses a template from YAML text.
    pub fn parse(yaml: &str) -> Result<Template> {
        let root: Value = serde_yaml::from_str(yaml)?;
        if root.get("Resources").and_then(Value::as_mapping).is_none() {
            bail!("the template has no Resources mapping");
        }
        Ok(Template { root })
    }

    /// `(logical id, resource)` of every resource of `type_name`, in template order.
    pub fn resources_of_type<'a>(&'a self, type_name: &'a str) -> Vec<(&'a str, &'a Value)> {
        self.resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(type_name))
            .collect()
    }

    fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    fn resource(&self, logical_id: &str) -> Result<&Value> {
        self.root
            .get("Resources")
            .and_then(|r| r.get(logical_id))
            .ok_or_else(|| anyhow!("template has no resource {logical_id}"))
    }

    /// A serverless function's property, falling back to `Globals.Function`.
    fn function_property(&self, function: &str, name: &str) -> Result<Option<&Value>> {
        let own = self
            .resource(function)?
            .get("Properties")
            .and_then(|p| p.get(name));
        let global = self
            .root
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get(name));
        Ok(own.or(global))
    }

    /// The function's memory in MB (its own or `Globals.Function.MemorySize`; Lambda's
    /// default is 128).
    pub fn function_memory_mb(&self, function: &str) -> Result<i32> {
        match self.function_property(function, "MemorySize")? {
            Some(v) => int_value(v).context("MemorySize"),
            None => Ok(128),
        }
    }

    /// The function's timeout in seconds (its own or `Globals.Function.Timeout`; Lambda's
    /// default is 3).
    pub fn function_timeout(&self, function: &str) -> Result<i32> {
        match self.function_property(function, "Timeout")? {
            Some(v) => int_value(v).context("Timeout"),
            None => Ok(3),
        }
    }

    /// The function's environment variables as written in the template (own over `Globals`),
    /// values still unresolved.
    pub fn function_env(&self, function: &str) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        let global = self
            .root
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"));
        let own = self
            .resource(function)?
            .get("Properties")
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"));
        for vars in [global, own].into_iter().flatten() {
            for (k, v) in vars.as_mapping().into_iter().flatten() {
                if let Some(k) = k.as_str() {
                    out.insert(k.to_string(), v.clone());
                }
            }
        }
        Ok(out)
    }

    /// The (single) SQS event source of `function`.
    pub fn sqs_event_source(&self, function: &str) -> Result<SqsEventSource> {
        let events = self
            .resource(function)?
            .get("Properties")
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("{function} has no Events"))?;
        let mut found = events
            .iter()
            .filter(|(_, e)| e.get("Type").and_then(Value::as_str) == Some("SQS"));
        let (id, event) = found
            .next()
            .ok_or_else(|| anyhow!("{function} has no SQS event"))?;
        if found.next().is_some() {
            bail!("{function} has more than one SQS event; the local stack plays one");
        }
        let event_id = id.as_str().unwrap_or_default().to_string();
        let props = event
            .get("Properties")
            .ok_or_else(|| anyhow!("{function} event {event_id} has no Properties"))?;
        let queue = props
            .get("Queue")
            .ok_or_else(|| anyhow!("{function} event {event_id} has no Queue"))?;
        let queue_logical_id = match intrinsic(queue) {
            Some(("Fn::GetAtt", arg)) => {
                let (res, attr) = getatt_parts(arg)?;
                if attr != "Arn" {
                    bail!("{function} event {event_id}: Queue must be !GetAtt <queue>.Arn");
                }
                res
            }
            _ => bail!("{function} event {event_id}: Queue must be !GetAtt <queue>.Arn"),
        };
        let int_prop = |name: &str, default: i32| -> Result<i32> {
            props
                .get(name)
                .map(|v| int_value(v).with_context(|| format!("{event_id}.{name}")))
                .unwrap_or(Ok(default))
        };
        Ok(SqsEventSource {
            event_id: event_id.clone(),
            queue_logical_id,
            // Lambda's defaults for SQS event sources.
            batch_size: int_prop("BatchSize", 10)?,
            maximum_batching_window_seconds: int_prop("MaximumBatchingWindowInSeconds", 0)?,
            report_batch_item_failures: props
                .get("FunctionResponseTypes")
                .and_then(Value::as_sequence)
                .is_some_and(|s| {
                    s.iter()
                        .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
                }),
            maximum_concurrency: props
                .get("ScalingConfig")
                .and_then(|s| s.get("MaximumConcurrency"))
                .map(int_value)
                .transpose()
                .context("ScalingConfig.MaximumConcurrency")?,
        })
    }

    fn parameter_default(&self, name: &str) -> Option<String> {
        let default = self
            .root
            .get("Parameters")
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("Default"))?;
        scalar_string(default)
    }
}

/// Recognises an intrinsic function in short (`!Ref x`) or long (`{Ref: x}`) form and returns
/// its long name (`Ref`, `Fn::GetAtt`, `Fn::Sub`, ...) and argument.
fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = match tag.trim_start_matches('!') {
                "Ref" => "Ref",
                "Condition" => "Condition",
                "GetAtt" => "Fn::GetAtt",
                "Sub" => "Fn::Sub",
                "Join" => "Fn::Join",
                "If" => "Fn::If",
                "Select" => "Fn::Select",
                "Split" => "Fn::Split",
                "ImportValue" => "Fn::ImportValue",
                "FindInMap" => "Fn::FindInMap",
                "Base64" => "Fn::Base64",
                "GetAZs" => "Fn::GetAZs",
                "Equals" => "Fn::Equals",
                "Not" => "Fn::Not",
                "And" => "Fn::And",
                "Or" => "Fn::Or",
                _ => return None,
            };
            Some((name, &tagged.value))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            let k = k.as_str()?;
            (k == "Ref" || k.starts_with("Fn::")).then_some((k, v))
        }
        _ => None,
    }
}

/// `!GetAtt Res.Attr` or `Fn::GetAtt: [Res, Attr]` -> (Res, Attr).
fn getatt_parts(arg: &Value) -> Result<(String, String)> {
    match arg {
        Value::String(s) => s
            .split_once('.')
            .map(|(r, a)| (r.to_string(), a.to_string()))
            .ok_or_else(|| anyhow!("GetAtt {s:?} is not <resource>.<attribute>")),
        Value::Sequence(seq) if seq.len() == 2 => match (seq[0].as_str(), seq[1].as_str()) {
            (Some(r), Some(a)) => Ok((r.to_string(), a.to_string())),
            _ => bail!("GetAtt {seq:?} is not [resource, attribute]"),
        },
        other => bail!("GetAtt {other:?} is not supported"),
    }
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int_value(value: &Value) -> Result<i32> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| anyhow!("{n} is not a 32-bit integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{s:?} is not an integer")),
        other => bail!("{other:?} is not a literal integer"),
    }
}

fn bool_value(value: &Value) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => bail!("{other:?} is not a literal boolean"),
    }
}

/// What `Ref` / `GetAtt` / `${...}` resolve to in the local stack.
#[derive(Debug, Default)]
struct Resolver {
    prefix: String,
    /// logical id -> attribute ("Ref", "Arn", "QueueName", ...) -> value
    attributes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Resolver {
    fn lookup(&self, template: &Template, name: &str) -> Result<String> {
        let (res, attr) = name.split_once('.').unwrap_or((name, "Ref"));
        match name {
            "AWS::StackName" => return Ok(self.prefix.clone()),
            "AWS::Region" => return Ok(REGION.to_string()),
            "AWS::AccountId" => return Ok(ACCOUNT_ID.to_string()),
            "AWS::Partition" => return Ok("aws".to_string()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_string()),
            _ => {}
        }
        if let Some(v) = self.attributes.get(res).and_then(|a| a.get(attr)) {
            return Ok(v.clone());
        }
        if attr == "Ref"
            && let Some(default) = template.parameter_default(res)
        {
            return Ok(default);
        }
        bail!("cannot resolve {name} in the local stack (not created yet, or unsupported)")
    }

    /// Resolves a literal, `!Ref`, `!GetAtt` or `!Sub` (string form) to a string.
    fn string(&self, template: &Template, value: &Value) -> Result<String> {
        if let Some(s) = scalar_string(value) {
            return Ok(s);
        }
        match intrinsic(value) {
            Some(("Ref", Value::String(name))) => self.lookup(template, name),
            Some(("Fn::GetAtt", arg)) => {
                let (res, attr) = getatt_parts(arg)?;
                self.lookup(template, &format!("{res}.{attr}"))
            }
            Some(("Fn::Sub", Value::String(text))) => self.substitute(template, text),
            _ => bail!("unsupported value {value:?} in the local stack"),
        }
    }

    fn substitute(&self, template: &Template, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            if let Some(literal) = after.strip_prefix('!') {
                // `${!Literal}` stands for the text `${Literal}`.
                out.push_str("${");
                rest = literal;
                continue;
            }
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in Sub {text:?}"))?;
            out.push_str(&self.lookup(template, &after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// provisioning
// ---------------------------------------------------------------------------------------------

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
    let source = template.sqs_event_source(PROCESS_FUNCTION)?;
    let mut resolver = Resolver {
        prefix: prefix.to_string(),
        ..Resolver::default()
    };

    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let mut tables = BTreeMap::new();
    for (id, resource) in template.resources_of_type("AWS::DynamoDB::Table") {
        let (name, arn) = create_table(&dynamodb, template, &resolver, id, resource)
            .await
            .with_context(|| format!("creating table {id}"))?;
        resolver.attributes.insert(
            id.to_string(),
            BTreeMap::from([("Ref".to_string(), name.clone()), ("Arn".to_string(), arn)]),
        );
        tables.insert(id.to_string(), name);
    }

    // Queues in two passes: create them all, then set the policies that refer to each other.
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue_resources = template.resources_of_type("AWS::SQS::Queue");
    let mut queues = BTreeMap::new();
    for (id, resource) in &queue_resources {
        let props = resource.get("Properties");
        let name = match props.and_then(|p| p.get("QueueName")) {
            Some(v) => resolver.string(template, v)?,
            None => format!("{prefix}-{id}"),
        };
        let mut attributes: Vec<(QueueAttributeName, String)> = Vec::new();
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
                attributes.push((
                    attr,
                    int_value(v)
                        .with_context(|| format!("{id}.{prop}"))?
                        .to_string(),
                ));
            }
        }
        if *id == source.queue_logical_id
            && let Some(vt) = overrides.visibility_timeout
        {
            attributes.retain(|(a, _)| *a != QueueAttributeName::VisibilityTimeout);
            attributes.push((QueueAttributeName::VisibilityTimeout, vt.to_string()));
        }
        if props.and_then(|p| p.get("FifoQueue")).is_some() {
            bail!("{id}: FIFO queues are not supported by the local stack yet");
        }
        let created = sqs
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(attributes.into_iter().collect()))
            .send()
            .await
            .with_context(|| format!("creating queue {id} ({name})"))?;
        let url = created
            .queue_url()
            .ok_or_else(|| anyhow!("CreateQueue {name} returned no URL"))?
            .to_string();
        let arn = queue_attribute(&sqs, &url, QueueAttributeName::QueueArn).await?;
        resolver.attributes.insert(
            id.to_string(),
            BTreeMap::from([
                ("Ref".to_string(), url.clone()),
                ("Arn".to_string(), arn.clone()),
                ("QueueName".to_string(), name.clone()),
                ("QueueUrl".to_string(), url.clone()),
            ]),
        );
        queues.insert(id.to_string(), LocalQueue { name, url, arn });
    }
    let mut meter_redrive: Option<(String, i32)> = None;
    for (id, resource) in &queue_resources {
        let Some(props) = resource.get("Properties") else {
            continue;
        };
        let queue = &queues[*id];
        let mut attributes = Vec::new();
        if let Some(policy) = props.get("RedrivePolicy") {
            let target = policy
                .get("deadLetterTargetArn")
                .ok_or_else(|| anyhow!("{id}.RedrivePolicy has no deadLetterTargetArn"))?;
            let target = resolver.string(template, target)?;
            let mut max = int_value(
                policy
                    .get("maxReceiveCount")
                    .ok_or_else(|| anyhow!("{id}.RedrivePolicy has no maxReceiveCount"))?,
            )?;
            if *id == source.queue_logical_id {
                if let Some(m) = overrides.max_receive_count {
                    max = m;
                }
                meter_redrive = Some((target.clone(), max));
            }
            let json = serde_json::json!({ "deadLetterTargetArn": target, "maxReceiveCount": max });
            attributes.push((QueueAttributeName::RedrivePolicy, json.to_string()));
        }
        if let Some(policy) = props.get("RedriveAllowPolicy") {
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
                    .map(|v| resolver.string(template, v))
                    .collect::<Result<Vec<_>>>()?;
                // moto neither stores nor enforces this policy: check here that it names
                // queues of the template (the template builds the ARN from a queue name).
                if let Some(stray) = arns.iter().find(|a| !queues.values().any(|q| &q.arn == *a)) {
                    bail!(
                        "{id}.RedriveAllowPolicy names {stray}, which is no queue of the template"
                    );
                }
                json["sourceQueueArnList"] = serde_json::json!(arns);
            }
            attributes.push((QueueAttributeName::RedriveAllowPolicy, json.to_string()));
        }
        if !attributes.is_empty() {
            sqs.set_queue_attributes()
                .queue_url(&queue.url)
                .set_attributes(Some(attributes.into_iter().collect()))
                .send()
                .await
                .with_context(|| format!("setting the redrive policies of {id}"))?;
        }
    }

    let table_name = template_env_ref(template, &resolver, "TABLE_NAME")?;
    let meter = queues
        .get(&source.queue_logical_id)
        .ok_or_else(|| {
            anyhow!(
                "{PROCESS_FUNCTION}'s SQS event reads {}, which is not an AWS::SQS::Queue",
                source.queue_logical_id
            )
        })?
        .clone();
    let (dlq_arn, max_receive_count) =
        meter_redrive.ok_or_else(|| anyhow!("{} has no RedrivePolicy", source.queue_logical_id))?;
    let dlq = queues
        .values()
        .find(|q| q.arn == dlq_arn)
        .ok_or_else(|| anyhow!("the dead-letter target {dlq_arn} is not a queue of the template"))?
        .clone();
    let visibility_timeout: i32 =
        queue_attribute(&sqs, &meter.url, QueueAttributeName::VisibilityTimeout)
            .await?
            .parse()
            .context("VisibilityTimeout")?;
    Ok(LocalResources {
        prefix: prefix.to_string(),
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

async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    template: &Template,
    resolver: &Resolver,
    id: &str,
    resource: &Value,
) -> Result<(String, String)> {
    let props = resource
        .get("Properties")
        .ok_or_else(|| anyhow!("{id} has no Properties"))?;
    for unsupported in [
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
        "StreamSpecification",
    ] {
        if props.get(unsupported).is_some() {
            bail!("{id}.{unsupported} is not supported by the local stack yet: add it to stack.rs");
        }
    }
    let name = match props.get("TableName") {
        Some(v) => resolver.string(template, v)?,
        None => format!("{}-{id}", resolver.prefix),
    };
    let mut request = dynamodb.create_table().table_name(&name);
    for def in props
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("{id} has no AttributeDefinitions"))?
    {
        let attr = def
            .get("AttributeName")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{id}: AttributeDefinition without AttributeName"))?;
        let kind = def
            .get("AttributeType")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{id}: AttributeDefinition without AttributeType"))?;
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::from(kind))
                .build()?,
        );
    }
    for key in props
        .get("KeySchema")
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("{id} has no KeySchema"))?
    {
        let attr = key
            .get("AttributeName")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{id}: KeySchema element without AttributeName"))?;
        let kind = key
            .get("KeyType")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{id}: KeySchema element without KeyType"))?;
        request = request.key_schema(
            KeySchemaElement::builder()
                .attribute_name(attr)
                .key_type(KeyType::from(kind))
                .build()?,
        );
    }
    let billing = props
        .get("BillingMode")
        .and_then(Value::as_str)
        .unwrap_or("PROVISIONED");
    request = request.billing_mode(BillingMode::from(billing));
    if billing == "PROVISIONED" {
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
        request = request.provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(units("ReadCapacityUnits")?)
                .write_capacity_units(units("WriteCapacityUnits")?)
                .build()?,
        );
    }
    let created = request
        .send()
        .await
        .with_context(|| format!("CreateTable {name}"))?;
    let arn = created
        .table_description()
        .and_then(|d| d.table_arn())
        .ok_or_else(|| anyhow!("CreateTable {name} returned no table ARN"))?
        .to_string();

    if let Some(ttl) = props.get("TimeToLiveSpecification") {
        let enabled = ttl
            .get("Enabled")
            .map(bool_value)
            .transpose()?
            .unwrap_or(false);
        if enabled {
            let attr = ttl
                .get("AttributeName")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{id}.TimeToLiveSpecification has no AttributeName"))?;
            dynamodb
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .with_context(|| format!("UpdateTimeToLive {name}"))?;
        }
    }
    Ok((name, arn))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};

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

    /// Least privilege: every function has its own role; every IAM statement names its
    /// actions (no `*` in an action) and its resources (no `*` resource, no wildcard ARN),
    /// and only the process function gets the Stripe key.
    #[test]
    fn iam_statements_name_their_actions_and_resources() {
        let text = std::fs::read_to_string(template_path()).unwrap();
        let root: Value = serde_yaml::from_str(&text).unwrap();
        let resources = root["Resources"].as_mapping().unwrap();
        let mut roles_used = Vec::new();
        let mut statements = 0;
        for (name, resource) in resources {
            let name = name.as_str().unwrap();
            match resource["Type"].as_str().unwrap() {
                "AWS::Serverless::Function" => {
                    let role = &resource["Properties"]["Role"];
                    let (kind, arg) = intrinsic(role)
                        .unwrap_or_else(|| panic!("{name} has no explicit Role (SAM would attach managed policies with * resources)"));
                    assert_eq!(kind, "Fn::GetAtt", "{name}");
                    let role = match arg {
                        Value::String(s) => s.split('.').next().unwrap().to_string(),
                        Value::Sequence(v) => v[0].as_str().unwrap().to_string(),
                        other => panic!("{name}: {other:?}"),
                    };
                    assert!(!roles_used.contains(&role), "{name} shares {role}");
                    roles_used.push(role);
                    assert!(
                        resource["Properties"].get("Policies").is_none(),
                        "{name}: SAM Policies add managed policies"
                    );
                }
                "AWS::IAM::Role" => {
                    assert!(
                        resource["Properties"].get("ManagedPolicyArns").is_none(),
                        "{name}: managed policies have * resources"
                    );
                    for policy in resource["Properties"]["Policies"].as_sequence().unwrap() {
                        for st in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
                            statements += 1;
                            let sid = st["Sid"].as_str().unwrap_or("?");
                            assert_eq!(st["Effect"].as_str(), Some("Allow"), "{name}/{sid}");
                            let actions: Vec<&Value> = match &st["Action"] {
                                Value::Sequence(v) => v.iter().collect(),
                                v => vec![v],
                            };
                            for a in actions {
                                let a = a.as_str().unwrap();
                                assert!(!a.contains('*'), "{name}/{sid}: wildcard action {a}");
                                assert!(a.contains(':'), "{name}/{sid}: {a}");
                            }
                            let resources: Vec<&Value> = match &st["Resource"] {
                                Value::Sequence(v) => v.iter().collect(),
                                v => vec![v],
                            };
                            for r in resources {
                                let text = match r {
                                    Value::String(s) => s.clone(),
                                    other => format!("{other:?}"),
                                };
                                assert!(
                                    !text.contains('*'),
                                    "{name}/{sid}: wildcard resource {text}"
                                );
                                assert!(!matches!(r, Value::Null), "{name}/{sid}: no resource");
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(roles_used.len(), 2, "both functions have their own role");
        assert!(statements >= 6, "{statements} statements read");
        let t = Template::load().unwrap();
        assert!(
            t.function_env(PROCESS_FUNCTION)
                .unwrap()
                .contains_key("STRIPE_SECRET_KEY")
        );
        assert!(
            !t.function_env(INGEST_FUNCTION)
                .unwrap()
                .contains_key("STRIPE_SECRET_KEY")
        );
    }

    #[test]
    fn template_event_source_is_read() {
        let t = Template::load().unwrap();
        let source = t.sqs_event_source(PROCESS_FUNCTION).unwrap();
        assert_eq!(source.queue_logical_id, "MeterQueue");
        assert_eq!(source.batch_size, 10);
        assert_eq!(source.maximum_batching_window_seconds, 1);
        assert!(source.report_batch_item_failures);
        assert_eq!(source.maximum_concurrency, Some(5));
        assert_eq!(t.function_timeout(PROCESS_FUNCTION).unwrap(), 30);
        let env = t.function_env(PROCESS_FUNCTION).unwrap();
        for name in [
            "LANGFUSE_BASE_URL",
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
            "LANGFUSE_API",
            "STRIPE_SECRET_KEY",
            "STRIPE_METER_EVENT_NAME",
            "TABLE_NAME",
            "QUEUE_URL",
            "SETTLE_SECONDS",
            "CREDIT_PRICE_USD",
            "MARGIN",
            "COMPUTE_USD_PER_MINUTE",
            "DEFAULT_BUDGET_LIMIT",
            "DEFAULT_BUDGET_PERIOD",
            "DEFAULT_BUDGET_MODE",
            "RUST_LOG",
        ] {
            assert!(env.contains_key(name), "template misses {name}");
        }
    }

    #[test]
    fn sub_and_refs_resolve() {
        let t = Template::parse(
            "Parameters:\n  P:\n    Type: String\n    Default: dflt\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n",
        )
        .unwrap();
        let r = Resolver {
            prefix: "pre".into(),
            attributes: BTreeMap::from([(
                "Q".to_string(),
                BTreeMap::from([("Arn".to_string(), "arn:q".to_string())]),
            )]),
        };
        let v: Value =
            serde_yaml::from_str("!Sub \"${AWS::StackName}-x-${P}-${Q.Arn}-${!Lit}\"").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "pre-x-dflt-arn:q-${Lit}");
        let v: Value = serde_yaml::from_str("!GetAtt Q.Arn").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "arn:q");
        let v: Value = serde_yaml::from_str("{\"Fn::GetAtt\": [Q, Arn]}").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "arn:q");
        let v: Value = serde_yaml::from_str("!Ref P").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "dflt");
        let v: Value = serde_yaml::from_str("!Ref Missing").unwrap();
        assert!(r.string(&t, &v).is_err());
    }

    #[tokio::test]
    async fn shared_moto_answers_on_loopback() {
        let moto = Moto::shared();
        assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
        assert!(http_answers(moto.port()));
        // The same instance every time.
        assert!(std::ptr::eq(moto, Moto::shared()));
        let sdk = sdk_config(moto.endpoint()).await;
        let (_, sqs) = sdk_clients(&sdk);
        sqs.list_queues().send().await.unwrap();
    }

    #[tokio::test]
    async fn owned_moto_resets_and_stops_on_drop() {
        let moto = Moto::start().unwrap();
        let port = moto.port();
        let pid = moto.pid().unwrap();
        let sdk = sdk_config(moto.endpoint()).await;
        let (_, sqs) = sdk_clients(&sdk);
        sqs.create_queue()
            .queue_name("before-reset")
            .send()
            .await
            .unwrap();
        moto.reset().await.unwrap();
        let listed = sqs.list_queues().send().await.unwrap();
        assert!(listed.queue_urls().is_empty(), "reset left {listed:?}");
        drop(moto);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!http_answers(port));
    }

    #[test]
    fn guard_exits_when_the_watched_process_is_gone() {
        let mut watched = Command::new("sleep").arg("60").spawn().unwrap();
        let mut guard = Command::new(venv_python())
            .arg(moto_guard())
            .arg("0")
            .arg(watched.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = Moto::wait_for_port(&mut guard).unwrap();
        assert!(http_answers(port));
        watched.kill().unwrap();
        watched.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = guard.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                stop_child(&mut guard);
                panic!("moto guard still running after its watched process ended");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "guard exited with {status}");
        assert!(!http_answers(port));
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
        let table = dynamodb
            .describe_table()
            .table_name(&res.table_name)
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
        for def in table.attribute_definitions() {
            assert_eq!(def.attribute_type(), &ScalarAttributeType::S);
        }
        assert_eq!(
            table
                .billing_mode_summary()
                .and_then(|b| b.billing_mode())
                .cloned(),
            Some(BillingMode::PayPerRequest)
        );
        let ttl = dynamodb
            .describe_time_to_live()
            .table_name(&res.table_name)
            .send()
            .await
            .unwrap();
        let ttl = ttl.time_to_live_description().unwrap();
        assert_eq!(ttl.attribute_name(), Some("expires_at"));
        assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));

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

        assert_eq!(res.batch_size, 10);
        assert_eq!(res.maximum_batching_window_seconds, 1);
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
    fn sample_events_parse_as_lambda_events() {
        use aws_lambda_events::event::eventbridge::EventBridgeEvent;
        use aws_lambda_events::event::sqs::SqsEvent;
        let read =
            |name: &str| std::fs::read_to_string(repo_root().join("events").join(name)).unwrap();
        let bodies = |name: &str| -> Vec<String> {
            let event: SqsEvent = serde_json::from_str(&read(name)).unwrap();
            event
                .records
                .iter()
                .map(|r| {
                    assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
                    assert!(r.receipt_handle.is_some() && r.message_id.is_some());
                    assert!(r.attributes.contains_key("ApproximateReceiveCount"));
                    r.body.clone().unwrap()
                })
                .collect()
        };
        assert_eq!(
            bodies("sqs-batch.json"),
            [r#"{"traceId":"trace-001"}"#, r#"{"traceId":"trace-002"}"#]
        );
        let dup = bodies("sqs-duplicate.json");
        assert_eq!(dup.len(), 2);
        assert_eq!(dup[0], dup[1]);
        for body in bodies("sqs-poison.json") {
            let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            assert!(parsed.is_none_or(|v| v.get("traceId").is_none()), "{body}");
        }
        let scheduled: EventBridgeEvent = serde_json::from_str(&read("scheduled.json")).unwrap();
        assert_eq!(scheduled.detail_type, "Scheduled Event");
        assert_eq!(scheduled.source, "aws.events");
    }

    #[test]
    fn local_env_file_covers_the_template_variables() {
        let text = std::fs::read_to_string(repo_root().join("env.local.json")).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let template = Template::load().unwrap();
        for function in [PROCESS_FUNCTION, INGEST_FUNCTION] {
            let vars = file[function]
                .as_object()
                .unwrap_or_else(|| panic!("env.local.json has no {function} section"));
            let env = template.function_env(function).unwrap();
            // `sam local invoke --env-vars` only overrides variables the template declares.
            for name in vars.keys() {
                assert!(
                    env.contains_key(name),
                    "{function}: {name} is not declared in template.yaml"
                );
            }
            for name in env.keys() {
                assert!(
                    vars.contains_key(name),
                    "env.local.json's {function} misses {name}"
                );
            }
            for (name, value) in vars {
                let value = value.as_str().unwrap();
                if value.starts_with("http") {
                    assert!(value.starts_with("http://127.0.0.1:"), "{name}={value}");
                }
            }
        }
        // Only the process function holds the Stripe key.
        let ingest = template.function_env(INGEST_FUNCTION).unwrap();
        assert!(
            !ingest.keys().any(|k| k.starts_with("STRIPE_")),
            "{ingest:?}"
        );
    }

    #[test]
    fn safe_env_points_only_at_the_endpoint() {
        let env: BTreeMap<_, _> = safe_aws_env("http://127.0.0.1:1234").into_iter().collect();
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:1234");
        assert_eq!(env["AWS_REGION"], REGION);
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
}
