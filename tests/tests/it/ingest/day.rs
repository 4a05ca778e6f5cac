//! A simulated day of 5-minute ticks (the cheap version of `SCENARIO=day make bench`): the
//! re-scan tiers still find every late observation within `SETTLE_SECONDS + RESCAN_SECONDS`,
//! a trace is listed and looked up a handful of times a day, not once per tick, and a billed
//! trace (sub-millisecond times included) is enqueued again only for new usage.

use super::*;
use tracemeter_local::bench::day::{Day, DayOptions};

#[tokio::test]
async fn a_day_of_ticks_bills_every_late_observation_and_lists_each_trace_a_few_times() {
    let stack = TestStack::start("ingday").await.expect("stack");
    let options = DayOptions {
        traces_per_day: 96,
        late_every: 1,
        sub_ms_every: 2,
        ..DayOptions::default()
    };
    let day = Day::start(&stack, options, &[], None)
        .await
        .expect("warm-up");
    assert_eq!(day.rig().config.rescan_tiers.len(), 4, "the default tiers");
    let f = day.run().await.expect("day");
    println!("{f:#?}");
    assert_eq!((f.runs, f.incomplete_runs), (288, 0), "{f:?}");
    assert!((90..=100).contains(&f.traces), "{f:?}");
    // Every late observation, from 10 minutes to 23 hours late, was billed.
    assert!(f.late_planted >= 20, "{f:?}");
    assert_eq!(f.late_by_delay.len(), 5, "every delay planted: {f:?}");
    assert!(
        f.late_missed.is_empty(),
        "late observations not billed: {f:?}"
    );
    // Half the traces start at sub-millisecond times (as OpenTelemetry spans do): once billed,
    // they read as covered, so no trace is enqueued again without new usage.
    assert!(f.sub_ms_traces >= 60, "{f:?}");
    assert!(
        f.enqueued_again.is_empty(),
        "enqueued again without new usage: {:?}",
        f.enqueued_again
    );
    let summary = tracemeter_local::summary::collect(&stack)
        .await
        .expect("summary");
    assert!(summary.consistent(true), "Stripe = ledger: {summary:?}");
    let revisions = stack
        .stripe
        .events()
        .iter()
        .filter(|e| e.identifier.ends_with("_r2"))
        .count();
    assert!(
        revisions >= 30,
        "late observations billed as revisions: {revisions}"
    );
    // Listed by the fresh range and the 4 tiers: 5 times a day, not 288.
    let per_trace = |n: u64| n as f64 / f.traces as f64;
    let listings = per_trace(f.listings);
    assert!(
        (4.5..=6.0).contains(&listings),
        "listings per trace {listings}: {f:?}"
    );
    assert!(per_trace(f.lookup_keys) <= 6.0, "look-ups per trace: {f:?}");
    assert!(
        per_trace(f.rescan_listings) >= 3.5,
        "the tiers re-read: {f:?}"
    );
    // Tier ranges: every 15 min, hourly, hourly and every 6 h, each due at 9/10 of its
    // period, so on 5-minute ticks 96 + 26 + 26 + 4 or 5 a day.
    assert!((145..=158).contains(&f.rescan_ranges), "{f:?}");
}
