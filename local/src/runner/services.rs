//! Which outside services a local run talks to (the fakes, or real Langfuse / Stripe test
//! mode), and the functions' configuration passed through from the caller's environment.
//! Keys passed through (the real services') are stored in the stack's secrets in moto, like
//! the fakes' keys: the functions get only the secrets' ARNs.

use crate::harness::StackOptions;
use anyhow::{Result, bail};

/// Configuration variables passed through from the caller's environment to both functions
/// (pricing, customers, budgets): the same names the functions read.
const PASS_THROUGH: &[&str] = &[
    "LANGFUSE_API",
    "CREDIT_PRICE_USD",
    "MARGIN",
    "COMPUTE_USD_PER_MINUTE",
    "CUSTOMER_METADATA_KEYS",
    "DEFAULT_CUSTOMER_ID",
    "DEFAULT_BUDGET_LIMIT",
    "DEFAULT_BUDGET_PERIOD",
    "DEFAULT_BUDGET_MODE",
    "BUDGET_ALERT_THRESHOLDS",
    "BYO_KEY_METADATA_KEY",
    "BYO_KEY_METADATA_VALUE",
    "SETTLE_SECONDS",
    "RESCAN_SECONDS",
    "RESCAN_TIERS",
    "INGEST_START_LOOKBACK_SECONDS",
    "LANGFUSE_REQUESTS_PER_MINUTE",
];

/// Which outside services a run talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services {
    /// Real Langfuse (base URL) instead of the fake.
    pub real_langfuse: Option<String>,
    /// Real Stripe (test mode) instead of the fake.
    pub real_stripe: bool,
}

/// Reads which real services the caller asked for, refusing what would be unsafe: a Stripe
/// live key (a local run must never bill real customers) or half a configuration.
pub fn services_from(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Services> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let real_langfuse = match set("LANGFUSE_BASE_URL") {
        Some(url) => {
            for key in ["LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"] {
                if set(key).is_none() {
                    bail!("LANGFUSE_BASE_URL is set (real Langfuse) but {key} is not");
                }
            }
            Some(url)
        }
        None => None,
    };
    let real_stripe = match set("STRIPE_SECRET_KEY") {
        Some(key) => {
            if !(key.starts_with("sk_test_") || key.starts_with("rk_test_")) {
                bail!(
                    "STRIPE_SECRET_KEY is not a test-mode key (sk_test_… or rk_test_…): a local \
                     run never sends meter events to a live account"
                );
            }
            if set("STRIPE_METER_EVENT_NAME").is_none() {
                bail!("STRIPE_SECRET_KEY is set (real Stripe) but STRIPE_METER_EVENT_NAME is not");
            }
            true
        }
        None => false,
    };
    Ok(Services {
        real_langfuse,
        real_stripe,
    })
}

pub(super) fn options_for(
    services: &Services,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> StackOptions {
    // The meter queue as template.yaml makes it (180 s: 6 x the process function's 30 s),
    // so that `tracemeter doctor` passes the local deployment.
    let mut options = StackOptions {
        visibility_timeout: Some(180),
        ..StackOptions::default()
    }
    .var("RETRY_BASE_SECONDS", 1)
    .var("RETRY_MAX_SECONDS", 5)
    .var("LANGFUSE_SCORE_ENABLED", "true")
    // One Langfuse request budget for ingest and the processor: Hobby's for the real service.
    .var(
        "LANGFUSE_REQUESTS_PER_MINUTE",
        if services.real_langfuse.is_some() {
            "30"
        } else {
            "1000"
        },
    );
    let mut pass: Vec<&str> = PASS_THROUGH.to_vec();
    if services.real_langfuse.is_some() {
        pass.extend([
            "LANGFUSE_BASE_URL",
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
        ]);
        // Never write scores into a real project unless asked to.
        options = options.var(
            "LANGFUSE_SCORE_ENABLED",
            lookup("LANGFUSE_SCORE_ENABLED").unwrap_or_else(|| "false".into()),
        );
    }
    if services.real_stripe {
        pass.extend([
            "STRIPE_API_BASE",
            "STRIPE_SECRET_KEY",
            "STRIPE_METER_EVENT_NAME",
        ]);
    }
    for name in pass {
        if let Some(v) = lookup(name).filter(|v| !v.trim().is_empty()) {
            options = options.var(name, v);
        }
    }
    options
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn fakes_are_the_default() {
        let s = services_from(&lookup(&[])).unwrap();
        assert_eq!(s.real_langfuse, None);
        assert!(!s.real_stripe);
    }

    #[test]
    fn a_live_stripe_key_is_refused() {
        let err = services_from(&lookup(&[
            ("STRIPE_SECRET_KEY", "sk_live_abc"),
            ("STRIPE_METER_EVENT_NAME", "m"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("STRIPE_SECRET_KEY"), "{err}");
        assert!(!err.contains("sk_live_abc"), "the key is not echoed: {err}");
    }

    #[test]
    fn half_configurations_name_the_missing_variable() {
        let err = services_from(&lookup(&[(
            "LANGFUSE_BASE_URL",
            "https://cloud.langfuse.com",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("LANGFUSE_PUBLIC_KEY"), "{err}");
        let err = services_from(&lookup(&[("STRIPE_SECRET_KEY", "sk_test_x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_METER_EVENT_NAME"), "{err}");
        let s = services_from(&lookup(&[
            ("STRIPE_SECRET_KEY", "rk_test_x"),
            ("STRIPE_METER_EVENT_NAME", "llm_credits"),
            ("LANGFUSE_BASE_URL", "https://cloud.langfuse.com"),
            ("LANGFUSE_PUBLIC_KEY", "pk"),
            ("LANGFUSE_SECRET_KEY", "sk"),
        ]))
        .unwrap();
        assert!(s.real_stripe);
        assert_eq!(
            s.real_langfuse.as_deref(),
            Some("https://cloud.langfuse.com")
        );
    }

    #[test]
    fn only_named_variables_pass_through() {
        let vars = lookup(&[
            ("DEFAULT_CUSTOMER_ID", "cus_default"),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("HOME", "/root"),
        ]);
        let fakes = Services {
            real_langfuse: None,
            real_stripe: false,
        };
        let o = options_for(&fakes, &vars);
        assert!(
            o.env
                .contains(&("DEFAULT_CUSTOMER_ID".into(), "cus_default".into()))
        );
        assert!(
            !o.env
                .iter()
                .any(|(k, _)| k == "STRIPE_SECRET_KEY" || k == "HOME")
        );
    }
}
