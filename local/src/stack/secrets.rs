//! The functions' secrets in moto's Secrets Manager: what the template's
//! `LangfuseSecretArn` / `StripeSecretArn` parameters name in a deployment. The functions get
//! only their ARNs (`LANGFUSE_SECRET_ARN`, `STRIPE_SECRET_ARN`) and read the keys themselves.

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;

/// The two secrets of one local stack.
#[derive(Debug, Clone)]
pub struct LocalSecrets {
    client: Client,
    /// The Langfuse secret's ARN (`{"public_key": ..., "secret_key": ...}`).
    pub langfuse_arn: String,
    /// The Stripe secret's ARN (`{"secret_key": "sk_..."}`).
    pub stripe_arn: String,
}

impl LocalSecrets {
    /// Creates `<prefix>/langfuse` and `<prefix>/stripe` holding the given keys.
    pub async fn create(
        sdk: &SdkConfig,
        prefix: &str,
        langfuse: (&str, &str),
        stripe_key: &str,
    ) -> Result<LocalSecrets> {
        let client = Client::new(sdk);
        let langfuse_arn = create(
            &client,
            &format!("{prefix}/langfuse"),
            &langfuse_json(langfuse),
        )
        .await?;
        let stripe_arn = create(
            &client,
            &format!("{prefix}/stripe"),
            &stripe_json(stripe_key),
        )
        .await?;
        Ok(LocalSecrets {
            client,
            langfuse_arn,
            stripe_arn,
        })
    }

    /// Rotates the Stripe secret to `key` (a new current version, as a rotation does).
    pub async fn rotate_stripe(&self, key: &str) -> Result<()> {
        self.put(&self.stripe_arn, &stripe_json(key)).await
    }

    /// Rotates the Langfuse secret to a new key pair.
    pub async fn rotate_langfuse(&self, public_key: &str, secret_key: &str) -> Result<()> {
        self.put(&self.langfuse_arn, &langfuse_json((public_key, secret_key)))
            .await
    }

    /// Puts `value` as it is in the Stripe secret (a malformed secret, for tests).
    pub async fn put_stripe_raw(&self, value: &str) -> Result<()> {
        self.put(&self.stripe_arn, value).await
    }

    async fn put(&self, arn: &str, value: &str) -> Result<()> {
        self.client
            .put_secret_value()
            .secret_id(arn)
            .secret_string(value)
            .send()
            .await
            .with_context(|| format!("updating secret {arn}"))?;
        Ok(())
    }
}

fn langfuse_json((public_key, secret_key): (&str, &str)) -> String {
    serde_json::json!({"public_key": public_key, "secret_key": secret_key}).to_string()
}

fn stripe_json(key: &str) -> String {
    serde_json::json!({"secret_key": key}).to_string()
}

async fn create(client: &Client, name: &str, value: &str) -> Result<String> {
    let out = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .with_context(|| format!("creating secret {name}"))?;
    out.arn
        .with_context(|| format!("secret {name}: no ARN in the answer"))
}
