//! Any bytes as a Langfuse answer: the parsers either fail with an error or produce usage
//! that prices without panicking; nothing they accept may price negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracemeter::adapters::langfuse::{
    LegacyTrace, ObservationsV2Page, parse, usage_from_legacy, usage_from_v2,
};
use tracemeter::domain::credits::{ByoKeyRule, Pricing, quote};
use tracemeter::domain::message::MeterMessage;

fuzz_target!(|data: &[u8]| {
    let pricing = Pricing::default();
    let byo = ByoKeyRule::default();
    let price = |usage: &tracemeter::domain::usage::TraceUsage| {
        if let Ok(q) = quote(usage, &pricing, &byo) {
            assert!(q.ai_usd >= rust_decimal::Decimal::ZERO);
            assert!(q.compute_usd >= rust_decimal::Decimal::ZERO);
        }
    };
    if let Ok(page) = parse::<ObservationsV2Page>("/api/public/v2/observations", data)
        && let Ok(Some(usage)) = usage_from_v2("fuzz", &page.data)
    {
        price(&usage);
    }
    if let Ok(trace) = parse::<LegacyTrace>("/api/public/traces/fuzz", data)
        && let Ok(usage) = usage_from_legacy(trace)
    {
        price(&usage);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MeterMessage::parse(text);
    }
});
