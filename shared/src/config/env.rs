//! Reading variables by name, and the checks every function's configuration shares.
//!
//! Every error names its variable (and never echoes a secret).

use crate::error::{Error, Result};
use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A secret value: shown as `***` in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads configuration values by name.
pub(super) struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    /// Values come from `lookup` (the process environment, or a map in tests).
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { lookup }
    }

    /// The trimmed value; `None` when unset or blank.
    pub(super) fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value, or an error naming the variable.
    pub(super) fn required(&self, name: &str) -> Result<String> {
        self.optional(name).ok_or_else(|| {
            Error::Config(format!(
                "{name} is not set; it is required (see docs/configuration.md)"
            ))
        })
    }

    /// The parsed value (`default` when unset); `what` says what was expected.
    pub(super) fn parsed<T: FromStr>(&self, name: &str, default: T, what: &str) -> Result<T> {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse::<T>().map_err(|_| {
                Error::Config(format!("{name}={raw:?} is not valid: expected {what}"))
            }),
        }
    }

    /// A checked URL without its trailing `/` (see [`validate_url`]).
    pub(super) fn url(&self, name: &str, default: Option<&str>) -> Result<String> {
        let raw = match (self.optional(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => self.required(name)?,
        };
        validate_url(name, &raw)?;
        Ok(raw.trim_end_matches('/').to_string())
    }

    /// Whole seconds from 0 to `max`.
    pub(super) fn seconds(&self, name: &str, default: i64, max: i64) -> Result<chrono::Duration> {
        let v: i64 = self.parsed(name, default, "whole seconds")?;
        if !(0..=max).contains(&v) {
            return Err(Error::Config(format!(
                "{name}={v} is not valid: expected 0 to {max} seconds"
            )));
        }
        Ok(chrono::Duration::seconds(v))
    }

    /// A whole number from 1 to `max`.
    pub(super) fn count(&self, name: &str, default: u32, max: u32) -> Result<u32> {
        let v: u32 = self.parsed(name, default, "a whole number")?;
        if !(1..=max).contains(&v) {
            return Err(Error::Config(format!(
                "{name}={v} is not valid: expected 1 to {max}"
            )));
        }
        Ok(v)
    }

    /// A client timeout in milliseconds (default 10 s): at least 100 ms (a request needs the
    /// time to happen) and at most 900,000 (a Lambda never runs longer).
    pub(super) fn timeout_ms(&self, name: &str) -> Result<Duration> {
        let ms: u64 = self.parsed(name, 10_000u64, "milliseconds as a whole number")?;
        if !(100..=900_000).contains(&ms) {
            return Err(Error::Config(format!(
                "{name}={ms} is not valid: expected 100 to 900000 milliseconds"
            )));
        }
        Ok(Duration::from_millis(ms))
    }

    /// A decimal number greater than 0.
    pub(super) fn positive_decimal(&self, name: &str, default: &str) -> Result<Decimal> {
        let (raw, value) = self.decimal(name, default)?;
        if value <= Decimal::ZERO {
            return Err(Error::Config(format!(
                "{name}={raw:?} is not valid: it must be greater than 0"
            )));
        }
        Ok(value)
    }

    /// A decimal number of 0 or more.
    pub(super) fn non_negative_decimal(&self, name: &str, default: &str) -> Result<Decimal> {
        let (raw, value) = self.decimal(name, default)?;
        if value < Decimal::ZERO {
            return Err(Error::Config(format!(
                "{name}={raw:?} is not valid: it must not be negative"
            )));
        }
        Ok(value)
    }

    /// The raw text and its decimal value.
    fn decimal(&self, name: &str, default: &str) -> Result<(String, Decimal)> {
        let raw = self.optional(name).unwrap_or_else(|| default.to_string());
        let value = Decimal::from_str(&raw).map_err(|_| {
            Error::Config(format!(
                "{name}={raw:?} is not valid: expected a decimal number"
            ))
        })?;
        Ok((raw, value))
    }
}

/// Checks that `raw` is an absolute http(s) URL, and HTTPS unless it points at loopback.
pub fn validate_url(name: &str, raw: &str) -> Result<()> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| Error::Config(format!("{name}={raw:?} is not a valid URL: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = is_loopback_host(host);
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(Error::Config(format!(
            "{name}={raw:?} uses plain http to a non-loopback host; use https"
        ))),
        other => Err(Error::Config(format!(
            "{name}={raw:?} has scheme {other:?}; expected https"
        ))),
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}
