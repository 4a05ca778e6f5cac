//! `price set`, `price show`, `price list`: the price book's versions; `price index`: the
//! index of customers with versions of their own (see docs/pricing.md).
//!
//! A customer is known when it has a budget policy, a budget counter (it was billed) or price
//! versions;
//! `--new-customer` accepts one tracemeter has never seen (a plan set before its first use).

use super::time;
use crate::Ctx;
use crate::args::{PriceCommand, PriceSetArgs};
use crate::error::{CliError, CliResult};
use crate::output::{fields, table};
use crate::parse::When;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tracemeter::domain::attention::AttentionQuery;
use tracemeter::domain::ledger::LedgerState;
use tracemeter::domain::price_book::{PriceScope, PriceVersion, latest_at, version_id};
use tracemeter::ports::{PriceBook, PutVersion};

/// Runs a `price` verb.
pub(super) async fn run(ctx: &mut Ctx<'_, '_>, command: &PriceCommand) -> CliResult {
    match command {
        PriceCommand::Set(args) => set(ctx, args).await,
        PriceCommand::Show { customer, at } => show(ctx, customer.as_deref(), *at).await,
        PriceCommand::List { customer } => list(ctx, customer.as_deref()).await,
        PriceCommand::Index => index(ctx).await,
    }
}

fn scope_of(customer: Option<&str>) -> PriceScope {
    customer.map_or(PriceScope::Default, |c| PriceScope::Customer(c.to_string()))
}

/// A time to the millisecond (what the table keeps).
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The scope's stored versions and the default book's.
async fn books(
    ctx: &Ctx<'_, '_>,
    scope: &PriceScope,
) -> CliResult<(Vec<PriceVersion>, Vec<PriceVersion>)> {
    let book: &dyn PriceBook = ctx.deps.ledger;
    let defaults = book.versions(&PriceScope::Default).await?;
    let own = match scope {
        PriceScope::Default => Vec::new(),
        s => book.versions(s).await?,
    };
    Ok((defaults, own))
}

/// The version the arguments describe: the one in effect at `from` for the scope, with the
/// fields given replaced.
fn version_of(
    args: &PriceSetArgs,
    base: Option<&PriceVersion>,
    scope: PriceScope,
    from: DateTime<Utc>,
) -> CliResult<PriceVersion> {
    let field = |flag: &str, given: Option<Decimal>, was: Option<Decimal>| -> CliResult<Decimal> {
        given.or(was).ok_or_else(|| {
            CliError::Invalid(format!(
                "{flag} is required: no stored version is in effect at --from to take it from (the process function's variables are not known here)"
            ))
        })
    };
    let token_prices = match (args.token_price.is_empty(), base) {
        (true, Some(b)) => b.token_prices.clone(),
        _ => args.token_price.clone(),
    };
    let unpriced = args
        .unpriced
        .or(base.map(|b| b.unpriced))
        .unwrap_or_default();
    let v = PriceVersion {
        scope,
        effective_from: from,
        credit_price_usd: field(
            "--credit-price",
            args.credit_price,
            base.map(|b| b.credit_price_usd),
        )?,
        margin: field("--margin", args.margin, base.map(|b| b.margin))?,
        compute_usd_per_minute: field(
            "--compute-per-minute",
            args.compute_per_minute,
            base.map(|b| b.compute_usd_per_minute),
        )?,
        token_prices,
        token_prices_always: args.token_prices_always
            || base.is_some_and(|b| b.token_prices_always),
        unpriced,
    };
    v.validate().map_err(CliError::Invalid)?;
    Ok(v)
}

/// Refuses a customer tracemeter has never seen, unless `--new-customer`.
async fn check_customer(ctx: &Ctx<'_, '_>, args: &PriceSetArgs, has_plan: bool) -> CliResult {
    let Some(c) = args
        .customer
        .as_deref()
        .filter(|_| !args.new_customer && !has_plan)
    else {
        return Ok(());
    };
    let ledger = ctx.deps.ledger;
    if ledger.budget_policy(c).await?.is_some() || !ledger.counters(c).await?.is_empty() {
        return Ok(());
    }
    Err(CliError::Invalid(format!(
        "--customer {c}: unknown customer (no budget policy and never billed); check the id, or pass --new-customer for a plan set before its first use"
    )))
}

/// Refuses a version before now, or before the scope's last one, without `--backdate`.
fn check_time(
    args: &PriceSetArgs,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    last: Option<&PriceVersion>,
) -> CliResult {
    if args.backdate {
        return Ok(());
    }
    if from < now {
        return Err(CliError::Invalid(format!(
            "--from {}: before now ({}); a version may not take effect in the past unless --backdate (which prices only revisions not yet billed)",
            time(from),
            time(now)
        )));
    }
    match last.filter(|l| from < l.effective_from) {
        Some(l) => Err(CliError::Invalid(format!(
            "--from {}: before the last version {} of this scope; pass --backdate to insert it",
            time(from),
            l.id()
        ))),
        None => Ok(()),
    }
}

async fn set(ctx: &mut Ctx<'_, '_>, args: &PriceSetArgs) -> CliResult {
    let scope = scope_of(args.customer.as_deref());
    let from = millis(args.from.resolve(ctx.deps.clock.now()));
    let (defaults, own) = books(ctx, &scope).await?;
    check_customer(ctx, args, !own.is_empty()).await?;
    let stored = if scope == PriceScope::Default {
        &defaults
    } else {
        &own
    };
    check_time(args, from, ctx.deps.clock.now(), stored.last())?;
    let base = latest_at(stored, from).or_else(|| latest_at(&defaults, from));
    let version = version_of(args, base, scope.clone(), from)?;
    if stored.contains(&version) {
        return report_set(ctx, &version, false, None);
    }
    let unbilled = match args.backdate {
        true => Some(unbilled(ctx, &scope).await?),
        false => None,
    };
    let mut plan = format!("will add the price version {}", describe(&version));
    if let Some(n) = unbilled {
        plan.push_str(&format!(
            " (backdated: {n} failed trace(s) of this scope not yet billed, and every trace not yet processed, will be priced with it once (re)played; billed revisions keep their version)"
        ));
    }
    ctx.approve(&plan)?;
    let book: &dyn PriceBook = ctx.deps.ledger;
    match book.put_version(&version, ctx.deps.clock.now()).await? {
        PutVersion::Written => report_set(ctx, &version, true, unbilled),
        PutVersion::Unchanged => report_set(ctx, &version, false, unbilled),
        PutVersion::Conflict(other) => Err(CliError::Invalid(format!(
            "--from {}: another version is stored at that time: {}",
            time(from),
            describe(&other)
        ))),
    }
}

/// Failed entries of the scope that were never billed (their revision 0).
async fn unbilled(ctx: &Ctx<'_, '_>, scope: &PriceScope) -> CliResult<usize> {
    let failed = ctx
        .deps
        .ledger
        .needing_attention(&AttentionQuery::all(LedgerState::Failed))
        .await?;
    Ok(failed
        .iter()
        .filter(|f| f.entry.revision == 0)
        .filter(|f| match scope {
            PriceScope::Default => true,
            PriceScope::Customer(c) => f.entry.customer_id.as_deref().is_none_or(|e| e == c),
        })
        .count())
}

fn report_set(
    ctx: &mut Ctx<'_, '_>,
    v: &PriceVersion,
    changed: bool,
    unbilled: Option<usize>,
) -> CliResult {
    let mut value = json_of(v);
    value["changed"] = json!(changed);
    value["backdated_unbilled"] = json!(unbilled);
    ctx.out.report(&value, || match changed {
        true => format!("added {}\n", describe(v)),
        false => format!("{} is already stored: nothing to do\n", v.id()),
    })
}

async fn show(ctx: &mut Ctx<'_, '_>, customer: Option<&str>, at: Option<When>) -> CliResult {
    let scope = scope_of(customer);
    let now = ctx.deps.clock.now();
    let at = at.map_or(now, |w| w.resolve(now));
    let (defaults, own) = books(ctx, &scope).await?;
    let found = latest_at(&own, at).or_else(|| latest_at(&defaults, at));
    let Some(v) = found else {
        let id = version_id(&PriceScope::Default, DateTime::UNIX_EPOCH);
        let value = json!({"at": time(at), "version": id, "from_variables": true});
        return ctx.out.report(&value, || {
            format!("{id}: the process function's variables (CREDIT_PRICE_USD, MARGIN, COMPUTE_USD_PER_MINUTE), unpriced usage compute_only\n")
        });
    };
    let value = json!({"at": time(at), "version": json_of(v)});
    ctx.out.report(&value, || human(v))
}

async fn list(ctx: &mut Ctx<'_, '_>, customer: Option<&str>) -> CliResult {
    let scope = scope_of(customer);
    let (defaults, own) = books(ctx, &scope).await?;
    let versions = if scope == PriceScope::Default {
        defaults
    } else {
        own
    };
    let value = Value::Array(versions.iter().map(json_of).collect());
    let rows: Vec<Vec<String>> = versions.iter().map(row).collect();
    ctx.out.report(&value, || {
        let headers = [
            "version",
            "credit price",
            "margin",
            "compute/min",
            "token prices",
            "unpriced",
        ];
        let note = match scope {
            PriceScope::Default => {
                "before the first version from the epoch: the process function's variables\n"
            }
            PriceScope::Customer(_) => {
                "times without a version of the customer: the default book\n"
            }
        };
        format!(
            "{}{} version(s); {note}",
            table(&headers, &rows),
            versions.len()
        )
    })
}

async fn index(ctx: &mut Ctx<'_, '_>) -> CliResult {
    ctx.approve(
        "will scan the table once for price versions and mark the index of customers with prices of their own complete",
    )?;
    let book: &dyn PriceBook = ctx.deps.ledger;
    let found = book.build_index().await?;
    let value = json!({"complete": true, "customers": found});
    ctx.out.report(&value, || {
        format!(
            "the price index is complete: {} customer(s) with prices of their own{}\n",
            found.len(),
            match found.is_empty() {
                true => String::new(),
                false => format!(
                    " ({})",
                    found.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        )
    })
}

fn tokens(v: &PriceVersion) -> String {
    let t: Vec<String> = v
        .token_prices
        .iter()
        .map(|t| {
            format!(
                "{}={}:{}",
                t.pattern, t.input_per_million, t.output_per_million
            )
        })
        .collect();
    let always = if v.token_prices_always {
        " (always)"
    } else {
        ""
    };
    match t.is_empty() {
        true => "-".into(),
        false => format!("{}{always}", t.join(" ")),
    }
}

fn row(v: &PriceVersion) -> Vec<String> {
    vec![
        v.id(),
        v.credit_price_usd.to_string(),
        v.margin.to_string(),
        v.compute_usd_per_minute.to_string(),
        tokens(v),
        v.unpriced.as_str().to_string(),
    ]
}

fn describe(v: &PriceVersion) -> String {
    format!(
        "{}: {} USD/credit, margin {}, {} USD/min, token prices {}, unpriced {}",
        v.id(),
        v.credit_price_usd,
        v.margin,
        v.compute_usd_per_minute,
        tokens(v),
        v.unpriced.as_str()
    )
}

fn human(v: &PriceVersion) -> String {
    fields(&[
        ("version", v.id()),
        ("scope", v.scope.key().to_string()),
        (
            "from",
            v.effective_from
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
        ("credit price", format!("{} USD", v.credit_price_usd)),
        ("margin", v.margin.to_string()),
        ("compute", format!("{} USD/min", v.compute_usd_per_minute)),
        ("token prices", tokens(v)),
        ("unpriced", v.unpriced.as_str().to_string()),
    ])
}

fn json_of(v: &PriceVersion) -> Value {
    json!({
        "id": v.id(),
        "scope": v.scope.key(),
        "effective_from": v.effective_from.to_rfc3339_opts(SecondsFormat::Millis, true),
        "credit_price_usd": v.credit_price_usd.to_string(),
        "margin": v.margin.to_string(),
        "compute_usd_per_minute": v.compute_usd_per_minute.to_string(),
        "token_prices": v.token_prices.iter().map(|t| json!({
            "pattern": t.pattern, "input_per_million": t.input_per_million.to_string(),
            "output_per_million": t.output_per_million.to_string()})).collect::<Vec<_>>(),
        "token_prices_always": v.token_prices_always,
        "unpriced": v.unpriced.as_str(),
    })
}
