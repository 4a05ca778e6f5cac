//! Every parser over arbitrary text: a value or a refusal, never a panic; a refusal names
//! the flag and the escaped value; and the probes of the issue that found the panics.

use super::*;
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Every parser, by the flag it serves, run on `raw`: its refusal when it refuses.
fn refusals(raw: &str) -> Vec<(&'static str, Option<Expected>)> {
    vec![
        ("--since", when(raw).err()),
        ("--period", period_key(raw).err()),
        ("--period", month_or_day(raw).err()),
        ("--period", period_kind(raw).err()),
        ("--mode", mode(raw).err()),
        ("CUSTOMER", customer_id(raw).err()),
        ("USER_ID", user_id(raw).err()),
        ("--message", message_id(raw).err()),
        ("ID", trace_id(raw).err()),
        ("--reason", reason(raw).err()),
        ("--limit", limit(raw).err()),
        ("--tolerance", tolerance(raw).err()),
        ("--samples", samples(raw).err()),
        ("--max", redrive_max(raw).err()),
        ("--minutes", minutes(raw).err()),
        ("--thresholds", thresholds(raw).err()),
        ("--margin", price(raw).err()),
        ("--token-price", token_price(raw).err()),
        ("--unpriced", unpriced(raw).err()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any text, any script or control character: every parser answers, and each refusal
    /// names its flag and shows the value escaped (no raw control character reaches the
    /// terminal).
    #[test]
    fn no_text_panics_and_every_refusal_is_named(raw in any::<String>()) {
        for (flag, why) in refusals(&raw) {
            if let Some(why) = why {
                let text = refusal(flag, &raw, &why);
                prop_assert!(text.starts_with(flag), "{text}");
                prop_assert!(text.contains("expected"), "{text}");
                prop_assert!(!text.chars().any(crate::output::unsafe_char), "{text:?}");
            }
        }
        if let Ok(w) = when(&raw) {
            let _ = w.resolve(now());
            let _ = w.resolve(DateTime::<Utc>::MIN_UTC);
        }
    }

    /// Ages of any size and sign: a value within ten years, or a refusal; never a time after
    /// now.
    #[test]
    fn ages_are_bounded_and_never_in_the_future(n in any::<i128>(), unit in "[mhd]") {
        let raw = format!("{n}{unit}");
        match when(&raw) {
            Ok(w) => {
                let at = w.resolve(now());
                prop_assert!(at <= now());
                prop_assert!(now() - at <= Duration::days(3660));
            }
            Err(why) => prop_assert!(n < 0 || why.0.contains("too far back"), "{raw}: {why:?}"),
        }
    }

    /// Period keys parse back to exactly the key their kind writes for their start.
    #[test]
    fn period_keys_round_trip(raw in "[0-9]{4}-(W[0-9]{2}|[0-9]{2}(-[0-9]{2})?)") {
        if let Ok(p) = period_key(&raw) {
            prop_assert_eq!(p.kind.key(p.start), raw);
        }
    }

    /// Any valid customer id the processor would bill is accepted by the command, and the
    /// other way round (one rule).
    #[test]
    fn the_command_takes_the_customer_ids_the_processor_bills(raw in any::<String>()) {
        prop_assert_eq!(
            customer_id(&raw).is_ok(),
            tracemeter::domain::customer::valid_customer_id(&raw)
        );
    }
}

#[test]
fn the_probes_that_panicked_are_refusals() {
    for raw in [
        "7é",
        "é",
        "ééh",
        "99999999999999999d",
        "9223372036854775807m",
        "-6h",
        "",
    ] {
        assert!(when(raw).is_err(), "{raw}");
    }
    let why = when("-6h").err().map(|e| e.0).unwrap_or_default();
    assert!(why.contains("negative"), "{why}");
    let text = refusal("--from", "99999999999999999d", &Expected(why));
    assert!(
        text.starts_with("--from \"99999999999999999d\": expected RFC 3339"),
        "{text}"
    );
}

#[test]
fn times_and_ages_resolve() {
    assert_eq!(
        when("6h").map(|w| w.resolve(now())).ok(),
        Some(now() - Duration::hours(6))
    );
    assert_eq!(
        when("7d").map(|w| w.resolve(now())).ok(),
        Some(now() - Duration::days(7))
    );
    assert_eq!(when("0m").map(|w| w.resolve(now())).ok(), Some(now()));
    assert!(when("3660d").is_ok() && when("3661d").is_err());
    let at = when("2026-11-01T00:00:00Z").map(|w| w.resolve(now()));
    assert_eq!(
        at.ok().map(|t| t.to_rfc3339()),
        Some("2026-11-01T00:00:00+00:00".into())
    );
    assert!(when("5y").is_err() && when("soon").is_err() && when("h").is_err());
}

#[test]
fn periods_are_exact_keys() {
    for bad in [
        "2026-13",
        "",
        "2026-1",
        "2026-11-31",
        "2026-W54",
        "2026-W00",
        " 2026-11",
        "+2026-11",
    ] {
        assert!(period_key(bad).is_err(), "{bad}");
    }
    assert_eq!(period_key("2026-11").map(|p| p.kind), Ok(Period::Month));
    assert_eq!(period_key("2026-W48").map(|p| p.kind), Ok(Period::Week));
    assert_eq!(period_key("2026-11-23").map(|p| p.kind), Ok(Period::Day));
    assert!(month_or_day("2026-W48").is_err());
}

#[test]
fn ids_limits_and_thresholds() {
    for bad in ["", " ", "cus 1", "cus_1\n", &"c".repeat(256)] {
        assert!(customer_id(bad).is_err(), "{bad:?}");
    }
    assert_eq!(customer_id("cus_1"), Ok("cus_1".to_string()));
    assert!(user_id("").is_err() && user_id("John Smith").is_ok());
    assert!(trace_id(" ").is_err() && trace_id("t\u{1b}[2J").is_err());
    assert!(limit("0").is_err() && limit("-1").is_err() && limit("1").is_ok());
    assert!(samples("11").is_err() && redrive_max("0").is_err() && minutes("0").is_err());
    assert_eq!(thresholds("100,50,50"), Ok(vec![50, 100]));
    assert_eq!(thresholds("none"), Ok(vec![]));
    assert!(thresholds(",,").is_err() && thresholds("").is_err() && thresholds("0").is_err());
    assert!(reason("malformed_message").is_ok() && reason("oops").is_err());
}

#[test]
fn prices_and_token_prices() {
    assert_eq!(price("0.00004").ok(), "0.00004".parse().ok());
    assert!(price("-1").is_err_and(|e| e.0.contains("cannot be negative")));
    let t = token_price("gpt-4o*=2.5:10").expect("a token price");
    assert_eq!(
        (t.pattern.as_str(), t.output_per_million),
        ("gpt-4o*", Decimal::from(10))
    );
    for bad in ["x=1", "=1:2", "*=1:2", "m=1:-2", "m"] {
        assert!(token_price(bad).is_err(), "{bad}");
    }
    assert_eq!(unpriced("hold").ok(), Some(UnpricedRule::Hold));
}
