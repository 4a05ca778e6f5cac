//! AWS Secrets Manager behind [`SecretSource`]: `GetSecretValue` of a secret's current
//! version (`AWSCURRENT`). The function roles may call it on their own secrets only.

use crate::config::Secret;
use crate::error::{Error, Result};
use crate::ports::SecretSource;
use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use std::sync::Arc;

const SERVICE: &str = "secretsmanager";

/// Reads secrets from Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerSource {
    /// Over an SDK client.
    pub fn new(client: aws_sdk_secretsmanager::Client) -> SecretsManagerSource {
        SecretsManagerSource { client }
    }

    /// A shared source built from an SDK configuration (the callers need no Secrets Manager
    /// crate of their own).
    pub fn shared(aws: &aws_config::SdkConfig) -> Arc<dyn SecretSource> {
        Arc::new(SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(aws),
        ))
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn secret_string(&self, id: &str) -> Result<Secret> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                // The service's own code and message when it answered (no such secret, access
                // denied, throttling); the whole chain when it could not be reached.
                let why = match (e.code(), e.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    _ => DisplayErrorContext(&e).to_string(),
                };
                Error::transient(SERVICE, format!("reading secret {id}: {why}"))
            })?;
        out.secret_string.map(Secret::new).ok_or_else(|| {
            Error::transient(
                SERVICE,
                format!("secret {id} has no string value (a binary secret?); expected JSON"),
            )
        })
    }
}
