//! `reconcile`: per customer, the credits the ledger says were billed for usage in a period
//! against Stripe's meter event summaries and the period's budget counters.

use super::time;
use crate::Ctx;
use crate::args::ReconcileArgs;
use crate::error::{CliError, CliResult};
use crate::output::{or_dash, table};
use serde_json::{Value, json};
use tracemeter::domain::reconcile::{CustomerDrift, ReconcilePeriod};

/// Stripe aggregates meter events asynchronously: what the summaries say lags by minutes.
const FRESHNESS: &str = "Stripe aggregates meter events asynchronously: events of the last few minutes may not be in its summaries yet";

/// Runs the comparison; exits 3 when a customer drifts beyond the tolerance.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, args: &ReconcileArgs) -> CliResult {
    let meter = ctx.deps.meter.ok_or_else(|| {
        tracemeter::Error::Config(
            "STRIPE_METER_ID is not set; reconcile needs it and the Stripe variables (STRIPE_SECRET_ARN, STRIPE_METER_EVENT_NAME)".into(),
        )
    })?;
    let now = ctx.deps.clock.now();
    let period = ReconcilePeriod::parse(&args.period.key)
        .filter(|p| p.start <= now)
        .ok_or_else(|| {
            CliError::Invalid(format!(
                "--period {}: it has not started yet: a future period holds no usage to compare (expected this one or an earlier one)",
                args.period.key
            ))
        })?;
    let end = period.end_at(now);
    let ledger = ctx.deps.ledger;
    let mut totals = ledger.billed_by_customer(period.start, end).await?;
    if let Some(c) = &args.customer {
        totals.retain(|k, _| k == c);
        totals.entry(c.clone()).or_default();
    }
    let mut rows = Vec::new();
    for (customer, billed) in totals {
        let counters = ledger.counters(&customer).await?;
        let comparable = counters
            .keys()
            .all(|k| period.holds_counter(k) || !k.contains("-W"));
        let held: u64 = counters
            .iter()
            .filter(|(k, _)| period.holds_counter(k))
            .map(|(_, u)| u.used)
            .sum();
        let drift = CustomerDrift {
            ledger: billed.delivered,
            stripe: meter.aggregated(&customer, period.start, end).await?,
            counters: comparable.then_some(held),
            in_flight: billed.in_flight,
        };
        rows.push((customer, billed.traces, drift));
    }
    report(ctx, &period, end, args.tolerance, &rows)
}

fn report(
    ctx: &mut Ctx<'_, '_>,
    period: &ReconcilePeriod,
    end: chrono::DateTime<chrono::Utc>,
    tolerance: u64,
    rows: &[(String, u64, CustomerDrift)],
) -> CliResult {
    let drifting: Vec<&str> = rows
        .iter()
        .filter(|(_, _, d)| d.drifts(tolerance))
        .map(|(c, _, _)| c.as_str())
        .collect();
    let customers: Vec<Value> = rows.iter().map(|(c, traces, d)| json!({
        "customer_id": c, "traces": traces, "ledger": d.ledger, "stripe": d.stripe,
        "counters": d.counters, "in_flight": d.in_flight, "stripe_drift": d.stripe_drift().to_string(),
        "counter_drift": d.counter_drift().map(|x| x.to_string()), "drift": d.drifts(tolerance),
    })).collect();
    let value = json!({
        "period": period.key, "start": time(period.start), "end": time(end), "tolerance": tolerance,
        "freshness": FRESHNESS, "customers": customers, "drift": !drifting.is_empty(),
    });
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(c, traces, d)| {
            vec![
                c.clone(),
                traces.to_string(),
                d.ledger.to_string(),
                d.stripe.to_string(),
                or_dash(d.counters),
                d.in_flight.to_string(),
                d.stripe_drift().to_string(),
                or_dash(d.counter_drift()),
                if d.drifts(tolerance) {
                    "DRIFT".into()
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    let verdict = match drifting.is_empty() {
        true => format!(
            "reconciled {}: no drift beyond {tolerance} credits",
            period.key
        ),
        false => format!(
            "reconciled {}: DRIFT for {}",
            period.key,
            drifting.join(", ")
        ),
    };
    ctx.out.report(&value, || {
        let headers = [
            "customer",
            "traces",
            "ledger",
            "stripe",
            "counters",
            "in flight",
            "ledger-stripe",
            "counters-ledger",
            "verdict",
        ];
        format!(
            "usage from {} to {}\n{}{verdict}\n({FRESHNESS})\n",
            time(period.start),
            time(end),
            table(&headers, &lines)
        )
    })?;
    match drifting.is_empty() {
        true => Ok(()),
        false => Err(CliError::Drift(verdict)),
    }
}
