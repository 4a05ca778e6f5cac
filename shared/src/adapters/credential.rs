//! A service key held by an HTTP client: read from its secret at cold start, cached, and read
//! again when the service answers 401, so that a rotated key is picked up without a redeploy.
//!
//! [`Credential::send`] is the one place a key is put on a request. On a 401 it asks for a
//! newer key ([`Credential::refresh`]) and sends the same request once more (same body, same
//! `Idempotency-Key`: safe to repeat). A 401 that stays (or no newer key) is returned as it
//! is, so each caller keeps its own handling of a refusal, marked with [`Refused`]: what to
//! check, the secret by ARN (never the value), for the caller's error. Concurrent 401s re-read
//! the secret once: a refresh only reads when the key it saw is still the current one. A
//! re-read that finds the same key is not repeated for [`UNCHANGED_COOLDOWN`].

use super::http;
use crate::config::{KeySource, LangfuseKeys, Secret, StripeKey};
use crate::error::{Error, Result};
use crate::ports::SecretSource;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// After a re-read that found the key unchanged, 401s do not re-read it for this long.
pub const UNCHANGED_COOLDOWN: Duration = Duration::from_secs(30);

/// On a 401 response a newer key did not cure: what to check (the secret's ARN and variable,
/// or the plain variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// What to check, when `response` is a 401 [`Credential::send`] could not cure.
pub fn refused(response: &reqwest::Response) -> Option<&str> {
    response.extensions().get::<Refused>().map(|r| r.0.as_str())
}

/// A key type: parsed from its secret's value, and put on a request.
pub trait Key: Clone + PartialEq + Send + Sync + 'static {
    /// Parses the secret's value; the error says what was expected, never the value.
    fn parse(value: &Secret) -> std::result::Result<Self, String>;
    /// Adds the key to `request`.
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder;
}

impl Key for LangfuseKeys {
    fn parse(value: &Secret) -> std::result::Result<Self, String> {
        LangfuseKeys::from_secret(value)
    }
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.basic_auth(&self.public_key, Some(self.secret_key.expose()))
    }
}

impl Key for StripeKey {
    fn parse(value: &Secret) -> std::result::Result<Self, String> {
        StripeKey::from_secret(value)
    }
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(self.expose())
    }
}

/// A cached key and where it comes from. Cheap to clone (shared).
pub struct Credential<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Credential<K> {
    fn clone(&self) -> Self {
        Credential {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K> {
    origin: Origin,
    current: RwLock<Current<K>>,
    /// Held while a secret is read; when the last re-read found the key unchanged.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

enum Origin {
    Plain {
        variables: &'static str,
    },
    Stored {
        variable: &'static str,
        id: String,
        source: Arc<dyn SecretSource>,
    },
}

/// The key in use and its generation (1 at cold start, one more per newer key read).
#[derive(Clone)]
pub struct Current<K> {
    /// The key.
    pub key: K,
    /// Its generation.
    pub generation: u64,
}

impl<K> std::fmt::Debug for Credential<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Credential").field(&self.describe()).finish()
    }
}

impl<K: Key> Credential<K> {
    /// The key from `source`: a stored one is read now (cold start) from `secrets`, and read
    /// again from there after a 401.
    pub async fn load(
        source: &KeySource<K>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Credential<K>> {
        match source {
            KeySource::Plain { variables, key } => Ok(Credential::fixed(key.clone(), variables)),
            KeySource::Stored { variable, id } => {
                // Not reaching the secret (network, throttling, permission, no such secret)
                // is an outage of Secrets Manager, named with the secret; a value that is not
                // a key is the configuration's fault.
                let value = secrets.secret_string(id).await.map_err(|e| match e {
                    Error::Transient {
                        service,
                        detail,
                        retry_after,
                    } => Error::Transient {
                        service,
                        detail: format!("{variable}: {detail}"),
                        retry_after,
                    },
                    other => Error::Config(format!("{variable}: cannot read secret {id}: {other}")),
                })?;
                let key = K::parse(&value).map_err(|why| {
                    Error::Config(format!("{variable}: secret {id} is not valid: {why}"))
                })?;
                Ok(Credential::new(
                    key,
                    Origin::Stored {
                        variable,
                        id: id.clone(),
                        source: secrets,
                    },
                ))
            }
        }
    }

    /// A key that is never re-read (plain variables, tests); `variables` names where it came
    /// from.
    pub fn fixed(key: K, variables: &'static str) -> Credential<K> {
        Credential::new(key, Origin::Plain { variables })
    }

    fn new(key: K, origin: Origin) -> Credential<K> {
        Credential {
            inner: Arc::new(Inner {
                origin,
                current: RwLock::new(Current { key, generation: 1 }),
                refreshing: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The key in use.
    pub fn current(&self) -> Current<K> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A key newer than generation `seen`: the one another caller already read, or the
    /// secret read again. `None` when there is none (plain variables, the secret unchanged).
    pub async fn refresh(&self, seen: u64) -> Result<Option<Current<K>>> {
        let Origin::Stored {
            variable,
            id,
            source,
            ..
        } = &self.inner.origin
        else {
            return Ok(None);
        };
        let mut unchanged_at = self.inner.refreshing.lock().await;
        let now = self.current();
        if now.generation != seen {
            return Ok(Some(now));
        }
        if unchanged_at.is_some_and(|at| at.elapsed() < UNCHANGED_COOLDOWN) {
            return Ok(None);
        }
        let value = source.secret_string(id).await?;
        let key = K::parse(&value).map_err(|why| {
            Error::transient(
                "secretsmanager",
                format!("{variable}: secret {id} is not valid: {why}"),
            )
        })?;
        if key == now.key {
            *unchanged_at = Some(Instant::now());
            tracing::warn!(secret = %id, "key refused, and its secret still holds the same key");
            return Ok(None);
        }
        *unchanged_at = None;
        let renewed = Current {
            key,
            generation: seen + 1,
        };
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = renewed.clone();
        tracing::info!(secret = %id, generation = renewed.generation, "key refused: read a newer key from its secret");
        Ok(Some(renewed))
    }

    /// Sends `request` with the key; on a 401, once more with a newer key if there is one.
    /// A 401 that stays comes back marked [`Refused`].
    pub async fn send(
        &self,
        service: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let again = request.try_clone();
        let used = self.current();
        let response = send(service, used.key.authorize(request)).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let renewed = match again {
            Some(_) => self.refresh(used.generation).await?,
            None => None,
        };
        let (Some(renewed), Some(again)) = (renewed, again) else {
            return Ok(self.refused(response));
        };
        let response = send(service, renewed.key.authorize(again)).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Ok(self.refused(response));
        }
        Ok(response)
    }

    /// Marks a 401 that a newer key did not cure with what to check, and says so in the log.
    fn refused(&self, mut response: reqwest::Response) -> reqwest::Response {
        let check = self.describe();
        tracing::warn!(path = response.url().path(), check = %check, "key refused (401)");
        response.extensions_mut().insert(Refused(check));
        response
    }
}

impl<K> Credential<K> {
    /// Where the key comes from, for errors: the secret's id and variable, or the variables.
    pub fn describe(&self) -> String {
        match &self.inner.origin {
            Origin::Plain { variables } => variables.to_string(),
            Origin::Stored { variable, id, .. } => format!("the secret {id} ({variable})"),
        }
    }
}

async fn send(
    service: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response> {
    request
        .send()
        .await
        .map_err(|e| http::transport(service, e))
}

#[cfg(test)]
#[path = "credential_tests.rs"]
mod tests;
