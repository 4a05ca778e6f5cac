//! Any bytes as the operator's command line: split on NUL into arguments, parsed as
//! `tracemeter` would (every verb, every flag's parser); and as one value given to each
//! argument parser. Nothing may panic; a refusal names its flag and carries no raw control
//! character; an age never lands after now.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use tracemeter_cli::parse::{self, Expected, When, refusal};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args = std::iter::once("tracemeter").chain(text.split('\0'));
    if let Err(e) = tracemeter_cli::parse(args) {
        let _ = e.to_string();
    }
    let raw = text.as_ref();
    let refusals: [(&str, Option<Expected>); 16] = [
        ("--since", parse::when(raw).err()),
        ("--period", parse::period_key(raw).err()),
        ("--period", parse::month_or_day(raw).err()),
        ("--period", parse::period_kind(raw).err()),
        ("--mode", parse::mode(raw).err()),
        ("CUSTOMER", parse::customer_id(raw).err()),
        ("USER_ID", parse::user_id(raw).err()),
        ("--message", parse::message_id(raw).err()),
        ("ID", parse::trace_id(raw).err()),
        ("--reason", parse::reason(raw).err()),
        ("--limit", parse::limit(raw).err()),
        ("--tolerance", parse::tolerance(raw).err()),
        ("--samples", parse::samples(raw).err()),
        ("--max", parse::redrive_max(raw).err()),
        ("--minutes", parse::minutes(raw).err()),
        ("--thresholds", parse::thresholds(raw).err()),
    ];
    for (flag, why) in refusals {
        if let Some(why) = why {
            let message = refusal(flag, raw, &why);
            assert!(message.starts_with(flag));
            assert!(!message.chars().any(char::is_control), "{message:?}");
        }
    }
    if let Ok(When::Ago(_)) = parse::when(raw) {
        let now = Utc::now();
        let at = parse::when(raw).map(|w| w.resolve(now)).unwrap_or(now);
        assert!(at <= now);
        let _ = parse::when(raw).map(|w| w.resolve(DateTime::<Utc>::MIN_UTC));
    }
});
