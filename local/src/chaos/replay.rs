//! A day later: every settled trace's message delivered again once Stripe's identifier dedup
//! window has passed (the fake's clock moved 24 h and 5 min on), as a redrive or a replayed
//! queue a day later would. Stripe would now record a resent identifier as a new event, so
//! only the ledger can keep it from being billed twice: nothing may reach Stripe again.
//! Checked after the six invariants, so the replay cannot hide a trace lost before it.

use super::check::named;
use super::{ChaosReport, ChaosRun, Invariant, StripeSeen};
use crate::fakes::stripe::{DEDUP_WINDOW, RecordedMeterEvent};
use anyhow::Result;
use chrono::Duration as ChronoDuration;

/// Delivers `traces` again past Stripe's window, faults off; the invariant.
pub(super) async fn a_day_later(
    run: &ChaosRun<'_>,
    traces: &[&str],
    report: &mut ChaosReport,
) -> Result<Invariant> {
    let stripe = &run.stack.stripe;
    let before = stripe.events().len();
    stripe.advance(DEDUP_WINDOW + ChronoDuration::minutes(5));
    run.stack.send_traces(traces).await?;
    report.add(&run.drain().await?);
    let events = stripe.events();
    let (earlier, again) = events.split_at(before.min(events.len()));
    Ok(nothing_sent_again(traces.len(), earlier, again))
}

/// Holds when nothing was `sent_again` after `earlier`; names the identifiers recorded twice.
pub(super) fn nothing_sent_again(
    replayed: usize,
    earlier: &[RecordedMeterEvent],
    sent_again: &[RecordedMeterEvent],
) -> Invariant {
    let repeated = StripeSeen::of(&[earlier, sent_again].concat()).repeated;
    Invariant {
        name: "a day later, past Stripe's dedup window, nothing sent again",
        holds: sent_again.is_empty(),
        detail: format!(
            "{replayed} traces delivered again with Stripe's clock 24 h on: {} events sent again, {} identifiers recorded twice{}",
            sent_again.len(),
            repeated.len(),
            named(repeated.iter())
        ),
    }
}
