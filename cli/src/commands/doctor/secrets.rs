//! The two secrets: readable, with the JSON keys the functions parse.

use super::report::Check;
use std::sync::Arc;
use tracemeter::adapters::credential::{Credential, Key};
use tracemeter::config::KeySource;
use tracemeter::ports::SecretSource;

/// Reads the key from `source` as the functions do; the check, and the key when it was read.
/// `json` is the secret's expected form, `variable` the secret's variable.
pub(super) async fn check<K: Key>(
    name: &'static str,
    source: &KeySource<K>,
    json: &str,
    secrets: Arc<dyn SecretSource>,
) -> (Check, Option<Credential<K>>) {
    match (source, Credential::load(source, secrets).await) {
        (KeySource::Plain { variables, .. }, Ok(key)) => {
            let check = Check::warn(
                name,
                format!("the key comes from the plain variables {variables}"),
                "plain key variables are for local development only: a deployment names its secret (LANGFUSE_SECRET_ARN / STRIPE_SECRET_ARN)",
            );
            (check, Some(key))
        }
        (KeySource::Stored { .. }, Ok(key)) => {
            let found = format!("{} is readable, with the JSON keys {json}", key.describe());
            (Check::ok(name, found), Some(key))
        }
        (KeySource::Stored { variable, id }, Err(e)) => {
            let fix = format!(
                "store JSON {json} in the secret {id} (docs/deploying.md, step 1), and let the caller read it (secretsmanager:GetSecretValue); {variable} names it"
            );
            (Check::fail(name, e.to_string(), fix), None)
        }
        (KeySource::Plain { variables, .. }, Err(e)) => {
            let fix = format!("set {variables}");
            (Check::fail(name, e.to_string(), fix), None)
        }
    }
}
