//! `stripe-errors`: Stripe's asynchronous meter event errors (its error reports, read as thin
//! events), each sample identifier mapped back to its trace revision in the ledger; with
//! `--apply`, those revisions become `failed` (`stripe_rejected`) and their credits go back to
//! the budget, exactly once, so `reconcile` agrees and `replay` can bill them once fixed.
//! Stripe reports samples, not every dropped event: `reconcile` stays the complete check.

use super::time;
use crate::Ctx;
use crate::args::StripeErrorsArgs;
use crate::error::{CliError, CliResult};
use crate::output::{or_dash, table};
use serde_json::{Value, json};
use tracemeter::domain::ledger::{LedgerEntry, LedgerState};
use tracemeter::domain::meter_errors::{MeterErrorReport, Rejection, revision_of};

/// What the reports are and are not.
const SAMPLES: &str = "Stripe's error reports list samples of the dropped events, not all of them: run reconcile for the complete comparison";

/// One sample error and where it stands in the ledger.
struct Sample {
    event_id: String,
    event_type: String,
    code: String,
    identifier: String,
    message: String,
    /// The trace and revision the identifier names (ours and readable).
    revision: Option<(String, u32)>,
    /// `not ours`, `hashed: trace unknown`, `not in ledger`, `delivered`, `rejected`, or the
    /// entry's state (a claim in flight or ambiguous).
    standing: String,
    credits: Option<u64>,
}

/// Shows the error reports since `--since`; with `--apply`, records the revisions.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, args: &StripeErrorsArgs) -> CliResult {
    let reader = ctx.deps.meter_errors.ok_or_else(|| {
        tracemeter::Error::Config(
            "STRIPE_METER_ID is not set; stripe-errors needs it and the Stripe variables (STRIPE_SECRET_KEY, STRIPE_METER_EVENT_NAME)".into(),
        )
    })?;
    let since = args.since.resolve(ctx.deps.clock.now());
    let reports = reader.error_reports(since).await?;
    let mut samples = Vec::new();
    for r in &reports {
        for s in &r.samples {
            samples.push(sample(ctx, r, s).await?);
        }
    }
    let mut value = show(ctx, since, &reports, &samples)?;
    let outcomes = match args.apply {
        true => apply(ctx, &samples).await?,
        false => Vec::new(),
    };
    applied(ctx, args.apply, &mut value, &outcomes)
}

/// A sample with its standing in the ledger.
async fn sample(
    ctx: &Ctx<'_, '_>,
    r: &MeterErrorReport,
    s: &tracemeter::domain::meter_errors::MeterErrorSample,
) -> CliResult<Sample> {
    let revision = revision_of(&s.identifier);
    let entry = match &revision {
        Some((trace, _)) => ctx.deps.ledger.entry(trace).await?,
        None => None,
    };
    let (standing, credits) = match (&revision, &entry) {
        // A long or unusual trace id is hashed into its identifier: no way back to the trace.
        (None, _) if s.identifier.starts_with("tm_h") => {
            ("hashed: trace unknown".to_string(), None)
        }
        (None, _) => ("not ours".to_string(), None),
        (Some(_), None) => ("not in ledger".to_string(), None),
        (Some((_, rev)), Some(e)) => standing(e, *rev, &s.identifier),
    };
    Ok(Sample {
        event_id: r.event_id.clone(),
        event_type: r.event_type.clone(),
        code: s.code.clone(),
        identifier: s.identifier.clone(),
        message: s.message.clone(),
        revision,
        standing,
        credits,
    })
}

/// Where a revision stands, as the entry reads (a receipt folded in), and its credits when
/// the entry still tells them apart.
fn standing(e: &LedgerEntry, revision: u32, identifier: &str) -> (String, Option<u64>) {
    if e.state == LedgerState::Failed
        && e.reason.as_deref() == Some("stripe_rejected")
        && e.revision >= revision
    {
        return ("rejected".into(), None);
    }
    if let Some(p) = e.pending.as_ref().filter(|p| p.identifier == identifier) {
        return (e.state.as_str().into(), Some(p.billable));
    }
    let delivered = e.receipted.as_deref() == Some(identifier)
        || (e.state == LedgerState::Metered && e.revision == revision);
    match delivered {
        true => (
            "delivered".into(),
            (revision == 1).then_some(e.billed_credits),
        ),
        false => (e.state.as_str().into(), None),
    }
}

/// The samples as JSON (printed at the end), and as a table now in human mode.
fn show(
    ctx: &mut Ctx<'_, '_>,
    since: chrono::DateTime<chrono::Utc>,
    reports: &[MeterErrorReport],
    samples: &[Sample],
) -> CliResult<Value> {
    let errors: u64 = reports.iter().map(|r| r.error_count).sum();
    let unsampled = without_sample(reports);
    let value = json!({
        "since": time(since), "reports": reports.len(), "errors": errors,
        "without_sample": unsampled, "note": SAMPLES,
        "samples": samples.iter().map(|s| json!({
            "event_id": s.event_id, "event_type": s.event_type, "code": s.code,
            "identifier": s.identifier, "message": s.message,
            "trace_id": s.revision.as_ref().map(|r| &r.0), "revision": s.revision.as_ref().map(|r| r.1),
            "standing": s.standing, "credits": s.credits,
        })).collect::<Vec<_>>(),
    });
    if ctx.out.json() {
        return Ok(value);
    }
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            vec![
                s.event_id.clone(),
                s.code.clone(),
                s.identifier.clone(),
                or_dash(s.revision.as_ref().map(|r| r.0.clone())),
                s.standing.clone(),
                or_dash(s.credits),
            ]
        })
        .collect();
    ctx.out.report(&Value::Null, || {
        let headers = ["event", "code", "identifier", "trace", "ledger", "credits"];
        format!(
            "{}{} error report(s) since {}: {errors} invalid event(s), {} sample(s), {unsampled} without a sample (not mapped back to a trace)\n({SAMPLES})\n",
            table(&headers, &rows),
            reports.len(),
            time(since),
            samples.len()
        )
    })?;
    Ok(value)
}

/// How many of the reports' errors came without a sample: Stripe counts every invalid event
/// but samples only some, so these cannot be mapped back to a trace (reconcile finds them).
fn without_sample(reports: &[MeterErrorReport]) -> u64 {
    reports
        .iter()
        .map(|r| r.error_count.saturating_sub(r.samples.len() as u64))
        .sum()
}

/// Records every sampled revision still delivered as `stripe_rejected`, after approval.
async fn apply(ctx: &mut Ctx<'_, '_>, samples: &[Sample]) -> CliResult<Vec<Outcome>> {
    let mut targets: Vec<(&str, u32, &Sample)> = Vec::new();
    for s in samples {
        if let Some((trace, rev)) = &s.revision
            && s.standing != "rejected"
            && s.standing != "not in ledger"
            && !targets.iter().any(|t| t.2.identifier == s.identifier)
        {
            targets.push((trace, *rev, s));
        }
    }
    let mut outcomes = Vec::new();
    if !targets.is_empty() {
        let names: Vec<String> = targets.iter().map(|t| t.2.identifier.clone()).collect();
        ctx.approve(&format!(
            "will record {} revision(s) Stripe dropped as failed (stripe_rejected) and give their credits back to the budget: {}",
            targets.len(),
            super::failures::preview(&names)
        ))?;
        let now = ctx.deps.clock.now();
        for (trace, rev, s) in &targets {
            let detail = format!(
                "Stripe error report {}: {}: {}",
                s.event_id, s.code, s.message
            );
            let outcome = ctx
                .deps
                .ledger
                .reject_delivered(trace, *rev, &s.identifier, &detail, now)
                .await?;
            outcomes.push((trace.to_string(), *rev, s.identifier.clone(), outcome));
        }
    }
    let mut counters: Vec<(&str, &str)> = outcomes
        .iter()
        .filter_map(|o| match &o.3 {
            Rejection::Rejected {
                customer_id,
                period,
                ..
            } => Some((customer_id.as_str(), period.as_str())),
            _ => None,
        })
        .collect();
    counters.sort();
    counters.dedup();
    for (customer, period) in counters {
        super::budget::recheck(ctx, customer, period).await?;
    }
    Ok(outcomes)
}

/// What the ledger did with one identifier: trace, revision, identifier, outcome.
type Outcome = (String, u32, String, Rejection);

/// The JSON report (with what `--apply` did) or the outcome table; exit 1 when the ledger
/// refused some revision.
fn applied(
    ctx: &mut Ctx<'_, '_>,
    apply: bool,
    value: &mut Value,
    outcomes: &[Outcome],
) -> CliResult {
    let rows: Vec<(Value, Vec<String>)> = outcomes
        .iter()
        .map(|(trace, rev, id, o)| {
            let (what, credits, why) = match o {
                Rejection::Rejected { billable, .. } => ("rejected", Some(*billable), None),
                Rejection::AlreadyRejected => ("already rejected", None, None),
                Rejection::NotFound => ("not in ledger", None, None),
                Rejection::Refused(why) => ("refused", None, Some(why.clone())),
            };
            let value = json!({"trace_id": trace, "revision": rev, "identifier": id,
                "outcome": what, "credits_given_back": credits, "why": why});
            let row = vec![
                trace.clone(),
                rev.to_string(),
                what.into(),
                or_dash(credits),
                or_dash(why),
            ];
            (value, row)
        })
        .collect();
    let given: u64 = outcomes
        .iter()
        .map(|o| match o.3 {
            Rejection::Rejected { billable, .. } => billable,
            _ => 0,
        })
        .sum();
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o.3, Rejection::Rejected { .. }))
        .count();
    let refused: Vec<&str> = outcomes
        .iter()
        .filter(|o| matches!(o.3, Rejection::Refused(_)))
        .map(|o| o.2.as_str())
        .collect();
    if ctx.out.json() {
        if apply {
            value["applied"] = json!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>());
            value["credits_given_back"] = json!(given);
        }
        ctx.out.report(value, String::new)?;
    } else if apply {
        let table_rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.1).collect();
        ctx.out.report(&Value::Null, || {
            let t = table(&["trace", "revision", "outcome", "credits", "why"], &table_rows);
            format!("{t}recorded {recorded} revision(s) as stripe_rejected, {given} credits given back; once the cause is fixed: tracemeter replay --reason stripe_rejected\n")
        })?;
    }
    match refused.is_empty() {
        true => Ok(()),
        false => Err(CliError::Partial(format!(
            "the ledger could not give back: {} (see why)",
            refused.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use tracemeter::domain::ledger::PendingClaim;
    use tracemeter::domain::meter::identifier;

    fn entry(state: LedgerState, revision: u32, reason: Option<&str>) -> LedgerEntry {
        LedgerEntry {
            trace_id: "t".into(),
            state,
            version: 2,
            revision,
            total_credits: 40,
            billed_credits: 40,
            capped_credits: 0,
            customer_id: Some("cus_a".into()),
            last_observation_at: None,
            pending: None,
            reason: reason.map(str::to_string),
            detail: None,
            receipted: None,
            price_version: None,
        }
    }

    #[test]
    fn errors_beyond_the_samples_are_counted_as_without_a_sample() {
        let sample = |id: &str| tracemeter::domain::meter_errors::MeterErrorSample {
            code: "meter_event_customer_not_found".into(),
            identifier: id.into(),
            message: String::new(),
        };
        let report = |count: u64, samples: Vec<_>| MeterErrorReport {
            event_id: "evt_1".into(),
            event_type: "v1.billing.meter.error_report_triggered".into(),
            created: Utc::now(),
            validation_start: None,
            validation_end: None,
            error_count: count,
            samples,
        };
        let reports = [
            report(5, vec![sample("a"), sample("b")]),
            report(1, vec![sample("c")]),
            report(0, vec![sample("d")]),
        ];
        assert_eq!(without_sample(&reports), 3);
        assert_eq!(without_sample(&[]), 0);
    }

    #[test]
    fn a_revision_stands_delivered_pending_or_rejected() {
        let id1 = identifier("t", 1);
        let metered = entry(LedgerState::Metered, 1, None);
        assert_eq!(standing(&metered, 1, &id1), ("delivered".into(), Some(40)));
        let later = entry(LedgerState::Metered, 2, None);
        assert_eq!(
            standing(&later, 2, &identifier("t", 2)),
            ("delivered".into(), None)
        );
        assert_eq!(standing(&later, 1, &id1), ("metered".into(), None));
        let rejected = entry(LedgerState::Failed, 1, Some("stripe_rejected"));
        assert_eq!(standing(&rejected, 1, &id1), ("rejected".into(), None));
        let now = Utc::now();
        let mut claimed = entry(LedgerState::Claimed, 0, None);
        claimed.pending = Some(PendingClaim {
            revision: 1,
            identifier: id1.clone(),
            customer_id: "cus_a".into(),
            billable: 7,
            capped: 0,
            total_after: 7,
            event_timestamp: 0,
            period: "2026-11".into(),
            claimed_at: now,
            lease_until: now,
            receipt: None,
        });
        assert_eq!(standing(&claimed, 1, &id1), ("claimed".into(), Some(7)));
    }
}
