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
    /// The observations that name a model or report tokens (the price book's token prices
    /// apply to them); empty when Langfuse reported none.
    pub tokens: Vec<ModelTokens>,
}

/// One observation's model and token usage, as Langfuse reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTokens {
    /// The model name as provided (`providedModelName`), empty when none was.
    pub model: String,
    /// Input tokens: the `usageDetails` keys starting with `input`.
    pub input: u64,
    /// Output tokens: the `usageDetails` keys starting with `output`.
    pub output: u64,
    /// The observation's cost in USD, when Langfuse reported one above zero.
    pub cost_usd: Option<Decimal>,
}

impl ModelTokens {
    /// From `usageDetails` (usage type -> units) and the observation's cost: input and output
    /// tokens are the sums of the keys starting with `input` and `output`.
    pub fn from_details(
        model: Option<&str>,
        details: &BTreeMap<String, i64>,
        cost_usd: Decimal,
    ) -> Option<ModelTokens> {
        let sum = |prefix: &str| -> u64 {
            details
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| u64::try_from(*v).unwrap_or(0))
                .fold(0u64, u64::saturating_add)
        };
        let model = model.unwrap_or("").trim().to_string();
        let (input, output) = (sum("input"), sum("output"));
        if model.is_empty() && input == 0 && output == 0 {
            return None;
        }
        Some(ModelTokens {
            model,
            input,
            output,
            cost_usd: (cost_usd > Decimal::ZERO).then_some(cost_usd),
        })
    }

    /// True when Langfuse reported tokens but no cost for them.
    pub fn unpriced_by_langfuse(&self) -> bool {
        self.cost_usd.is_none() && (self.input > 0 || self.output > 0)
    }
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
