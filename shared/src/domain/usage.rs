//! A trace's usage as read from Langfuse, whichever API generation served it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;

/// One trace's billable usage.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceUsage {
    /// The Langfuse trace id.
    pub trace_id: String,
    /// When the usage happened (trace timestamp, or its first observation's start).
    pub timestamp: DateTime<Utc>,
    /// Wall time of the trace in seconds (Langfuse `latency` is in seconds).
    pub latency_seconds: Decimal,
    /// Model cost in USD: the sum of the observations' costs.
    pub ai_cost_usd: Decimal,
    /// The Langfuse user id, used by the customer mapping table.
    pub user_id: Option<String>,
    /// Trace metadata (customer keys, BYO-key marker).
    pub metadata: BTreeMap<String, Value>,
    /// Number of observations seen.
    pub observation_count: u32,
    /// Start time of the newest observation, to notice late observations.
    pub last_observation_at: Option<DateTime<Utc>>,
}

impl TraceUsage {
    /// A metadata value as a string, when it is a non-empty string or a number.
    pub fn metadata_str(&self, key: &str) -> Option<String> {
        match self.metadata.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Converts a JSON floating point amount (as Langfuse sends it) to an exact decimal.
///
/// The shortest representation that round-trips is used, so `0.0003` stays `0.0003` and is
/// not turned into `0.000299999...`.
pub fn decimal_from_f64(value: f64) -> Option<Decimal> {
    if !value.is_finite() {
        return None;
    }
    let text = format!("{value}");
    text.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(&format!("{value:e}")).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn floats_become_the_decimals_that_were_sent() {
        assert_eq!(decimal_from_f64(0.0003), Decimal::from_str("0.0003").ok());
        assert_eq!(
            decimal_from_f64(0.1 + 0.2),
            Decimal::from_str("0.30000000000000004").ok()
        );
        assert_eq!(
            decimal_from_f64(1e-10),
            Decimal::from_str("0.0000000001").ok()
        );
        assert_eq!(decimal_from_f64(f64::NAN), None);
    }
}
