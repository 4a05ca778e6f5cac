//! Property tests of the domain's input handling: message parsing, credit computation and
//! period bucketing, over generated input (proptest).

use super::budget::Period;
use super::credits::{ByoKeyRule, Pricing, quote};
use super::message::{MAX_BODY_BYTES, MeterMessage};
use super::usage::TraceUsage;
use crate::error::{Error, FailureReason};
use chrono::{DateTime, Datelike, Duration};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

fn usage(cost_micros: i64, latency_ms: i64, byo: bool) -> TraceUsage {
    let mut metadata = BTreeMap::new();
    if byo {
        metadata.insert("aiCredentialsOwnership".to_string(), "user".into());
    }
    TraceUsage {
        trace_id: "t".into(),
        timestamp: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        latency_seconds: Decimal::new(latency_ms, 3),
        ai_cost_usd: Decimal::new(cost_micros, 6),
        user_id: None,
        metadata,
        observation_count: 1,
        last_observation_at: None,
        tokens: Vec::new(),
    }
}

fn is_permanent(e: &Error, reason: FailureReason) -> bool {
    matches!(e, Error::Permanent { reason: r, .. } if *r == reason)
}

proptest! {
    /// Any trace id a message can carry survives a round trip.
    #[test]
    fn a_message_round_trips(id in "[A-Za-z0-9_:.\\-]{1,200}") {
        let body = MeterMessage::new(id.clone()).to_body();
        prop_assert_eq!(MeterMessage::parse(&body).map(|m| m.trace_id).ok(), Some(id));
    }

    /// Arbitrary bodies never panic: they parse or are a permanent malformed_message whose
    /// detail says what is wrong.
    #[test]
    fn any_body_parses_or_is_malformed(body in ".{0,300}") {
        match MeterMessage::parse(&body) {
            Ok(m) => prop_assert!(!m.trace_id.trim().is_empty()),
            Err(e) => {
                prop_assert!(is_permanent(&e, FailureReason::MalformedMessage), "{e}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// Oversized bodies are refused before parsing, naming the size and the limit.
    #[test]
    fn oversized_bodies_are_refused(extra in 1usize..4096) {
        let body = format!("{{\"traceId\":\"{}\"}}", "a".repeat(MAX_BODY_BYTES + extra));
        let e = MeterMessage::parse(&body).err();
        prop_assert!(e.as_ref().is_some_and(|e| is_permanent(e, FailureReason::MalformedMessage)));
        prop_assert!(e.is_some_and(|e| e.to_string().contains(&MAX_BODY_BYTES.to_string())));
    }

    /// Credits are never negative, cover the cost (rounded up to whole credits), grow with
    /// cost and latency, and a BYO-key trace pays compute only.
    #[test]
    fn credits_cover_the_cost_and_grow_with_it(
        cost in 0i64..500_000_000,       // up to 500 USD, in micro-USD
        extra_cost in 0i64..1_000_000,
        latency in 0i64..3_600_000,      // up to an hour, in ms
        extra_latency in 0i64..60_000,
    ) {
        let pricing = Pricing::default();
        let byo = ByoKeyRule::default();
        let q = quote(&usage(cost, latency, false), &pricing, &byo).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let total = q.ai_usd + q.compute_usd;
        let billed = Decimal::from(q.credits) * pricing.credit_price_usd;
        prop_assert!(billed >= total * pricing.margin, "{billed} < {total}");
        prop_assert!(billed - total * pricing.margin < pricing.credit_price_usd, "rounded up by less than one credit");
        let more = quote(&usage(cost + extra_cost, latency + extra_latency, false), &pricing, &byo)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(more.credits >= q.credits);
        let own_key = quote(&usage(cost, latency, true), &pricing, &byo)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(own_key.ai_usd, Decimal::ZERO);
        prop_assert!(own_key.byo_key);
        prop_assert!(own_key.credits <= q.credits);
    }

    /// Negative or absurd figures are refused as invalid usage, never billed.
    #[test]
    fn negative_and_absurd_usage_is_refused(
        negative in i64::MIN / 2..-1,
        absurd in 1_001_000_000i64..i64::MAX / 2, // above MAX_TRACE_COST_USD (1000 USD)
    ) {
        let pricing = Pricing::default();
        let byo = ByoKeyRule::default();
        for u in [usage(negative, 1_000, false), usage(1_000, negative, false), usage(absurd, 1_000, false)] {
            let e = quote(&u, &pricing, &byo).err();
            prop_assert!(e.is_some_and(|e| is_permanent(&e, FailureReason::InvalidUsage)));
        }
    }

    /// Every instant falls in exactly one period of each kind, the one that holds the period's
    /// first instant, and the next period starts with a different key.
    #[test]
    fn every_instant_has_one_period(secs in 946_684_800i64..4_102_444_800) {
        let at = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        let day_start = at.date_naive().and_hms_opt(0, 0, 0).map(|d| d.and_utc()).unwrap_or(at);
        prop_assert_eq!(Period::Day.key(at), Period::Day.key(day_start));
        prop_assert_ne!(Period::Day.key(day_start), Period::Day.key(day_start - Duration::seconds(1)));
        let week_start = day_start - Duration::days(i64::from(at.weekday().num_days_from_monday()));
        prop_assert_eq!(Period::Week.key(at), Period::Week.key(week_start));
        prop_assert_ne!(Period::Week.key(week_start), Period::Week.key(week_start - Duration::seconds(1)));
        let month_start = day_start - Duration::days(i64::from(at.day0()));
        prop_assert_eq!(Period::Month.key(at), Period::Month.key(month_start));
        prop_assert_ne!(Period::Month.key(month_start), Period::Month.key(month_start - Duration::seconds(1)));
        // ISO week keys: the year is the ISO year (around 1 January it may differ from the
        // calendar year), and the week is 01..=53.
        let key = Period::Week.key(at);
        let week: u32 = key.rsplit('W').next().and_then(|w| w.parse().ok()).unwrap_or(0);
        prop_assert!((1..=53).contains(&week), "{key}");
        prop_assert!(key.starts_with(&at.iso_week().year().to_string()));
    }
}
