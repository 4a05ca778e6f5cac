//! The environment contract of both functions: every missing or malformed variable is named,
//! and no secret is ever shown.

use super::*;
use crate::domain::quota::RequestLimit;
use crate::error::Result;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

fn base() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("LANGFUSE_BASE_URL", "http://127.0.0.1:3000"),
        ("LANGFUSE_PUBLIC_KEY", "pk-lf-test"),
        ("LANGFUSE_SECRET_KEY", "sk-lf-secret"),
        ("STRIPE_SECRET_KEY", "sk_test_secret"),
        ("STRIPE_METER_EVENT_NAME", "llm_credits"),
        ("TABLE_NAME", "ledger"),
        ("QUEUE_URL", "http://127.0.0.1:5000/123456789012/meter"),
    ])
}

fn load(vars: &HashMap<&'static str, &'static str>) -> Result<ProcessConfig> {
    ProcessConfig::from_lookup(&|k| vars.get(k).map(|v| v.to_string()))
}

#[test]
fn defaults_follow_the_seed_system() {
    let cfg = load(&base()).expect("valid");
    assert_eq!(
        cfg.pricing.credit_price_usd,
        Decimal::from_str("0.00004").expect("dec")
    );
    assert_eq!(
        cfg.pricing.compute_usd_per_minute,
        Decimal::from_str("0.05").expect("dec")
    );
    assert_eq!(cfg.stripe.api_base, "https://api.stripe.com");
    assert_eq!(cfg.stripe.api_mode, StripeApiMode::V2Stream);
    assert_eq!(
        cfg.stripe.meter_events_base,
        "https://meter-events.stripe.com"
    );
    assert_eq!(cfg.langfuse.api, LangfuseApi::V2);
    assert_eq!(cfg.default_budget.thresholds, vec![50, 80, 100]);
    assert_eq!(cfg.default_budget.limit, None);
    assert_eq!(
        cfg.customers.metadata_keys,
        vec!["stripeCustomerId", "customerId"]
    );
}

#[test]
fn each_missing_variable_is_named() {
    for name in [
        "LANGFUSE_BASE_URL",
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_METER_EVENT_NAME",
        "TABLE_NAME",
        "QUEUE_URL",
    ] {
        let mut vars = base();
        vars.remove(name);
        let err = load(&vars).expect_err(name).to_string();
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn malformed_values_are_named() {
    for (name, value) in [
        ("LANGFUSE_API", "v3"),
        ("CREDIT_PRICE_USD", "abc"),
        ("CREDIT_PRICE_USD", "0"),
        ("MARGIN", "-1"),
        ("DEFAULT_BUDGET_PERIOD", "year"),
        ("DEFAULT_BUDGET_MODE", "medium"),
        ("DEFAULT_BUDGET_LIMIT", "ten"),
        ("BUDGET_ALERT_THRESHOLDS", "50,eighty"),
        ("PROCESS_CONCURRENCY", "0"),
        ("LANGFUSE_BASE_URL", "http://langfuse.example.com"),
        ("STRIPE_API_BASE", "ftp://127.0.0.1"),
        ("STRIPE_SECRET_KEY", "pk_test_123"),
        ("RETRY_MAX_SECONDS", "50000"),
        ("STRIPE_API_MODE", "v2"),
        ("STRIPE_API_MODE", "stream"),
        (
            "STRIPE_METER_EVENTS_BASE",
            "http://meter-events.example.com",
        ),
        ("STRIPE_METER_EVENTS_BASE", "not a url"),
    ] {
        let mut vars = base();
        vars.insert(name, value);
        let err = load(&vars).expect_err(name).to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn the_v2_stream_is_chosen_by_configuration() {
    let mut vars = base();
    vars.insert("STRIPE_API_MODE", "v2_stream");
    vars.insert("STRIPE_METER_EVENTS_BASE", "http://127.0.0.1:4242/");
    let cfg = load(&vars).expect("valid");
    assert_eq!(cfg.stripe.api_mode, StripeApiMode::V2Stream);
    assert_eq!(cfg.stripe.meter_events_base, "http://127.0.0.1:4242");
    vars.insert("STRIPE_API_MODE", "v1");
    assert_eq!(
        load(&vars).expect("valid").stripe.api_mode,
        StripeApiMode::V1
    );
}

#[test]
fn every_outside_url_is_https_unless_loopback() {
    for name in ["LANGFUSE_BASE_URL", "STRIPE_API_BASE", "QUEUE_URL"] {
        for bad in [
            "http://example.com",
            "http://10.0.0.1:8080",
            "file:///etc/passwd",
            "not a url",
        ] {
            let mut vars = base();
            vars.insert(name, bad);
            let err = load(&vars).expect_err(bad).to_string();
            assert!(err.contains(name), "{name}={bad}: {err}");
            assert!(!err.contains("sk-lf-secret") && !err.contains("sk_test_secret"));
        }
        let mut vars = base();
        vars.insert(name, "https://example.com");
        load(&vars).expect("https is accepted");
    }
}

#[test]
fn contradictory_retry_window_is_named() {
    let mut vars = base();
    vars.insert("RETRY_BASE_SECONDS", "600");
    vars.insert("RETRY_MAX_SECONDS", "60");
    let err = load(&vars).expect_err("base > max").to_string();
    assert!(
        err.contains("RETRY_BASE_SECONDS") && err.contains("RETRY_MAX_SECONDS"),
        "{err}"
    );
}

#[test]
fn every_contradiction_and_bad_value_names_its_variables() {
    // (variables set, the names the error must mention)
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (&[("LANGFUSE_TIMEOUT_MS", "0")], &["LANGFUSE_TIMEOUT_MS"]),
        (&[("STRIPE_TIMEOUT_MS", "3600000")], &["STRIPE_TIMEOUT_MS"]),
        (
            &[
                ("STRIPE_DEDUP_WINDOW_SECONDS", "600"),
                ("RETRY_MAX_SECONDS", "900"),
            ],
            &["RETRY_MAX_SECONDS", "STRIPE_DEDUP_WINDOW_SECONDS"],
        ),
        (&[("LEASE_MARGIN_SECONDS", "-1")], &["LEASE_MARGIN_SECONDS"]),
        (
            &[
                ("STRIPE_DEDUP_WINDOW_SECONDS", "3600"),
                ("RETRY_MAX_SECONDS", "60"),
                ("LEASE_MARGIN_SECONDS", "3600"),
            ],
            &["LEASE_MARGIN_SECONDS", "STRIPE_DEDUP_WINDOW_SECONDS"],
        ),
        (&[("MARGIN", "0")], &["MARGIN"]),
        (&[("CREDIT_PRICE_USD", "abc")], &["CREDIT_PRICE_USD"]),
        (&[("STRIPE_API_MODE", "v3")], &["STRIPE_API_MODE"]),
        (
            &[("DEFAULT_BUDGET_MODE", "strict")],
            &["DEFAULT_BUDGET_MODE"],
        ),
        (
            &[("BUDGET_ALERT_THRESHOLDS", "50,0")],
            &["BUDGET_ALERT_THRESHOLDS"],
        ),
        (&[("PROCESS_CONCURRENCY", "0")], &["PROCESS_CONCURRENCY"]),
        (
            &[("STRIPE_SECRET_KEY", "pk_test_public")],
            &["STRIPE_SECRET_KEY"],
        ),
    ];
    for (set, named) in cases {
        let mut vars = base();
        for (k, v) in *set {
            vars.insert(k, v);
        }
        let err = load(&vars).expect_err("refused").to_string();
        for name in *named {
            assert!(err.contains(name), "{set:?}: {err}");
        }
        assert!(!err.contains("sk_test_secret"), "no secret echoed: {err}");
    }
    for missing in [
        "LANGFUSE_BASE_URL",
        "STRIPE_METER_EVENT_NAME",
        "TABLE_NAME",
        "QUEUE_URL",
    ] {
        let mut vars = base();
        vars.remove(missing);
        let err = load(&vars).expect_err("missing").to_string();
        assert!(err.contains(missing), "{err}");
    }
}

#[test]
fn secrets_never_show_in_debug() {
    let cfg = load(&base()).expect("valid");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("sk-lf-secret"));
    assert!(!shown.contains("sk_test_secret"));
}

#[test]
fn loopback_hosts() {
    assert!(is_loopback_host("127.0.0.1"));
    assert!(is_loopback_host("127.3.2.1"));
    assert!(is_loopback_host("localhost"));
    assert!(is_loopback_host("[::1]"));
    assert!(!is_loopback_host("10.0.0.1"));
    assert!(!is_loopback_host("api.stripe.com"));
}

mod ingest {
    use super::*;
    use std::collections::HashMap;

    /// The process function's base without its Stripe variables: ingest needs none.
    fn base() -> HashMap<&'static str, &'static str> {
        let mut vars = super::base();
        vars.retain(|name, _| !name.starts_with("STRIPE_"));
        assert_eq!(vars.len(), 5, "{vars:?}");
        vars
    }

    fn load(vars: &HashMap<&'static str, &'static str>) -> Result<IngestConfig> {
        IngestConfig::from_lookup(&|k| vars.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn ingest_defaults_need_no_stripe_settings() {
        let cfg = load(&base()).expect("valid");
        assert_eq!(cfg.settle, chrono::Duration::seconds(900));
        assert_eq!(cfg.rescan, chrono::Duration::seconds(86_400));
        assert_eq!(cfg.langfuse.requests, RequestLimit::PerMinute(30));
        let mut vars = base();
        vars.insert("LANGFUSE_REQUESTS_PER_MINUTE", "unlimited");
        let cfg = load(&vars).expect("unlimited is valid");
        assert_eq!(cfg.langfuse.requests, RequestLimit::Unlimited);
        assert_eq!(cfg.time_budget_margin, chrono::Duration::seconds(20));
        assert_eq!(cfg.langfuse.api, LangfuseApi::V2);
        assert!(!format!("{cfg:?}").contains("sk-lf-secret"));
    }

    #[test]
    fn ingest_missing_and_malformed_values_are_named() {
        for name in [
            "LANGFUSE_BASE_URL",
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
            "TABLE_NAME",
            "QUEUE_URL",
        ] {
            let mut vars = base();
            vars.remove(name);
            let err = load(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
        }
        for (name, value) in [
            ("RESCAN_SECONDS", "a day"),
            ("RESCAN_SECONDS", "-1"),
            ("SETTLE_SECONDS", "x"),
            ("SETTLE_SECONDS", "-5"),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "0"),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "lots"),
            ("INGEST_TIME_BUDGET_MARGIN_SECONDS", "-3"),
            ("INGEST_SEND_ATTEMPTS", "0"),
            ("LANGFUSE_API", "v1"),
        ] {
            let mut vars = base();
            vars.insert(name, value);
            let err = load(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}

mod secrets {
    use super::*;

    const LANGFUSE_ARN: &str =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracemeter/langfuse-AbCdEf";
    const STRIPE_ARN: &str =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracemeter/stripe-GhIjKl";

    /// The deployed form: secret ARNs, no key in any variable.
    fn stored() -> HashMap<&'static str, &'static str> {
        let mut vars = base();
        for plain in [
            "LANGFUSE_PUBLIC_KEY",
            "LANGFUSE_SECRET_KEY",
            "STRIPE_SECRET_KEY",
        ] {
            vars.remove(plain);
        }
        vars.insert("LANGFUSE_SECRET_ARN", LANGFUSE_ARN);
        vars.insert("STRIPE_SECRET_ARN", STRIPE_ARN);
        vars
    }

    #[test]
    fn secret_arns_name_where_the_keys_are() {
        let cfg = load(&stored()).expect("valid");
        assert_eq!(
            cfg.langfuse.keys,
            KeySource::Stored {
                variable: "LANGFUSE_SECRET_ARN",
                id: LANGFUSE_ARN.into()
            }
        );
        assert_eq!(
            cfg.stripe.key,
            KeySource::Stored {
                variable: "STRIPE_SECRET_ARN",
                id: STRIPE_ARN.into()
            }
        );
        let mut vars = stored();
        vars.insert("STRIPE_SECRET_ARN", "tracemeter/stripe");
        let by_name = load(&vars).expect("a secret name is accepted");
        assert!(
            matches!(by_name.stripe.key, KeySource::Stored { ref id, .. } if id == "tracemeter/stripe")
        );
    }

    #[test]
    fn plain_keys_remain_for_development() {
        let cfg = load(&base()).expect("valid");
        match cfg.stripe.key {
            KeySource::Plain { variables, key } => {
                assert_eq!(variables, "STRIPE_SECRET_KEY");
                assert_eq!(key.expose(), "sk_test_secret");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(cfg.langfuse.keys, KeySource::Plain { ref key, .. } if key.public_key == "pk-lf-test")
        );
    }

    #[test]
    fn an_arn_and_a_plain_key_together_are_refused_naming_both() {
        for (arn, plain, value) in [
            ("LANGFUSE_SECRET_ARN", "LANGFUSE_PUBLIC_KEY", "pk-lf-test"),
            ("LANGFUSE_SECRET_ARN", "LANGFUSE_SECRET_KEY", "sk-lf-secret"),
            ("STRIPE_SECRET_ARN", "STRIPE_SECRET_KEY", "sk_test_secret"),
        ] {
            let mut vars = stored();
            vars.insert(plain, value);
            let err = load(&vars).expect_err(plain).to_string();
            assert!(err.contains(arn) && err.contains(plain), "{err}");
            assert!(!err.contains(value), "no key echoed: {err}");
        }
    }

    #[test]
    fn neither_names_the_secret_variable() {
        for (gone, named) in [
            ("LANGFUSE_SECRET_ARN", "LANGFUSE_PUBLIC_KEY"),
            ("STRIPE_SECRET_ARN", "STRIPE_SECRET_KEY"),
        ] {
            let mut vars = stored();
            vars.remove(gone);
            let err = load(&vars).expect_err(gone).to_string();
            assert!(err.contains(gone) && err.contains(named), "{err}");
        }
    }

    #[test]
    fn a_foreign_arn_is_refused() {
        for bad in [
            "arn:aws:s3:::bucket",
            "arn:aws:ssm:eu-west-1:1:parameter/x",
            "arn:aws",
        ] {
            let mut vars = stored();
            vars.insert("STRIPE_SECRET_ARN", bad);
            let err = load(&vars).expect_err(bad).to_string();
            assert!(err.contains("STRIPE_SECRET_ARN"), "{err}");
        }
    }

    #[test]
    fn ingest_takes_only_the_langfuse_secret() {
        let mut vars = stored();
        vars.retain(|name, _| !name.starts_with("STRIPE_"));
        let cfg =
            IngestConfig::from_lookup(&|k| vars.get(k).map(|v| v.to_string())).expect("valid");
        assert!(matches!(cfg.langfuse.keys, KeySource::Stored { .. }));
    }
}

/// The silent acceptances the issue found: each is refused now, the variable named with what
/// is wrong.
#[test]
fn empty_lists_and_invalid_ids_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        ("BUDGET_ALERT_THRESHOLDS", ",,", "item 1 is empty"),
        ("BUDGET_ALERT_THRESHOLDS", "50,,100", "item 2 is empty"),
        ("CUSTOMER_METADATA_KEYS", ",,,", "item 1 is empty"),
        (
            "CUSTOMER_METADATA_KEYS",
            "stripeCustomerId,",
            "item 2 is empty",
        ),
        ("DEFAULT_CUSTOMER_ID", "cus 1", "spaces"),
    ];
    for (name, value, why) in cases {
        let mut vars = base();
        vars.insert(name, value);
        let err = load(&vars).expect_err(value).to_string();
        assert!(
            err.contains(name) && err.contains(why),
            "{name}={value:?}: {err}"
        );
    }
    let mut vars = base();
    vars.insert("BUDGET_ALERT_THRESHOLDS", "none");
    vars.insert("DEFAULT_CUSTOMER_ID", "cus_default");
    let cfg = load(&vars).expect("none is no alerts, said on purpose");
    assert!(cfg.default_budget.thresholds.is_empty());
    assert_eq!(
        cfg.customers.default_customer.as_deref(),
        Some("cus_default")
    );
}

#[test]
fn a_huge_rescan_tier_is_called_too_long() {
    let mut vars = base();
    for (value, why) in [
        ("99999999999:900", "more than 31622400 seconds"),
        ("999999999999999999999999:900", "more than 31622400 seconds"),
        ("-5:900", "not a positive whole number"),
        (",,", "item 1 is empty"),
    ] {
        vars.insert("RESCAN_TIERS", value);
        let err = IngestConfig::from_lookup(&|k| vars.get(k).map(|v| v.to_string()))
            .expect_err(value)
            .to_string();
        assert!(
            err.contains("RESCAN_TIERS") && err.contains(why),
            "{value}: {err}"
        );
    }
}
