//! The DynamoDB grants each function's code needs, as recorded: the real ingest and process
//! handlers on the local stack, every AWS call through the counting proxy in front of moto
//! (`tracemeter_local::counting_proxy`, which reads each call's actions and item families),
//! over the paths the integration tests take: an ingest run (lease, cursor, coverage, the
//! request budget), then the process handler billing soft- and hard-limited customers past
//! their thresholds and limit, a customer mapped from a Langfuse user, an unmapped trace, a
//! malformed message, the billed traces delivered again, a claim taken over after a crash and
//! a covered message confirmed by a strong read. `table_scope` checks that the template grants
//! exactly these.

use crate::common::{CrashOnce, event, event_for, now, trace};
use chrono::Duration;
use std::collections::{BTreeMap, BTreeSet};
use tracemeter::domain::budget::{BudgetMode, BudgetPolicy, Period};
use tracemeter::domain::message::MeterMessage;
use tracemeter_local::counting_proxy::{CountingProxy, Grants};
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::faults::{NoFaults, Step};
use tracemeter_local::harness::{StackOptions, TestStack};
use tracemeter_local::stack::Moto;

/// Role -> item family (`TRACE#`, ...) -> DynamoDB actions.
pub type Scope = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// What each function's role was seen needing.
pub async fn recorded() -> Scope {
    let moto = Moto::try_shared().expect("moto");
    let proxy = CountingProxy::start(moto.endpoint()).await.expect("proxy");
    let options = StackOptions {
        aws_endpoint: Some(proxy.url()),
        ..StackOptions::default()
    }
    .var("LANGFUSE_REQUESTS_PER_MINUTE", 1_000);
    let stack = TestStack::start_with("iamcalls", options)
        .await
        .expect("stack");
    seed(&stack).await;
    proxy.reset();

    let ingest = stack.ingest(&[("LANGFUSE_REQUESTS_PER_MINUTE", "1000")]);
    let summary = ingest.run(&stack).await.expect("ingest run");
    assert!(summary.enqueued >= 5, "{summary:?}");
    let ingest_grants = proxy.grants();
    proxy.reset();

    stack
        .send_bodies(&["this is not json".to_string()])
        .await
        .expect("send");
    stack.drain(20).await.expect("drained");
    let billed = ["iam-soft", "iam-hard-1", "iam-hard-2", "iam-mapped"];
    stack.send_traces(&billed).await.expect("send");
    stack.drain(20).await.expect("drained again");
    resume_and_confirm(&stack).await;
    let process_grants = proxy.grants();
    assert!(
        stack.stripe.events().len() >= 4,
        "{:?}",
        stack.stripe.events()
    );

    BTreeMap::from([
        ("IngestFunctionRole".to_string(), by_family(ingest_grants)),
        ("ProcessFunctionRole".to_string(), by_family(process_grants)),
    ])
}

/// The process paths past a crash: an invocation dies after Stripe accepted its event, so the
/// claim is left with its receipt unwritten; once its lease ran out the next invocation takes
/// it over (checking the receipt in the same transaction). Then a message carrying the newest
/// observation ingest saw, which the entry covers: acknowledged only after a strong read.
async fn resume_and_confirm(stack: &TestStack) {
    let id = "iam-crash".to_string();
    let at = now() - Duration::hours(1);
    // Added after ingest's run: only this invocation meets it.
    let customer = "cus_iam_crash";
    stack.langfuse.add_trace(trace(&id, customer, 0.004, 0, at));
    let crashed = stack
        .invoke_with(&CrashOnce::at(Step::AfterStripe), event_for(&[&id]))
        .await;
    assert!(crashed.is_err(), "the injected crash fails the invocation");
    stack.clock.advance(Duration::seconds(60));
    let resumed = stack.invoke_with(&NoFaults, event_for(&[&id])).await;
    assert!(resumed.expect("no crash").batch_item_failures.is_empty());
    // (Checked on Stripe's side: reading the ledger here would record the test's own calls.)
    let sent = stack
        .stripe
        .events()
        .iter()
        .filter(|e| e.identifier.contains(&id))
        .count();
    assert_eq!(sent, 1, "billed once across the crash");
    let mut covered = MeterMessage::new(&id);
    covered.newest_observation = Some(at);
    let again = event(&[("iam-covered", covered.to_body())]);
    let answer = stack.invoke_with(&NoFaults, again).await;
    assert!(answer.expect("no crash").batch_item_failures.is_empty());
}

/// Budgets, a user mapping and the traces (setup: before the recording starts).
async fn seed(stack: &TestStack) {
    let policy = |limit, mode, thresholds| BudgetPolicy {
        limit: Some(limit),
        period: Period::Month,
        mode,
        thresholds,
    };
    let ledger = &stack.ledger;
    let soft = policy(150, BudgetMode::Soft, vec![50]);
    let hard = policy(150, BudgetMode::Hard, vec![50, 100]);
    ledger
        .put_budget_policy("cus_iam_soft", &soft)
        .await
        .expect("policy");
    ledger
        .put_budget_policy("cus_iam_hard", &hard)
        .await
        .expect("policy");
    ledger
        .put_user_mapping("u-iam", "cus_iam_mapped")
        .await
        .expect("mapping");
    let at = now() - Duration::hours(1);
    let langfuse = &stack.langfuse;
    langfuse.add_trace(trace("iam-soft", "cus_iam_soft", 0.004, 0, at));
    langfuse.add_trace(trace("iam-hard-1", "cus_iam_hard", 0.004, 0, at));
    langfuse.add_trace(trace("iam-hard-2", "cus_iam_hard", 0.004, 0, at));
    let generation =
        FakeObservation::generation("iam-o", "iam-mapped", at, at, "gpt-4o", 1, 1, 0.004);
    langfuse.add_trace(
        FakeTrace::new("iam-mapped", at)
            .user("u-iam")
            .observation(generation),
    );
    let unmapped =
        FakeObservation::generation("iam-u", "iam-unmapped", at, at, "gpt-4o", 1, 1, 0.004);
    langfuse.add_trace(FakeTrace::new("iam-unmapped", at).observation(unmapped));
}

fn by_family(grants: Grants) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (action, family) in grants {
        out.entry(family).or_default().insert(action);
    }
    out
}
