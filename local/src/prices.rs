//! The sample's price book: a default price change in the middle of the sample's usage and a
//! customer's discount, so the local run's summary shows both.

use crate::harness::TestStack;
use anyhow::{Result, bail};
use chrono::{DateTime, Duration, DurationRound, Utc};
use tracemeter::domain::price_book::{PriceScope, PriceVersion};
use tracemeter::ports::{PriceBook, PutVersion};

/// The discounted customer (a plan with margin 0.8: 20 % off).
pub const DISCOUNTED: &str = "cus_globex";

/// The versions for a sample generated at `now`: the default margin rises to 1.2 three hours
/// before `now` (most of the sample's recent usage is within 6 hours), and [`DISCOUNTED`]
/// pays 80 % from 30 days before.
pub fn sample_prices(base: &PriceVersion, now: DateTime<Utc>) -> Vec<PriceVersion> {
    let hour = |t: DateTime<Utc>| t.duration_trunc(Duration::hours(1)).unwrap_or(t);
    let change = PriceVersion {
        effective_from: hour(now - Duration::hours(3)),
        margin: base.margin * rust_decimal::Decimal::new(12, 1),
        ..base.clone()
    };
    let discount = PriceVersion {
        scope: PriceScope::Customer(DISCOUNTED.to_string()),
        effective_from: hour(now - Duration::days(30)),
        margin: base.margin * rust_decimal::Decimal::new(8, 1),
        ..base.clone()
    };
    vec![change, discount]
}

/// Writes the sample's versions to the stack's table; their one-line descriptions.
pub async fn seed_prices(stack: &TestStack, now: DateTime<Utc>) -> Result<Vec<String>> {
    let base = PriceVersion::from_variables(&stack.config.pricing);
    let mut lines = vec![describe(&base, "the variables")];
    for v in sample_prices(&base, now) {
        match stack.ledger.put_version(&v, now).await? {
            PutVersion::Written | PutVersion::Unchanged => {}
            PutVersion::Conflict(other) => bail!("price version {} differs: {other:?}", v.id()),
        }
        let why = match v.scope {
            PriceScope::Default => "price change",
            PriceScope::Customer(_) => "customer discount",
        };
        lines.push(describe(&v, why));
    }
    Ok(lines)
}

fn describe(v: &PriceVersion, why: &str) -> String {
    format!(
        "{} ({why}): {} USD/credit, margin {}, {} USD/min",
        v.id(),
        v.credit_price_usd,
        v.margin.normalize(),
        v.compute_usd_per_minute
    )
}

/// The reliability suite's price change: from three hours before `now` (the middle of the
/// sample's recent usage) the default margin doubles, written before processing starts (a
/// backdated version); when it takes effect.
pub async fn doubled_margin(stack: &TestStack, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let base = PriceVersion::from_variables(&stack.config.pricing);
    let from = (now - Duration::hours(3))
        .duration_trunc(Duration::hours(1))
        .unwrap_or(now);
    let doubled = PriceVersion {
        effective_from: from,
        margin: base.margin * rust_decimal::Decimal::from(2),
        ..base
    };
    if let PutVersion::Conflict(other) = stack.ledger.put_version(&doubled, now).await? {
        bail!("price version {} differs: {other:?}", doubled.id());
    }
    Ok(from)
}
