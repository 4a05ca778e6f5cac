//! `budget set`, `budget show`, `budget list`. Setting a budget checks the current period's
//! alerts and events through the same path as the processor (`tracemeter::alerts::check`):
//! raising a hard limit above usage clears the exceeded flag with its `Budget Limit Cleared`.

use crate::Ctx;
use crate::args::{BudgetCommand, BudgetSetArgs};
use crate::error::{CliError, CliResult};
use crate::output::{fields, or_dash, table};
use crate::parse::PeriodKey;
use serde_json::{Value, json};
use tracemeter::domain::budget::{BudgetPolicy, BudgetUsage, Period};
use tracemeter::domain::budget_event::{BudgetEvent, BudgetEventKind};

/// Runs a `budget` verb.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, command: &BudgetCommand) -> CliResult {
    match command {
        BudgetCommand::Set(args) => set(ctx, args).await,
        BudgetCommand::Show { customer, period } => show(ctx, customer, period.as_ref()).await,
        BudgetCommand::List => list(ctx).await,
    }
}

/// The policy the arguments describe (each checked by its parser).
fn policy_of(args: &BudgetSetArgs) -> BudgetPolicy {
    BudgetPolicy {
        limit: Some(args.limit),
        period: args.period,
        mode: args.mode,
        thresholds: args.thresholds.clone(),
    }
}

fn describe(p: &BudgetPolicy) -> String {
    let thresholds: Vec<String> = p.thresholds.iter().map(|t| format!("{t}%")).collect();
    format!(
        "{} credits per {}, {}, alerts at {}",
        or_dash(p.limit),
        p.period.as_str(),
        p.mode.as_str(),
        or_dash(Some(thresholds.join(",")).filter(|s| !s.is_empty()))
    )
}

async fn set(ctx: &mut Ctx<'_, '_>, args: &BudgetSetArgs) -> CliResult {
    let policy = policy_of(args);
    let ledger = ctx.deps.ledger;
    let customer = args.customer.as_str();
    let current = ledger.budget_policy(customer).await?;
    let changed = current.as_ref() != Some(&policy);
    if changed {
        let was = current
            .as_ref()
            .map(describe)
            .unwrap_or_else(|| "none".into());
        ctx.approve(&format!(
            "will set {customer}'s budget: {} (now: {was})",
            describe(&policy)
        ))?;
        ledger.set_budget_policy(customer, &policy).await?;
    }
    let now = ctx.deps.clock.now();
    let period = policy.period.key(now);
    let events = tracemeter::alerts::check(ledger, customer, &period, &policy, now).await?;
    let alerts = thresholds(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.detail_type()).collect();
    let value = json!({"customer_id": customer, "changed": changed, "period": period,
        "new_alerts": alerts, "new_events": kinds});
    ctx.out.report(&value, || {
        let done = match changed {
            true => format!("{customer}'s budget is {}\n", describe(&policy)),
            false => format!(
                "{customer}'s budget is already {}: nothing to do\n",
                describe(&policy)
            ),
        };
        format!(
            "{done}alerts recorded now for {period}: {}\nevents: {}\n",
            or_dash(Some(format!("{alerts:?}")).filter(|_| !alerts.is_empty())),
            or_dash(Some(kinds.join(", ")).filter(|k| !k.is_empty()))
        )
    })
}

/// The budget check after credits went back to `customer`'s counter for `period` (the path
/// the processor and `budget set` use): a hard limit no longer reached clears the exceeded
/// flag with its `Budget Limit Cleared` event. Says what it recorded; the kinds recorded.
pub(super) async fn recheck(
    ctx: &mut Ctx<'_, '_>,
    customer: &str,
    period: &str,
) -> CliResult<Vec<&'static str>> {
    let ledger = ctx.deps.ledger;
    let policy = match ledger.budget_policy(customer).await? {
        Some(p) => p,
        None => ctx.deps.default_budget.clone(),
    };
    let now = ctx.deps.clock.now();
    let events = tracemeter::alerts::check(ledger, customer, period, &policy, now).await?;
    let kinds: Vec<&'static str> = events.iter().map(|e| e.kind.detail_type()).collect();
    if !kinds.is_empty() {
        ctx.out.say(&format!(
            "budget of {customer} for {period}: {}",
            kinds.join(", ")
        ))?;
    }
    Ok(kinds)
}

/// The thresholds among the events recorded.
fn thresholds(events: &[BudgetEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            BudgetEventKind::ThresholdCrossed { percent } => Some(percent),
            _ => None,
        })
        .collect()
}

/// A customer's counter in `period` as JSON and as a remaining-credits figure.
fn counter_json(
    policy: Option<&BudgetPolicy>,
    period: &str,
    u: BudgetUsage,
    alerts: &[u32],
) -> Value {
    let limit = policy.and_then(|p| p.limit);
    json!({
        "period": period, "limit": limit, "used": u.used,
        "remaining": limit.map(|l| l.saturating_sub(u.used)),
        "capped": u.capped, "exceeded": u.exceeded, "alerts": alerts,
        "policy_period": policy.map(|p| p.period.as_str()), "mode": policy.map(|p| p.mode.as_str()),
        "thresholds": policy.map(|p| p.thresholds.clone()),
    })
}

/// The counter key `budget show` reads: the current period of the customer's budget, or the
/// one asked for, which must be of the budget's kind and not in the future.
fn shown_period(
    asked: Option<&PeriodKey>,
    kind: Period,
    now: chrono::DateTime<chrono::Utc>,
) -> CliResult<String> {
    let Some(p) = asked else {
        return Ok(kind.key(now));
    };
    if p.kind != kind {
        return Err(CliError::Invalid(format!(
            "--period {}: this budget counts per {}: expected a {} key such as {}",
            p.key,
            kind.as_str(),
            kind.as_str(),
            kind.key(now)
        )));
    }
    if p.start > now {
        return Err(CliError::Invalid(format!(
            "--period {}: it has not started yet (the current one is {}): a future period holds no usage",
            p.key,
            kind.key(now)
        )));
    }
    Ok(p.key.clone())
}

async fn show(ctx: &mut Ctx<'_, '_>, customer: &str, period: Option<&PeriodKey>) -> CliResult {
    let ledger = ctx.deps.ledger;
    let policy = ledger.budget_policy(customer).await?;
    let now = ctx.deps.clock.now();
    let kind = policy
        .as_ref()
        .map_or(ctx.deps.default_budget.period, |p| p.period);
    let period = shown_period(period, kind, now)?;
    let usage = ledger.budget_usage(customer, &period).await?;
    let alerts = ledger.budget_alerts(customer, &period).await?;
    let mut value = counter_json(policy.as_ref(), &period, usage.clone(), &alerts);
    value["customer_id"] = json!(customer);
    ctx.out.report(&value, || {
        let limit = policy.as_ref().and_then(|p| p.limit);
        fields(&[
            ("customer", customer.to_string()),
            (
                "policy",
                policy.as_ref().map(describe).unwrap_or_else(|| {
                    "none in the table (the function's DEFAULT_BUDGET_* applies)".into()
                }),
            ),
            ("period", period.clone()),
            ("used", usage.used.to_string()),
            ("limit", or_dash(limit)),
            (
                "remaining",
                or_dash(limit.map(|l| l.saturating_sub(usage.used))),
            ),
            ("capped", usage.capped.to_string()),
            ("exceeded", usage.exceeded.to_string()),
            (
                "alerts",
                or_dash(
                    Some(
                        alerts
                            .iter()
                            .map(|a| format!("{a}%"))
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                    .filter(|s| !s.is_empty()),
                ),
            ),
        ])
    })
}

async fn list(ctx: &mut Ctx<'_, '_>) -> CliResult {
    let ledger = ctx.deps.ledger;
    let now = ctx.deps.clock.now();
    let mut values = Vec::new();
    let mut rows = Vec::new();
    for (customer, policy) in ledger.budget_policies().await? {
        let period = policy.period.key(now);
        let usage = ledger.budget_usage(&customer, &period).await?;
        let alerts = ledger.budget_alerts(&customer, &period).await?;
        let mut value = counter_json(Some(&policy), &period, usage.clone(), &alerts);
        value["customer_id"] = json!(customer);
        values.push(value);
        let remaining = policy.limit.map(|l| l.saturating_sub(usage.used));
        rows.push(vec![
            customer,
            describe(&policy),
            period,
            usage.used.to_string(),
            or_dash(remaining),
            usage.capped.to_string(),
            usage.exceeded.to_string(),
        ]);
    }
    ctx.out.report(&json!(values), || {
        table(
            &[
                "customer",
                "policy",
                "period",
                "used",
                "remaining",
                "capped",
                "exceeded",
            ],
            &rows,
        )
    })
}
