//! Which Stripe customer pays for a trace.

use super::usage::TraceUsage;

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

/// A customer id Stripe could accept: non-empty, at most 255 characters, no whitespace.
pub fn valid_customer_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}
