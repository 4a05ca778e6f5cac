//! Secrets: the current value of a stored secret (AWS Secrets Manager in production, moto's
//! locally). Read at cold start and again when a service refuses the key it held.

use crate::config::Secret;
use crate::error::Result;
use async_trait::async_trait;

/// Reads secrets by id.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's current string value; `id` is its ARN or name. Errors name the id, never
    /// the value.
    async fn secret_string(&self, id: &str) -> Result<Secret>;
}
