//! A function binary (a release `bootstrap` or the debug build) run as Lambda runs it: under
//! the Runtime API emulator ([`crate::runtime_api`]) with a clean environment that holds only
//! the function's variables and loopback endpoints; its peak RSS and CPU time read from
//! `/proc/<pid>`.

use crate::runtime_api::RuntimeApi;
use crate::stack;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One function process under the Runtime API emulator.
pub struct Function {
    // The child is declared (so dropped, i.e. killed) before its Runtime API stops answering.
    child: tokio::process::Child,
    name: &'static str,
    api: RuntimeApi,
    /// CPU time spent in init (read before the first invocation).
    pub init_cpu: Option<Duration>,
    /// CPU time when the first invocation ended (it pays for lazily built TLS roots etc.).
    pub first_cpu: Option<Duration>,
    /// Messages handled after the first invocation.
    pub warm_records: u64,
    spawned: Instant,
    /// Invocations so far.
    pub invocations: u64,
    /// Messages handed to the invocations so far (every receive of a message counts).
    pub records: u64,
    /// Summed invocation wall time.
    pub busy: Duration,
    /// What the function wrote to stdout (its log lines and metric documents), line by line.
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// What it wrote to stderr (also passed on to this process's stderr).
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Function {
    /// Starts `binary` as function `name` with exactly `env` (plus the Lambda variables, and
    /// `RUST_LOG=warn` unless `env` sets it), polling a Runtime API emulator of its own.
    pub async fn spawn(
        name: &'static str,
        binary: &Path,
        env: &HashMap<String, String>,
        memory_mb: i32,
    ) -> Result<Function> {
        let api = RuntimeApi::start().await?;
        let spawned = Instant::now();
        let log_level = env.get("RUST_LOG").map_or("warn", String::as_str);
        let child = tokio::process::Command::new(binary)
            .env_clear()
            .envs(env.iter())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "local")
            .env("RUST_LOG", log_level)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut child = child;
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect_lines(out, stdout.clone(), false));
        }
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect_lines(err, stderr.clone(), true));
        }
        Ok(Function {
            stdout,
            stderr,
            child,
            name,
            api,
            init_cpu: None,
            first_cpu: None,
            warm_records: 0,
            records: 0,
            spawned,
            invocations: 0,
            busy: Duration::ZERO,
        })
    }

    /// Invokes the function with `event` (`records` messages) and a deadline `timeout` from
    /// now; its answer, or an error when it returned one.
    pub async fn invoke(
        &mut self,
        event: serde_json::Value,
        records: u64,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        if self.init_cpu.is_none() {
            // Take init's CPU time apart from the invocations'.
            self.wait_for_init().await;
            self.init_cpu = Some(self.usage()?.1);
        }
        let started = Instant::now();
        let reply = self.api.invoke(event, timeout).await?;
        self.busy += started.elapsed();
        self.invocations += 1;
        self.records += records;
        if self.first_cpu.is_none() {
            self.first_cpu = Some(self.usage()?.1);
        } else {
            self.warm_records += records;
        }
        reply.map_err(|e| anyhow::anyhow!("{} returned an error: {e}", self.name))
    }

    /// The lines the function wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The lines the function wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The CloudWatch EMF documents among the function's stdout lines.
    pub fn metric_documents(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }

    /// Waits (up to 10 s) until the function polls for its first invocation.
    pub async fn wait_for_init(&self) {
        let waited = Instant::now();
        while self.api.first_poll().is_none() && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// (peak RSS in KB, CPU time) of the process so far: `VmHWM` of `/proc/<pid>/status`,
    /// user + system time of `/proc/<pid>/stat`.
    pub fn usage(&self) -> Result<(u64, Duration)> {
        let pid = self.child.id().context("the function process exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((hwm, Duration::from_millis(ticks * 1000 / clock_ticks())))
    }

    /// From the spawn to the first `/invocation/next`: the cold start.
    pub fn init_time(&self) -> Option<Duration> {
        self.api.first_poll().map(|t| t - self.spawned)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (asked once).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Where `make build` puts a function's release bootstrap.
pub fn bootstrap(function: &str) -> PathBuf {
    stack::repo_root().join(format!("target/lambda/{function}/bootstrap"))
}

/// `events/scheduled.json`, the event the schedule sends ingest.
pub fn scheduled_event() -> Result<serde_json::Value> {
    let path = stack::repo_root().join("events/scheduled.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// Reads a child's output into `lines` until it closes (`echo`: also to our stderr).
async fn collect_lines(
    out: impl tokio::io::AsyncRead + Unpin,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    echo: bool,
) {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(out).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if echo {
            eprintln!("{line}");
        }
        lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}
