//! The price book's contract: versions read back as written, oldest first, per scope; the
//! conditional put stores one version once, refuses a different one at the same time, and
//! concurrent writers of the same version all end with it stored once; the index names every
//! customer with versions once it is complete, and is not trusted before.

use super::Seeding;
use crate::domain::price_book::{PriceScope, PriceVersion, ScopeIndex, TokenPrice, UnpricedRule};
use crate::ports::{PriceBook, PutVersion};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeSet;

fn version(scope: &PriceScope, from: DateTime<Utc>, credit: i64) -> PriceVersion {
    PriceVersion {
        scope: scope.clone(),
        effective_from: from,
        credit_price_usd: Decimal::new(credit, 5),
        margin: Decimal::new(125, 2),
        compute_usd_per_minute: Decimal::new(5, 2),
        token_prices: vec![TokenPrice {
            pattern: "gpt-4o*".into(),
            input_per_million: Decimal::new(25, 1),
            output_per_million: Decimal::from(10),
        }],
        token_prices_always: false,
        unpriced: UnpricedRule::Hold,
    }
}

/// Versions are stored once per scope and time and read back as written, oldest first.
pub async fn price_versions_are_written_once_and_read_in_order(book: &dyn PriceBook) {
    let scope = PriceScope::Customer("cus_price_contract".into());
    let other = PriceScope::Customer("cus_price_other".into());
    let t0 = super::now();
    let later = version(&scope, t0 + Duration::days(2), 3);
    let first = version(&scope, t0 + Duration::days(1), 4);
    let put = |v: PriceVersion| async move { book.put_version(&v, t0).await.expect("put") };
    assert_eq!(put(later.clone()).await, PutVersion::Written);
    assert_eq!(put(first.clone()).await, PutVersion::Written);
    assert_eq!(
        put(first.clone()).await,
        PutVersion::Unchanged,
        "same version twice"
    );
    let different = version(&scope, first.effective_from, 9);
    assert_eq!(
        put(different).await,
        PutVersion::Conflict(Box::new(first.clone())),
        "another version at the same time is refused"
    );
    assert_eq!(
        book.versions(&scope).await.expect("versions"),
        vec![first, later]
    );
    assert!(book.versions(&other).await.expect("other").is_empty());
}

/// Concurrent writers of one version: one writes it, the others find it unchanged.
pub async fn concurrent_price_sets_store_one_version(book: &dyn PriceBook) {
    let scope = PriceScope::Customer("cus_price_race".into());
    let v = version(&scope, super::now() + Duration::days(1), 4);
    let puts = (0..6).map(|_| book.put_version(&v, super::now()));
    let results = futures::future::join_all(puts).await;
    let written = results
        .iter()
        .filter(|r| matches!(r, Ok(PutVersion::Written)))
        .count();
    assert_eq!(written, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(PutVersion::Written | PutVersion::Unchanged))),
        "{results:?}"
    );
    assert_eq!(book.versions(&scope).await.expect("versions"), vec![v]);
}

/// The index: unknown until built (or, built, blind to versions stored without it: an older
/// release's); `build_index` finds those, marks it complete and leaves the default versions
/// in the same read; a customer's version put after that is named at once.
pub async fn the_price_index_names_every_customer_with_versions(
    book: &dyn PriceBook,
    seed: &dyn Seeding,
) {
    let t0 = super::now();
    let default = version(&PriceScope::Default, t0 - Duration::days(3), 2);
    let old = PriceScope::Customer("cus_index_old".into());
    let new = PriceScope::Customer("cus_index_new".into());
    book.put_version(&default, t0).await.expect("default");
    seed.seed_unindexed_price(&version(&old, t0 - Duration::days(2), 3))
        .await
        .expect("an older release's version");
    let before = book.default_book().await.expect("read");
    assert_eq!(before.versions, vec![default.clone()]);
    // A fresh ledger's index is not built (unknown); one built before the older release's
    // write (a stack that ran `price index` at start) does not name its customer.
    let missed = match &before.index {
        ScopeIndex::Unknown => true,
        complete => !complete.may_hold("cus_index_old"),
    };
    assert!(missed, "{:?}", before.index);
    let found = book.build_index().await.expect("build");
    assert_eq!(found, BTreeSet::from(["cus_index_old".to_string()]));
    book.put_version(&version(&new, t0 - Duration::days(1), 4), t0)
        .await
        .expect("new");
    let after = book.default_book().await.expect("read");
    assert_eq!(after.versions, vec![default], "the index is no version");
    let named = BTreeSet::from(["cus_index_new".to_string(), "cus_index_old".to_string()]);
    assert_eq!(after.index, ScopeIndex::Complete(named));
    assert!(!after.index.may_hold("cus_index_none"));
    assert_eq!(
        book.build_index().await.expect("again"),
        BTreeSet::from(["cus_index_new".to_string(), "cus_index_old".to_string()]),
        "building again finds every customer and changes nothing"
    );
}
