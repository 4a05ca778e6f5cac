//! The local AWS stack as a library: a moto server on 127.0.0.1 and the DynamoDB tables and SQS
//! queues that `template.yaml` defines, created in it exactly as the template says, and the
//! Langfuse and Stripe secrets the functions read (moto's Secrets Manager, [`LocalSecrets`]).
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

mod moto;
mod provision;
mod secrets;
mod template;

pub use moto::Moto;
pub use provision::{
    LocalQueue, LocalResources, ProvisionOverrides, provision, provision_template,
};
pub use secrets::LocalSecrets;
pub use template::{SqsEventSource, Template, intrinsic};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The region every local client uses.
pub const REGION: &str = "us-east-1";
/// moto's default account id: what `${AWS::AccountId}` resolves to locally.
pub const ACCOUNT_ID: &str = "123456789012";
/// Logical id of the function whose SQS event source the local runner plays.
pub const PROCESS_FUNCTION: &str = "ProcessFunction";
/// Logical id of the scheduled ingest function.
pub const INGEST_FUNCTION: &str = "IngestFunction";

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn safe_env_points_only_at_the_endpoint() {
        let env: BTreeMap<_, _> = safe_aws_env("http://127.0.0.1:1234").into_iter().collect();
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:1234");
        assert_eq!(env["AWS_REGION"], REGION);
    }
}
