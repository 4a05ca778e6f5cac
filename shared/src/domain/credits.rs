//! Credits from usage: decimal arithmetic, rounded up to whole credits.

use super::usage::TraceUsage;
use crate::error::{Error, FailureReason, Result};
use rust_decimal::Decimal;

/// Prices and margin.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    /// USD per credit (default 0.00004).
    pub credit_price_usd: Decimal,
    /// Multiplier on cost (default 1.0).
    pub margin: Decimal,
    /// Compute price in USD per minute of trace latency (default 0.05).
    pub compute_usd_per_minute: Decimal,
    /// A trace costing more than this is treated as invalid data, not billed (default 1000).
    pub max_trace_cost_usd: Decimal,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            credit_price_usd: Decimal::new(4, 5),
            margin: Decimal::ONE,
            compute_usd_per_minute: Decimal::new(5, 2),
            max_trace_cost_usd: Decimal::new(1000, 0),
        }
    }
}

/// When the customer brought their own model key, the AI cost is theirs, not ours.
#[derive(Debug, Clone, PartialEq)]
pub struct ByoKeyRule {
    /// Metadata key (default `aiCredentialsOwnership`).
    pub key: String,
    /// Value that means "the customer's own key" (default `user`).
    pub value: String,
}

impl Default for ByoKeyRule {
    fn default() -> Self {
        ByoKeyRule {
            key: "aiCredentialsOwnership".to_string(),
            value: "user".to_string(),
        }
    }
}

/// The price of one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    /// AI cost counted (0 for BYO-key traces).
    pub ai_usd: Decimal,
    /// Compute cost from latency.
    pub compute_usd: Decimal,
    /// Whole credits, rounded up.
    pub credits: u64,
    /// True when the BYO-key rule zeroed the AI cost.
    pub byo_key: bool,
    /// Models with tokens but no cost and no token price, billed compute only (see
    /// [`super::price_book`]); empty otherwise.
    pub unpriced: Vec<String>,
}

/// Prices a trace: `(AI + latency_s / 60 * compute_rate) * margin / credit_price`, rounded up,
/// the AI cost being Langfuse's.
pub fn quote(usage: &TraceUsage, pricing: &Pricing, byo: &ByoKeyRule) -> Result<Quote> {
    quote_ai(usage, usage.ai_cost_usd, pricing, byo)
}

/// [`quote`] with the AI cost given (Langfuse's, or the price book's token prices applied).
pub fn quote_ai(
    usage: &TraceUsage,
    ai_cost_usd: Decimal,
    pricing: &Pricing,
    byo: &ByoKeyRule,
) -> Result<Quote> {
    check_usage(usage)?;
    if ai_cost_usd < Decimal::ZERO {
        return Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!(
                "trace {}: negative cost {} USD",
                usage.trace_id, ai_cost_usd
            ),
        ));
    }
    let byo_key = is_byo_key(usage, byo);
    let ai_usd = if byo_key { Decimal::ZERO } else { ai_cost_usd };
    let compute_usd = usage
        .latency_seconds
        .checked_mul(pricing.compute_usd_per_minute)
        .and_then(|v| v.checked_div(Decimal::from(60)))
        .ok_or_else(|| absurd(usage))?;
    let total = ai_usd
        .checked_add(compute_usd)
        .ok_or_else(|| absurd(usage))?;
    if total > pricing.max_trace_cost_usd {
        return Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!(
                "trace {}: cost {} USD (AI {} + compute {}) is above MAX_TRACE_COST_USD={}",
                usage.trace_id, total, ai_usd, compute_usd, pricing.max_trace_cost_usd
            ),
        ));
    }
    let credits = total
        .checked_mul(pricing.margin)
        .and_then(|v| v.checked_div(pricing.credit_price_usd))
        .ok_or_else(|| absurd(usage))?
        .ceil();
    let credits = u64::try_from(credits).map_err(|_| absurd(usage))?;
    Ok(Quote {
        ai_usd,
        compute_usd,
        credits,
        byo_key,
        unpriced: Vec::new(),
    })
}

/// Refuses impossible usage whatever its price: a negative cost or latency.
pub fn check_usage(usage: &TraceUsage) -> Result<()> {
    if usage.ai_cost_usd < Decimal::ZERO {
        return Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!(
                "trace {}: negative cost {} USD",
                usage.trace_id, usage.ai_cost_usd
            ),
        ));
    }
    if usage.latency_seconds < Decimal::ZERO {
        return Err(Error::permanent(
            FailureReason::InvalidUsage,
            format!(
                "trace {}: negative latency {} s",
                usage.trace_id, usage.latency_seconds
            ),
        ));
    }
    Ok(())
}

/// True when the trace's metadata says the customer brought their own model key.
pub fn is_byo_key(usage: &TraceUsage, byo: &ByoKeyRule) -> bool {
    usage
        .metadata_str(&byo.key)
        .is_some_and(|v| v.eq_ignore_ascii_case(&byo.value))
}

fn absurd(usage: &TraceUsage) -> Error {
    Error::permanent(
        FailureReason::InvalidUsage,
        format!(
            "trace {}: cost {} USD / latency {} s overflow the credit arithmetic",
            usage.trace_id, usage.ai_cost_usd, usage.latency_seconds
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn usage(cost: &str, latency: &str) -> TraceUsage {
        TraceUsage {
            trace_id: "t1".into(),
            timestamp: Utc::now(),
            latency_seconds: Decimal::from_str(latency).expect("dec"),
            ai_cost_usd: Decimal::from_str(cost).expect("dec"),
            user_id: None,
            metadata: BTreeMap::new(),
            observation_count: 1,
            last_observation_at: None,
            tokens: Vec::new(),
        }
    }

    #[test]
    fn latency_is_seconds() {
        // 90 s at 0.05 USD/min = 0.075 USD = 1875 credits at 0.00004 USD.
        let q = quote(
            &usage("0", "90"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect("ok");
        assert_eq!(q.credits, 1875);
        assert_eq!(q.compute_usd, Decimal::from_str("0.075").expect("dec"));
    }

    #[test]
    fn rounds_up_to_whole_credits() {
        // 0.0003 USD / 0.00004 = 7.5 -> 8
        let q = quote(
            &usage("0.0003", "0"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect("ok");
        assert_eq!(q.credits, 8);
        // exactly 0.0004 USD is 10 credits, not 11 (no float error)
        let q = quote(
            &usage("0.0004", "0"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect("ok");
        assert_eq!(q.credits, 10);
    }

    #[test]
    fn byo_key_zeroes_ai_cost() {
        let mut u = usage("1.5", "60");
        u.metadata
            .insert("aiCredentialsOwnership".into(), serde_json::json!("user"));
        let q = quote(&u, &Pricing::default(), &ByoKeyRule::default()).expect("ok");
        assert!(q.byo_key);
        assert_eq!(q.ai_usd, Decimal::ZERO);
        assert_eq!(q.credits, 1250); // only 60 s of compute
    }

    #[test]
    fn margin_applies_to_both_parts() {
        let pricing = Pricing {
            margin: Decimal::from_str("1.5").expect("dec"),
            ..Pricing::default()
        };
        let q = quote(&usage("0.01", "60"), &pricing, &ByoKeyRule::default()).expect("ok");
        // (0.01 + 0.05) * 1.5 / 0.00004 = 2250
        assert_eq!(q.credits, 2250);
    }

    #[test]
    fn negative_and_absurd_usage_is_permanent() {
        let err = quote(
            &usage("-1", "0"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect_err("neg");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("t1"));
        let err = quote(
            &usage("5000", "0"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect_err("big");
        assert!(err.to_string().contains("MAX_TRACE_COST_USD"));
        let err = quote(
            &usage("0", "-3"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect_err("lat");
        assert!(err.to_string().contains("latency"));
    }

    #[test]
    fn a_trace_costing_exactly_the_maximum_is_priced() {
        // 1,000 USD is MAX_TRACE_COST_USD's default: allowed, 25,000,000 credits.
        let q = quote(
            &usage("1000", "0"),
            &Pricing::default(),
            &ByoKeyRule::default(),
        )
        .expect("at the maximum");
        assert_eq!(q.credits, 25_000_000);
    }
}
