//! Which Stripe customer pays for a trace.

use super::usage::TraceUsage;
use crate::error::{Error, FailureReason, Result};

/// Where the customer id came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerSource {
    /// A trace metadata key.
    Metadata(String),
    /// The user-to-customer mapping table.
    UserMapping,
    /// The configured default customer.
    Default,
}

/// The customer id named by the first metadata key that is set, with the key used.
pub fn from_metadata(usage: &TraceUsage, keys: &[String]) -> Option<(String, CustomerSource)> {
    keys.iter().find_map(|key| {
        usage
            .metadata_str(key)
            .filter(|id| valid_customer_id(id))
            .map(|id| (id, CustomerSource::Metadata(key.clone())))
    })
}

/// The longest customer id accepted, in bytes.
pub const MAX_CUSTOMER_ID_BYTES: usize = 255;

/// What a customer id must look like, for messages.
pub const CUSTOMER_ID_FORM: &str = "a Stripe customer id such as cus_NffrFeUfNV2Hib: not empty, at most 255 bytes, no spaces or control characters";

/// The one rule for a customer id, shared by the processor (metadata, mappings), the
/// configuration (`DEFAULT_CUSTOMER_ID`) and the operator's command: what is wrong with `id`,
/// if anything.
pub fn check_customer_id(id: &str) -> std::result::Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id.len() > MAX_CUSTOMER_ID_BYTES {
        return Err("it is longer than 255 bytes");
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters");
    }
    Ok(())
}

/// A customer id Stripe could accept ([`check_customer_id`]).
pub fn valid_customer_id(id: &str) -> bool {
    check_customer_id(id).is_ok()
}

/// The Langfuse user whose mapping must be looked up: only when no metadata key names a
/// customer (metadata wins over the mapping table).
pub fn user_to_look_up<'a>(usage: &'a TraceUsage, keys: &[String]) -> Option<&'a str> {
    match from_metadata(usage, keys) {
        Some(_) => None,
        None => usage.user_id.as_deref(),
    }
}

/// The customer who pays for a trace, in this order: the first metadata key that names a
/// valid customer id, then the user's mapping (`mapped`, the answer for
/// [`user_to_look_up`]), then the configured default; else a permanent `unmapped_customer`.
pub fn resolve(
    usage: &TraceUsage,
    keys: &[String],
    mapped: Option<&str>,
    default: Option<&str>,
) -> Result<String> {
    if let Some((id, _)) = from_metadata(usage, keys) {
        return Ok(id);
    }
    if let Some(id) = mapped.filter(|id| valid_customer_id(id)) {
        return Ok(id.to_string());
    }
    if let Some(id) = default {
        return Ok(id.to_string());
    }
    Err(Error::permanent(
        FailureReason::UnmappedCustomer,
        format!(
            "trace {}: no Stripe customer in metadata keys {:?}, no mapping for user {:?}, and DEFAULT_CUSTOMER_ID is not set",
            usage.trace_id, keys, usage.user_id
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(metadata: &[(&str, &str)], user: Option<&str>) -> TraceUsage {
        TraceUsage {
            trace_id: "t1".into(),
            timestamp: chrono::Utc::now(),
            latency_seconds: Default::default(),
            ai_cost_usd: Default::default(),
            user_id: user.map(str::to_string),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect(),
            observation_count: 1,
            last_observation_at: None,
            tokens: Vec::new(),
        }
    }

    fn keys() -> Vec<String> {
        vec!["stripeCustomerId".into(), "customerId".into()]
    }

    #[test]
    fn metadata_wins_and_needs_no_look_up() {
        let u = usage(&[("customerId", "cus_meta")], Some("u1"));
        assert_eq!(user_to_look_up(&u, &keys()), None);
        assert_eq!(
            resolve(&u, &keys(), Some("cus_map"), Some("cus_def")).ok(),
            Some("cus_meta".into())
        );
    }

    #[test]
    fn the_mapping_comes_before_the_default() {
        let u = usage(&[("customerId", "not valid")], Some("u1"));
        assert_eq!(user_to_look_up(&u, &keys()), Some("u1"));
        assert_eq!(
            resolve(&u, &keys(), Some("cus_map"), Some("cus_def")).ok(),
            Some("cus_map".into())
        );
        assert_eq!(
            resolve(&u, &keys(), Some("bad id"), Some("cus_def")).ok(),
            Some("cus_def".into())
        );
        assert_eq!(
            resolve(&u, &keys(), None, Some("cus_def")).ok(),
            Some("cus_def".into())
        );
    }

    #[test]
    fn no_customer_at_all_is_a_permanent_unmapped_customer() {
        let u = usage(&[], None);
        match resolve(&u, &keys(), None, None) {
            Err(Error::Permanent { reason, detail }) => {
                assert_eq!(reason, FailureReason::UnmappedCustomer);
                assert!(detail.contains("trace t1"), "{detail}");
            }
            other => panic!("expected unmapped_customer, got {other:?}"),
        }
    }
}
