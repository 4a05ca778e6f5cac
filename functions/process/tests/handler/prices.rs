//! The price book: a revision is priced by the version in effect at its usage time for its
//! customer, late revisions at the version recorded on the entry, unpriced usage counted or
//! held.

use super::*;
use process::Handled;
use tracemeter::domain::price_book::{PriceScope, PriceVersion, TokenPrice, UnpricedRule};
use tracemeter::domain::usage::ModelTokens;
use tracemeter::error::FailureReason;
use tracemeter::ports::{PriceBook, PutVersion};

fn dec(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

/// The variables' prices (0.00004 USD a credit, margin 1, 0.05 USD a minute) from `from`.
fn version(scope: PriceScope, from: DateTime<Utc>) -> PriceVersion {
    PriceVersion {
        scope,
        effective_from: from,
        ..PriceVersion::from_variables(&Default::default())
    }
}

fn customer(id: &str) -> PriceScope {
    PriceScope::Customer(id.to_string())
}

impl World {
    async fn set_price(&self, v: PriceVersion) {
        let put = self.ledger.put_version(&v, self.now()).await.expect("put");
        assert_eq!(put, PutVersion::Written);
    }

    /// Runs the handler on one batch; the whole answer (tally included).
    async fn handle(&self, trace_ids: &[&str]) -> Handled {
        let deps = Deps {
            config: &self.config,
            usage: &self.usage,
            meter: &self.meter,
            ledger: &self.ledger,
            prices: &self.ledger,
            redelivery: &self.queue,
            clock: &*self.clock,
        };
        let bodies: Vec<String> = trace_ids.iter().map(|id| body(id)).collect();
        process::handle(&deps, event(&bodies), self.now() + Duration::seconds(30)).await
    }

    /// A trace with one observation of `model` reporting tokens and no cost, `latency` s long.
    fn unpriced_trace(&self, id: &str, cus: &str, model: &str, latency: &str, at: DateTime<Utc>) {
        let mut u = usage(id, "0", at);
        u.latency_seconds = dec(latency);
        u.metadata.insert("stripeCustomerId".into(), cus.into());
        u.tokens = vec![ModelTokens {
            model: model.into(),
            input: 1_000_000,
            output: 100_000,
            cost_usd: None,
        }];
        self.usage.put(u);
    }
}

#[tokio::test]
async fn the_default_configuration_bills_what_it_billed_before() {
    // GIVEN no price book items, then only the variables' version written to the table
    for seeded in [false, true] {
        let world = World::new();
        if seeded {
            world
                .set_price(PriceVersion::from_variables(&world.config.pricing))
                .await;
        }
        let at = an_hour_ago(&world);
        world.trace("t1", "cus_1", "0.004", at);
        world.unpriced_trace("t2", "cus_1", "my-ft", "90", at);

        // WHEN both are metered
        let handled = world.handle(&["t1", "t2"]).await;

        // THEN the credits are today's (0.004 USD = 100; 90 s of compute only = 1875), and
        // the entries record the default first version
        assert_eq!(
            world.meter.events().iter().map(|e| e.value).sum::<u64>(),
            C_0004 + 1875
        );
        let e = world.entry("t1").await;
        assert_eq!(
            e.price_version.as_deref(),
            Some("default@1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            handled.tally.unpriced, 1,
            "the compute-only trace is counted"
        );
        assert!(
            handled
                .metrics()
                .iter()
                .any(|m| format!("{m:?}").contains("TracesUnpriced"))
        );
    }
}

#[tokio::test]
async fn a_price_change_mid_month_prices_usage_by_its_time() {
    // GIVEN the default credit price doubles 2 hours ago
    let world = World::new();
    let change = world.now() - Duration::hours(2);
    let mut doubled = version(PriceScope::Default, change);
    doubled.credit_price_usd = dec("0.00008");
    world.set_price(doubled.clone()).await;
    world.trace("before", "cus_1", "0.004", change - Duration::hours(1));
    world.trace("after", "cus_1", "0.004", change + Duration::minutes(30));

    // WHEN both are metered
    world.meter(&["before", "after"]).await;

    // THEN usage before the change is billed at the old price, after it at the new one
    assert_eq!(world.entry("before").await.billed_credits, C_0004);
    assert_eq!(world.entry("after").await.billed_credits, C_0004 / 2);
    assert_eq!(world.entry("after").await.price_version, Some(doubled.id()));
}

#[tokio::test]
async fn a_late_cost_bills_exactly_the_delta_at_the_recorded_price() {
    // GIVEN a trace billed 100 credits at the default first version
    let world = World::new();
    let at = an_hour_ago(&world);
    world.trace("t1", "cus_1", "0.004", at);
    world.meter(&["t1"]).await;
    // AND THEN a backdated price change that would price its usage at half
    let mut doubled = version(PriceScope::Default, at - Duration::hours(1));
    doubled.credit_price_usd = dec("0.00008");
    world.set_price(doubled).await;

    // WHEN a late observation raises its cost to 0.006 USD
    world.trace("t1", "cus_1", "0.006", at);
    world.meter(&["t1"]).await;

    // THEN exactly the delta at the trace's recorded price is billed: 150 - 100 = 50 (at the
    // new price the trace would cost 75, and nothing would be billed)
    let values: Vec<u64> = world.meter.events().iter().map(|e| e.value).collect();
    assert_eq!(values, vec![C_0004, 50]);
    let e = world.entry("t1").await;
    assert_eq!((e.revision, e.total_credits), (2, 150));
    assert_eq!(
        e.price_version.as_deref(),
        Some("default@1970-01-01T00:00:00.000Z")
    );
}

#[tokio::test]
async fn a_customer_discount_and_byo_key_under_a_customer_plan() {
    // GIVEN cus_disc's plan: 20 % off (margin 0.8), compute at 0.10 USD a minute
    let world = World::new();
    let at = an_hour_ago(&world);
    let mut plan = version(customer("cus_disc"), at - Duration::days(1));
    plan.margin = dec("0.8");
    plan.compute_usd_per_minute = dec("0.10");
    world.set_price(plan.clone()).await;
    world.trace("full", "cus_1", "0.004", at);
    world.trace("disc", "cus_disc", "0.004", at);
    // AND a BYO-key trace of cus_disc: 1.5 USD of model cost on their key, 60 s long
    let mut byo = usage("byo", "1.5", at);
    byo.latency_seconds = dec("60");
    byo.metadata
        .insert("stripeCustomerId".into(), "cus_disc".into());
    byo.metadata
        .insert("aiCredentialsOwnership".into(), "user".into());
    world.usage.put(byo);

    // WHEN they are metered
    world.meter(&["full", "disc", "byo"]).await;

    // THEN cus_1 pays the default, cus_disc 80 %, and the BYO trace only the plan's compute:
    // 0.10 USD x 0.8 / 0.00004 = 2000 credits
    assert_eq!(world.entry("full").await.billed_credits, C_0004);
    assert_eq!(world.entry("disc").await.billed_credits, 80);
    assert_eq!(world.entry("byo").await.billed_credits, 2000);
    assert_eq!(world.entry("disc").await.price_version, Some(plan.id()));
}

#[tokio::test]
async fn a_model_without_cost_is_held_then_billed_after_a_token_price_is_added() {
    // GIVEN the default book holds unpriced usage
    let world = World::new();
    let at = an_hour_ago(&world);
    let mut hold = version(PriceScope::Default, at - Duration::days(2));
    hold.unpriced = UnpricedRule::Hold;
    world.set_price(hold.clone()).await;
    world.unpriced_trace("t1", "cus_1", "my-ft", "60", at);

    // WHEN it is metered
    let handled = world.handle(&["t1"]).await;

    // THEN it fails for good as unpriced_model naming the model; nothing is billed
    assert!(failures(&handled.response).is_empty());
    assert_eq!(handled.tally.unpriced, 1);
    let e = world.entry("t1").await;
    assert_eq!(
        (e.state, e.reason.as_deref()),
        (
            LedgerState::Failed,
            Some(FailureReason::UnpricedModel.as_str())
        )
    );
    assert!(
        e.detail.as_deref().is_some_and(|d| d.contains("my-ft")),
        "{e:?}"
    );
    assert!(world.meter.events().is_empty());

    // WHEN a (backdated) version prices my-ft at 1 USD in / 2 USD out per million tokens,
    // and the trace is replayed
    let mut priced = version(PriceScope::Default, at - Duration::days(1));
    priced.unpriced = UnpricedRule::Hold;
    priced.token_prices = vec![TokenPrice {
        pattern: "my-*".into(),
        input_per_million: dec("1"),
        output_per_million: dec("2"),
    }];
    world.set_price(priced.clone()).await;
    world.meter(&["t1"]).await;

    // THEN it is billed: (1 + 0.2 tokens' USD + 0.05 compute) / 0.00004 = 31250 credits
    let e = world.entry("t1").await;
    assert_eq!((e.state, e.billed_credits), (LedgerState::Metered, 31_250));
    assert_eq!(e.price_version, Some(priced.id()));
}
