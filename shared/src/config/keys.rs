//! The Langfuse and Stripe keys, and where they come from: a Secrets Manager secret named by
//! `LANGFUSE_SECRET_ARN` / `STRIPE_SECRET_ARN` (how the deployed functions get them), or the
//! plain-key variables (local development without Secrets Manager only). Both set is an
//! error naming both; values are [`Secret`]s and never shown.

use super::env::{Env, Secret};
use crate::error::{Error, Result};

/// Where a service's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource<K> {
    /// A Secrets Manager secret, read at cold start and again after a 401.
    Stored {
        /// The variable that named it (for errors).
        variable: &'static str,
        /// The secret's ARN or name.
        id: String,
    },
    /// Plain variables (development only): used as they are, never re-read.
    Plain {
        /// The variables that held the key (for errors).
        variables: &'static str,
        /// The key.
        key: K,
    },
}

/// Langfuse's key pair (HTTP Basic: the public key is the user). As a secret: JSON
/// `{"public_key": "pk-lf-...", "secret_key": "sk-lf-..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LangfuseKeys {
    /// The public key.
    pub public_key: String,
    /// The secret key.
    pub secret_key: Secret,
}

/// A Stripe secret or restricted key (`sk_...` / `rk_...`). As a secret: JSON
/// `{"secret_key": "sk_..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeKey(Secret);

#[derive(serde::Deserialize)]
struct LangfuseSecretJson {
    public_key: String,
    secret_key: String,
}

#[derive(serde::Deserialize)]
struct StripeSecretJson {
    secret_key: String,
}

impl LangfuseKeys {
    /// Parses the secret's JSON; the error says what is missing, never the value.
    pub fn from_secret(value: &Secret) -> std::result::Result<LangfuseKeys, String> {
        let json: LangfuseSecretJson = serde_json::from_str(value.expose()).map_err(|_| {
            "expected JSON {\"public_key\": \"pk-lf-...\", \"secret_key\": \"sk-lf-...\"}"
                .to_string()
        })?;
        if json.public_key.trim().is_empty() || json.secret_key.trim().is_empty() {
            return Err("public_key and secret_key must not be empty".to_string());
        }
        Ok(LangfuseKeys {
            public_key: json.public_key.trim().to_string(),
            secret_key: Secret::new(json.secret_key.trim()),
        })
    }
}

impl StripeKey {
    /// Checks the key's form (`sk_` or `rk_`); the error never shows it.
    pub fn new(raw: &str) -> std::result::Result<StripeKey, String> {
        let raw = raw.trim();
        if !(raw.starts_with("sk_") || raw.starts_with("rk_")) {
            return Err(
                "expected a Stripe secret or restricted key (sk_... or rk_...)".to_string(),
            );
        }
        Ok(StripeKey(Secret::new(raw)))
    }

    /// Parses the secret's JSON `{"secret_key": "sk_..."}`.
    pub fn from_secret(value: &Secret) -> std::result::Result<StripeKey, String> {
        let json: StripeSecretJson = serde_json::from_str(value.expose())
            .map_err(|_| "expected JSON {\"secret_key\": \"sk_...\"}".to_string())?;
        StripeKey::new(&json.secret_key)
    }

    /// The key, for the one header that sends it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// `LANGFUSE_SECRET_ARN`, or the plain `LANGFUSE_PUBLIC_KEY` / `LANGFUSE_SECRET_KEY`.
pub(super) fn langfuse(env: &Env<'_>) -> Result<KeySource<LangfuseKeys>> {
    const PLAIN: &str = "LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY";
    let plain = ["LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"];
    match stored(env, "LANGFUSE_SECRET_ARN", &plain)? {
        Some(source) => Ok(source),
        None => Ok(KeySource::Plain {
            variables: PLAIN,
            key: LangfuseKeys {
                public_key: plain_required(env, "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_ARN")?,
                secret_key: Secret::new(plain_required(
                    env,
                    "LANGFUSE_SECRET_KEY",
                    "LANGFUSE_SECRET_ARN",
                )?),
            },
        }),
    }
}

/// `STRIPE_SECRET_ARN`, or the plain `STRIPE_SECRET_KEY`.
pub(super) fn stripe(env: &Env<'_>) -> Result<KeySource<StripeKey>> {
    match stored(env, "STRIPE_SECRET_ARN", &["STRIPE_SECRET_KEY"])? {
        Some(source) => Ok(source),
        None => {
            let raw = plain_required(env, "STRIPE_SECRET_KEY", "STRIPE_SECRET_ARN")?;
            let key = StripeKey::new(&raw)
                .map_err(|why| Error::Config(format!("STRIPE_SECRET_KEY is not valid: {why}")))?;
            Ok(KeySource::Plain {
                variables: "STRIPE_SECRET_KEY",
                key,
            })
        }
    }
}

/// The secret named by `variable`, checked; an error when a plain-key variable is set too.
fn stored<K>(
    env: &Env<'_>,
    variable: &'static str,
    plain: &[&str],
) -> Result<Option<KeySource<K>>> {
    let Some(id) = env.optional(variable) else {
        return Ok(None);
    };
    if let Some(also) = plain.iter().find(|name| env.optional(name).is_some()) {
        return Err(Error::Config(format!(
            "{variable} and {also} are both set: use one ({variable} in deployments; the plain key variables are for local development only)"
        )));
    }
    let arn_like = id.starts_with("arn:");
    let parts: Vec<&str> = id.splitn(7, ':').collect();
    if arn_like && (parts.len() < 7 || parts[2] != "secretsmanager" || parts[5] != "secret") {
        return Err(Error::Config(format!(
            "{variable}={id:?} is not valid: expected a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>) or a secret name"
        )));
    }
    Ok(Some(KeySource::Stored { variable, id }))
}

/// A plain key variable, or an error naming it and the secret variable to use instead.
fn plain_required(env: &Env<'_>, name: &str, secret_variable: &str) -> Result<String> {
    env.optional(name).ok_or_else(|| {
        Error::Config(format!(
            "{name} is not set: set {secret_variable} (a Secrets Manager secret), or for local development the plain key variables (see docs/configuration.md)"
        ))
    })
}
