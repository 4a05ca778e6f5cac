//! The price version a trace revision is priced with: the one its ledger entry recorded (a
//! later revision of a billed trace is never looked up again, so its delta never re-prices
//! usage already billed), else the version in effect at the usage time for its customer.

use crate::Deps;
use chrono::{DateTime, Utc};
use tracemeter::domain::ledger::LedgerEntry;
use tracemeter::domain::price_book::{CustomerBook, PriceScope, PriceVersion};
use tracemeter::{Error, Result};

/// The version for this revision of the trace of `customer_id` used at `usage_at`.
pub(crate) async fn version_for(
    deps: &Deps<'_>,
    entry: Option<&LedgerEntry>,
    customer_id: &str,
    usage_at: DateTime<Utc>,
) -> Result<PriceVersion> {
    if let Some(id) = entry.and_then(|e| e.price_version.as_deref()) {
        return recorded(deps, id, customer_id).await;
    }
    let book = book(deps, customer_id, usage_at).await?;
    book.version_at(usage_at).cloned().ok_or_else(|| {
        // Unreachable: the variables' version is effective from the epoch.
        Error::transient(
            "dynamodb",
            format!("no price version in effect at {usage_at}"),
        )
    })
}

/// The recorded version, found in the book of its own scope (read again when the cached copy
/// does not have it yet: another instance wrote a newer version).
async fn recorded(deps: &Deps<'_>, id: &str, customer_id: &str) -> Result<PriceVersion> {
    let owner = match id
        .rsplit_once('@')
        .map(|(scope, _)| PriceScope::parse(scope))
    {
        Some(PriceScope::Customer(c)) => c,
        _ => customer_id.to_string(),
    };
    for at in [DateTime::UNIX_EPOCH, DateTime::<Utc>::MAX_UTC] {
        if let Some(v) = book(deps, &owner, at).await?.by_id(id) {
            return Ok(v.clone());
        }
    }
    Err(Error::transient(
        "dynamodb",
        format!("price version {id} recorded on the ledger entry is not in the price book"),
    ))
}

async fn book(deps: &Deps<'_>, customer_id: &str, at: DateTime<Utc>) -> Result<CustomerBook> {
    let defaults = deps.prices.versions_for(&PriceScope::Default, at).await?;
    let own = deps
        .prices
        .versions_for(&PriceScope::Customer(customer_id.to_string()), at)
        .await?;
    Ok(CustomerBook::new(&deps.config.pricing, defaults, own))
}
