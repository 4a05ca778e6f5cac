use super::*;
use crate::domain::credits::quote;
use crate::domain::usage::ModelTokens;
use chrono::{Duration, TimeZone};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::str::FromStr;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("a decimal")
}

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0)
        .single()
        .expect("a date")
}

fn version(scope: PriceScope, from: DateTime<Utc>, credit: &str) -> PriceVersion {
    PriceVersion {
        scope,
        effective_from: from,
        credit_price_usd: dec(credit),
        ..PriceVersion::from_variables(&Pricing::default())
    }
}

fn usage(cost: &str, latency: &str, tokens: Vec<ModelTokens>) -> TraceUsage {
    TraceUsage {
        trace_id: "t1".into(),
        timestamp: at(10),
        latency_seconds: dec(latency),
        ai_cost_usd: dec(cost),
        user_id: None,
        metadata: BTreeMap::new(),
        observation_count: 1,
        last_observation_at: None,
        tokens,
    }
}

fn tokens(model: &str, input: u64, output: u64, cost: Option<&str>) -> ModelTokens {
    ModelTokens {
        model: model.into(),
        input,
        output,
        cost_usd: cost.map(dec),
    }
}

fn gpt4o() -> TokenPrice {
    TokenPrice {
        pattern: "gpt-4o*".into(),
        input_per_million: dec("2.5"),
        output_per_million: dec("10"),
    }
}

#[test]
fn the_variables_version_prices_exactly_as_before() {
    let byo = ByoKeyRule::default();
    let pricing = Pricing {
        margin: dec("1.3"),
        ..Pricing::default()
    };
    let book = CustomerBook::new(&pricing, Vec::new(), Vec::new());
    let v = book.version_at(at(1)).expect("the variables' version");
    assert_eq!(v.id(), "default@1970-01-01T00:00:00.000Z");
    for (cost, latency) in [
        ("0", "90"),
        ("0.0003", "0"),
        ("1.5", "61.25"),
        ("0.01", "60"),
    ] {
        // Tokens without a cost and no token price: compute only, as before.
        let u = usage(cost, latency, vec![tokens("my-finetune", 100, 20, None)]);
        let before = quote(&u, &pricing, &byo).expect("old");
        let now = quote_at(&u, v, pricing.max_trace_cost_usd, &byo).expect("new");
        assert_eq!(before.credits, now.credits, "{cost} {latency}");
        assert_eq!(before.ai_usd, now.ai_usd);
        assert_eq!(now.unpriced, vec!["my-finetune".to_string()]);
    }
}

#[test]
fn a_token_price_prices_usage_langfuse_did_not() {
    let mut v = version(PriceScope::Default, at(1), "0.00004");
    v.token_prices = vec![gpt4o()];
    // 1M input at 2.5 + 0.5M output at 10 = 7.5 USD; 7.5 / 0.00004 = 187500 credits.
    let u = usage(
        "0",
        "0",
        vec![tokens("gpt-4o-mini", 1_000_000, 500_000, None)],
    );
    let q = quote_at(&u, &v, dec("1000"), &ByoKeyRule::default()).expect("ok");
    assert_eq!(q.ai_usd, dec("7.5"));
    assert_eq!(q.credits, 187_500);
    assert!(q.unpriced.is_empty());
    // Langfuse's cost wins unless the version says token prices always apply.
    let u = usage("1", "0", vec![tokens("gpt-4o", 1_000_000, 0, Some("1"))]);
    let q = quote_at(&u, &v, dec("1000"), &ByoKeyRule::default()).expect("ok");
    assert_eq!(q.ai_usd, dec("1"));
    v.token_prices_always = true;
    let q = quote_at(&u, &v, dec("1000"), &ByoKeyRule::default()).expect("ok");
    assert_eq!(q.ai_usd, dec("2.5"));
}

#[test]
fn exact_names_win_over_patterns_and_longer_patterns_over_shorter() {
    let mut v = version(PriceScope::Default, at(1), "0.00004");
    let p = |pattern: &str, input: &str| TokenPrice {
        pattern: pattern.into(),
        input_per_million: dec(input),
        output_per_million: Decimal::ZERO,
    };
    v.token_prices = vec![p("gpt*", "1"), p("gpt-4o", "3"), p("gpt-4o*", "2")];
    assert_eq!(
        v.token_price("gpt-4o").map(|t| &t.pattern[..]),
        Some("gpt-4o")
    );
    assert_eq!(
        v.token_price("gpt-4o-mini").map(|t| &t.pattern[..]),
        Some("gpt-4o*")
    );
    assert_eq!(
        v.token_price("gpt-3.5").map(|t| &t.pattern[..]),
        Some("gpt*")
    );
    assert!(v.token_price("claude").is_none());
}

#[test]
fn hold_fails_unpriced_usage_naming_the_models_unless_byo_key() {
    let mut v = version(PriceScope::Default, at(1), "0.00004");
    v.unpriced = UnpricedRule::Hold;
    let u = usage(
        "0",
        "1",
        vec![
            tokens("llama-local", 10, 10, None),
            tokens("my-ft", 0, 5, None),
            tokens("gpt-4o", 10, 10, Some("0.1")),
        ],
    );
    let e = quote_at(&u, &v, dec("1000"), &ByoKeyRule::default()).expect_err("held");
    assert!(!e.is_transient());
    assert!(matches!(
        e,
        Error::Permanent {
            reason: FailureReason::UnpricedModel,
            ..
        }
    ));
    assert!(e.to_string().contains("llama-local, my-ft"), "{e}");
    assert!(!e.to_string().contains("gpt-4o"), "{e}");
    let mut byo = u.clone();
    byo.metadata
        .insert("aiCredentialsOwnership".into(), serde_json::json!("user"));
    assert!(quote_at(&byo, &v, dec("1000"), &ByoKeyRule::default()).is_ok());
}

#[test]
fn invalid_versions_are_refused_with_the_reason() {
    let mut v = version(PriceScope::Default, at(1), "0");
    assert!(v.validate().expect_err("zero").contains("credit price"));
    v.credit_price_usd = dec("0.00004");
    v.compute_usd_per_minute = dec("-1");
    assert!(v.validate().expect_err("neg").contains("compute"));
    v.compute_usd_per_minute = Decimal::ZERO;
    v.token_prices = vec![TokenPrice {
        pattern: "x".into(),
        input_per_million: dec("-1"),
        output_per_million: Decimal::ZERO,
    }];
    assert!(v.validate().expect_err("tok").contains("negative"));
}

#[test]
fn a_table_version_from_the_epoch_replaces_the_variables() {
    let table = version(PriceScope::Default, DateTime::UNIX_EPOCH, "0.001");
    let book = CustomerBook::new(&Pricing::default(), vec![table.clone()], Vec::new());
    assert_eq!(book.version_at(at(1)), Some(&table));
    assert_eq!(book.by_id(&table.id()), Some(&table));
}

proptest! {
    /// The version in effect is the customer's latest from at or before the time, else the
    /// default's latest from at or before it; never one from after it.
    #[test]
    fn version_at_is_the_latest_applicable(
        defaults in proptest::collection::vec(0i64..1000, 0..6),
        own in proptest::collection::vec(0i64..1000, 0..6),
        t in 0i64..1200,
    ) {
        let base = at(1);
        let mk = |scope: PriceScope, hours: &[i64]| -> Vec<PriceVersion> {
            hours.iter().map(|h| version(scope.clone(), base + Duration::hours(*h), "0.00004")).collect()
        };
        let book = CustomerBook::new(
            &Pricing::default(),
            mk(PriceScope::Default, &defaults),
            mk(PriceScope::Customer("cus_a".into()), &own),
        );
        let when = base + Duration::hours(t);
        let got = book.version_at(when).expect("the variables' version always applies");
        prop_assert!(got.effective_from <= when);
        let own_best = own.iter().filter(|h| **h <= t).max();
        match own_best {
            Some(h) => {
                prop_assert_eq!(&got.scope, &PriceScope::Customer("cus_a".into()));
                prop_assert_eq!(got.effective_from, base + Duration::hours(*h));
            }
            None => {
                prop_assert_eq!(&got.scope, &PriceScope::Default);
                let best = defaults.iter().filter(|h| **h <= t).max();
                let expected = best.map_or(DateTime::UNIX_EPOCH, |h| base + Duration::hours(*h));
                prop_assert_eq!(got.effective_from, expected);
            }
        }
        // What the ledger records finds the same version again.
        prop_assert_eq!(book.by_id(&got.id()), Some(got));
    }
}

/// The worked example of docs/pricing.md, figure by figure.
#[test]
fn the_worked_example_of_the_pricing_guide() {
    let byo = ByoKeyRule::default();
    let day = |d: u32| {
        Utc.with_ymd_and_hms(2026, 12, d, 12, 0, 0)
            .single()
            .expect("a date")
    };
    let from = |d: u32| {
        Utc.with_ymd_and_hms(2026, 12, d, 0, 0, 0)
            .single()
            .expect("a date")
    };
    let mut v2 = version(PriceScope::Default, from(15), "0.00004");
    v2.margin = dec("1.2");
    let mut acme = version(PriceScope::Customer("cus_acme".into()), from(1), "0.00004");
    acme.margin = dec("0.8");
    acme.token_prices = vec![TokenPrice {
        pattern: "llama-3-70b*".into(),
        input_per_million: dec("0.6"),
        output_per_million: dec("0.8"),
    }];
    let others = CustomerBook::new(&Pricing::default(), vec![v2.clone()], Vec::new());
    let acme_book = CustomerBook::new(&Pricing::default(), vec![v2], vec![acme]);
    let credits = |book: &CustomerBook, u: &TraceUsage| {
        let v = book.version_at(u.timestamp).expect("a version");
        quote_at(u, v, dec("1000"), &byo).expect("priced").credits
    };
    let mut a = usage("0.012", "30", Vec::new());
    a.timestamp = day(10);
    assert_eq!(credits(&others, &a), 925);
    let mut b = a.clone();
    b.timestamp = day(20);
    assert_eq!(credits(&others, &b), 1110);
    assert_eq!(credits(&acme_book, &b), 740);
    // A's late revision, at A's recorded version (the variables'): 1125 - 925 = 200.
    let mut late = a.clone();
    late.ai_cost_usd = dec("0.020");
    assert_eq!(credits(&others, &late), 1125);
    let mut at_v2 = late.clone();
    at_v2.timestamp = day(20);
    assert_eq!(
        credits(&others, &at_v2),
        1350,
        "what re-pricing would have billed"
    );
    let mut d = usage(
        "0",
        "12",
        vec![tokens("llama-3-70b-instruct", 2_000_000, 500_000, None)],
    );
    d.timestamp = day(20);
    assert_eq!(credits(&acme_book, &d), 32_200);
}
