//! The `tracemeter` operator command on the local stack: its library entry point with the
//! real adapters (DynamoDB and SQS on moto), the real process handler and the Stripe fake;
//! and the binary itself for its configuration.

use crate::common::{CrashOnce, entry, function_binary, now, trace};
use chrono::Duration;
use serde_json::Value;
use tracemeter::adapters::dead_letters::SqsDeadLetters;
use tracemeter::adapters::sqs::SqsSender;
use tracemeter::adapters::stripe_events::StripeEvents;
use tracemeter::adapters::stripe_reports::StripeReports;
use tracemeter::domain::budget::{BudgetUsage, Period};
use tracemeter::domain::ledger::LedgerState;
use tracemeter::ports::BudgetStore;
use tracemeter_cli::confirm::Answer;
use tracemeter_cli::{Deps, execute, parse};
use tracemeter_local::fakes::langfuse::{FakeObservation, FakeTrace};
use tracemeter_local::faults::Step;
use tracemeter_local::harness::{IngestRig, StackOptions, TestStack};

#[path = "cli_price.rs"]
mod price;

/// The command wired to a stack, answering "no" when asked.
pub(crate) struct Command<'s> {
    stack: &'s TestStack,
    queue: SqsSender,
    dlq: SqsDeadLetters,
    meter: StripeReports,
    errors: StripeEvents,
    ingest: IngestRig,
}

/// What a run printed and returned.
pub(crate) struct Run {
    pub(crate) code: u8,
    pub(crate) out: String,
    pub(crate) err: String,
}

impl<'s> Command<'s> {
    pub(crate) fn on(stack: &'s TestStack) -> Command<'s> {
        let r = &stack.resources;
        Command {
            stack,
            queue: SqsSender::new(stack.sqs.clone(), &r.queue_url),
            dlq: SqsDeadLetters::new(stack.sqs.clone(), &r.dlq_url, &r.queue_url),
            meter: StripeReports::new(&stack.config.stripe, stack.stripe_key.clone(), "mtr_fake")
                .expect("reports"),
            errors: StripeEvents::new(&stack.config.stripe, stack.stripe_key.clone())
                .expect("events"),
            ingest: stack.ingest(&[]),
        }
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        // A refusal while parsing is what the binary prints and exits with.
        let cli = match parse(std::iter::once("tracemeter").chain(args.iter().copied())) {
            Ok(cli) => cli,
            Err(e) => {
                return Run {
                    code: u8::try_from(e.exit_code()).unwrap_or(u8::MAX),
                    out: String::new(),
                    err: e.to_string(),
                };
            }
        };
        let rig = &self.ingest;
        let ingest = ingest::Deps {
            config: &rig.config,
            lister: &rig.lister,
            store: &rig.store,
            queue: &rig.sqs,
            clock: &self.stack.clock,
        };
        let deps = Deps {
            ledger: &self.stack.ledger,
            queue: &self.queue,
            dead_letters: Some(&self.dlq),
            meter: Some(&self.meter),
            meter_errors: Some(&self.errors),
            ingest: Some(&ingest),
            default_budget: &self.stack.config.default_budget,
            clock: &self.stack.clock,
            confirm: &Answer(false),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = execute(&cli, &deps, &mut out, &mut err).await;
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
        Run {
            code,
            out: text(out),
            err: text(err),
        }
    }

    /// Runs with `--json`; the report, which must come with exit code 0.
    pub(crate) async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.run(&all).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.err);
        serde_json::from_str(&run.out).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", run.out))
    }
}

/// A trace of Langfuse user `user`, with no customer in its metadata.
fn user_trace(id: &str, user: &str) -> FakeTrace {
    let at = now() - Duration::hours(1);
    let generation = FakeObservation::generation(
        format!("{id}-gen"),
        id,
        at,
        at,
        "gpt-4o-mini",
        1200,
        300,
        0.004,
    );
    FakeTrace::new(id, at).user(user).observation(generation)
}

/// Credits the Stripe fake received for `customer`.
fn stripe_total(stack: &TestStack, customer: &str) -> u64 {
    stack
        .stripe
        .totals_by_customer()
        .get(customer)
        .copied()
        .unwrap_or(0)
}

/// The customer's monthly counter now.
async fn usage(stack: &TestStack, customer: &str) -> BudgetUsage {
    let period =
        Period::Month.key(tracemeter::clock::Clock::now(&stack.clock) - Duration::hours(1));
    stack
        .ledger
        .budget_usage(customer, &period)
        .await
        .expect("usage")
}

/// The credits counted in the customer's monthly counter now.
async fn counter(stack: &TestStack, customer: &str) -> u64 {
    usage(stack, customer).await.used
}

#[tokio::test]
async fn a_replay_after_the_mapping_bills_the_trace_once() {
    let stack = TestStack::start("cli-replay").await.expect("stack");
    let cli = Command::on(&stack);
    stack.langfuse.add_trace(user_trace("cr-1", "cr-user"));
    stack.send_traces(&["cr-1"]).await.expect("send");
    stack.drain(10).await.expect("drain");
    let failed = cli
        .json(&["failures", "list", "--reason", "unmapped_customer"])
        .await;
    assert_eq!(failed[0]["trace_id"], "cr-1", "{failed}");
    assert_eq!(failed.as_array().map(Vec::len), Some(1));
    let shown = cli.json(&["trace", "show", "cr-1"]).await;
    assert_eq!(
        (&shown["state"], &shown["reason"]),
        (&"failed".into(), &"unmapped_customer".into())
    );

    let unconfirmed = cli.run(&["customer", "map", "cr-user", "cus_cr"]).await;
    assert_eq!(
        unconfirmed.code, 4,
        "asked, answered no: {}",
        unconfirmed.err
    );
    let nobody =
        tracemeter::ports::CustomerDirectory::customer_for_user(&stack.ledger, "cr-user").await;
    assert_eq!(nobody.expect("read"), None);
    let mapped = cli
        .json(&["customer", "map", "cr-user", "cus_cr", "--yes"])
        .await;
    assert_eq!(mapped["changed"], true);
    assert_eq!(
        cli.json(&["customer", "map", "cr-user", "cus_cr"]).await["changed"],
        false,
        "no question when nothing changes"
    );

    // Two replays before the processor runs, one after: billed once.
    let first = cli
        .json(&["replay", "--reason", "unmapped_customer", "--yes"])
        .await;
    assert_eq!(first["sent"], 1);
    let second = cli.json(&["replay", "--trace", "cr-1", "--yes"]).await;
    assert_eq!(second["sent"], 1, "still failed: sent again");
    stack.drain(10).await.expect("drain");
    let third = cli.json(&["replay", "--trace", "cr-1", "--yes"]).await;
    assert_eq!(
        (&third["sent"], &third["skipped"][0]["why"]),
        (&0.into(), &"metered, not failed".into())
    );
    let events = stack.stripe.events();
    assert_eq!(events.len(), 1, "billed once: {events:?}");
    let e = entry(&stack, "cr-1").await;
    assert_eq!(
        (e.state, e.billed_credits),
        (LedgerState::Metered, events[0].value)
    );
    assert_eq!(counter(&stack, "cus_cr").await, events[0].value);
    let shown = cli.json(&["trace", "show", "cr-1"]).await;
    assert_eq!(shown["identifiers"][0], events[0].identifier);
    assert_eq!(shown["budget_counter"]["used"], events[0].value);
    let listed = cli.json(&["failures", "list"]).await;
    assert!(listed.as_array().is_some_and(Vec::is_empty), "{listed}");

    let unmapped = cli.json(&["customer", "unmap", "cr-user", "--yes"]).await;
    assert_eq!(
        (&unmapped["changed"], &unmapped["was"]),
        (&true.into(), &"cus_cr".into())
    );
    assert_eq!(
        cli.json(&["customer", "unmap", "cr-user"]).await["changed"],
        false
    );
}

#[tokio::test]
async fn budget_set_then_show_round_trips_and_records_alerts_once() {
    let stack = TestStack::start("cli-budget").await.expect("stack");
    let cli = Command::on(&stack);
    let at = now() - Duration::hours(1);
    stack
        .langfuse
        .add_trace(trace("cb-1", "cus_cb", 0.004, 0, at));
    stack.send_traces(&["cb-1"]).await.expect("send");
    stack.drain(10).await.expect("drain");
    let used = counter(&stack, "cus_cb").await;
    assert!(used > 0);

    let no = cli
        .run(&["budget", "set", "cus_cb", "--limit", "1000000"])
        .await;
    assert_eq!(no.code, 4, "not confirmed: {}", no.out);
    assert!(
        no.out.contains("will set cus_cb's budget"),
        "says what it will do: {}",
        no.out
    );
    let args = [
        "budget",
        "set",
        "cus_cb",
        "--limit",
        &used.to_string(),
        "--period",
        "month",
        "--mode",
        "soft",
        "--thresholds",
        "80,50",
        "--yes",
    ];
    let set = cli.json(&args).await;
    assert_eq!(
        (&set["changed"], &set["new_alerts"]),
        (&true.into(), &serde_json::json!([50, 80]))
    );
    let again = cli.json(&args).await;
    assert_eq!(
        (&again["changed"], &again["new_alerts"]),
        (&false.into(), &serde_json::json!([]))
    );

    let shown = cli.json(&["budget", "show", "cus_cb"]).await;
    assert_eq!(shown["limit"], used);
    assert_eq!(shown["used"], used);
    assert_eq!(shown["remaining"], 0);
    assert_eq!(
        (&shown["mode"], &shown["policy_period"]),
        (&"soft".into(), &"month".into())
    );
    assert_eq!(shown["thresholds"], serde_json::json!([50, 80]));
    assert_eq!(shown["alerts"], serde_json::json!([50, 80]));
    let listed = cli.json(&["budget", "list"]).await;
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|b| b["customer_id"] == "cus_cb")),
        "{listed}"
    );
    let human = cli.run(&["budget", "show", "cus_cb"]).await;
    assert!(
        human.out.contains("remaining:") && human.out.contains("50%,80%"),
        "{}",
        human.out
    );
    let bad = cli
        .run(&[
            "budget", "set", "cus_cb", "--limit", "5", "--period", "year", "--yes",
        ])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.err);
    assert!(bad.err.contains("--period"), "{}", bad.err);
}

#[tokio::test]
async fn ambiguous_resolve_leaves_counter_ledger_and_stripe_equal() {
    let stack = TestStack::start("cli-ambig").await.expect("stack");
    let cli = Command::on(&stack);
    let at = now() - Duration::hours(1);
    for (id, step) in [
        ("ca-sent", Step::AfterStripe),
        ("ca-lost", Step::AfterClaim),
    ] {
        stack.langfuse.add_trace(trace(id, "cus_ca", 0.004, 0, at));
        stack.send_traces(&[id]).await.expect("send");
        let report = stack
            .poll_with(&CrashOnce::at(step), 2)
            .await
            .expect("poll")
            .expect("batch");
        assert!(report.invocation_failed);
    }
    stack.clock.advance(Duration::hours(24));
    stack.drain(10).await.expect("drain");
    let listed = cli.json(&["ambiguous", "list"]).await;
    let ids: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["trace_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    let sent = stripe_total(&stack, "cus_ca");
    assert!(sent > 0);
    assert_eq!(
        counter(&stack, "cus_ca").await,
        2 * sent,
        "both counted, one at Stripe"
    );

    // A hard limit the two counted traces reach: the exceeded flag goes up.
    let limit = (2 * sent).to_string();
    let set = cli
        .json(&["budget", "set", "cus_ca", "--limit", &limit, "--yes"])
        .await;
    assert!(
        set["new_events"]
            .to_string()
            .contains("Budget Limit Reached"),
        "{set}"
    );
    let resolved = cli
        .json(&["ambiguous", "resolve", "ca-sent", "--delivered", "--yes"])
        .await;
    assert_eq!(resolved["state"], "metered");
    let lost = cli
        .json(&[
            "ambiguous",
            "resolve",
            "ca-lost",
            "--not-delivered",
            "--yes",
        ])
        .await;
    assert_eq!(lost["state"], "failed");
    // The credits given back put the customer under the limit again: the flag comes down,
    // with its event.
    assert_eq!(
        lost["budget_events"],
        serde_json::json!(["Budget Limit Cleared"]),
        "{lost}"
    );
    assert!(!usage(&stack, "cus_ca").await.exceeded);
    assert_eq!(
        cli.json(&[
            "ambiguous",
            "resolve",
            "ca-lost",
            "--not-delivered",
            "--yes"
        ])
        .await["changed"],
        false
    );
    let billed = entry(&stack, "ca-sent").await.billed_credits;
    assert_eq!(
        (
            billed,
            counter(&stack, "cus_ca").await,
            stripe_total(&stack, "cus_ca")
        ),
        (sent, sent, sent)
    );

    let replayed = cli
        .json(&["replay", "--reason", "not_delivered", "--yes"])
        .await;
    assert_eq!(replayed["sent"], 1);
    stack.drain(10).await.expect("drain");
    let ledger = entry(&stack, "ca-sent").await.billed_credits
        + entry(&stack, "ca-lost").await.billed_credits;
    assert_eq!(
        (ledger, counter(&stack, "cus_ca").await),
        (2 * sent, 2 * sent)
    );
    assert_eq!(
        stripe_total(&stack, "cus_ca"),
        2 * sent,
        "counter = ledger = Stripe"
    );
}

#[tokio::test]
async fn dlq_show_and_redrive_bill_each_trace_once() {
    let stack = TestStack::start("cli-dlq").await.expect("stack");
    let cli = Command::on(&stack);
    let at = now() - Duration::hours(1);
    for id in ["cd-1", "cd-2"] {
        stack.langfuse.add_trace(trace(id, "cus_cd", 0.004, 0, at));
        let body = tracemeter::domain::message::MeterMessage::new(id).to_body();
        let dlq = &stack.resources.dlq_url;
        stack
            .sqs
            .send_message()
            .queue_url(dlq)
            .message_body(body)
            .send()
            .await
            .expect("to dlq");
    }
    let shown = cli.json(&["dlq", "show"]).await;
    assert_eq!(shown["visible"], 2, "{shown}");
    let mut traces: Vec<&str> = shown["sample_traces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    traces.sort_unstable();
    assert_eq!(traces, ["cd-1", "cd-2"]);
    assert_eq!(
        cli.json(&["dlq", "show"]).await["visible"],
        2,
        "showing leaves them there"
    );
    assert_eq!(cli.run(&["dlq", "redrive"]).await.code, 4);
    let moved = cli.json(&["dlq", "redrive", "--yes"]).await;
    assert_eq!(moved["moved"], 2);
    assert_eq!(stack.dlq_depth().await.expect("depth"), 0);
    assert_eq!(
        cli.json(&["dlq", "redrive", "--yes"]).await["moved"],
        0,
        "twice: nothing more"
    );
    stack.drain(10).await.expect("drain");
    assert_eq!(stack.stripe.events().len(), 2);
}

#[tokio::test]
async fn the_binary_names_a_missing_variable_and_exits_2() {
    let bin = function_binary("tracemeter");
    let out = std::process::Command::new(bin)
        .args(["failures", "list"])
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("QUEUE_URL", "http://127.0.0.1:9/q")
        .output()
        .expect("run tracemeter");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TABLE_NAME"), "{err}");
}

#[tokio::test]
async fn reconcile_finds_no_drift_then_exactly_the_dropped_event() {
    let stack = TestStack::start("cli-reconcile").await.expect("stack");
    let cli = Command::on(&stack);
    let at = now() - Duration::hours(1);
    let traces = [
        ("cr-a1", "cus_ra"),
        ("cr-a2", "cus_ra"),
        ("cr-b1", "cus_rb"),
        ("cr-b2", "cus_rb"),
    ];
    for (id, customer) in traces {
        stack.langfuse.add_trace(trace(id, customer, 0.004, 0, at));
    }
    let ids: Vec<&str> = traces.iter().map(|(id, _)| *id).collect();
    stack.send_traces(&ids).await.expect("send");
    stack.drain(10).await.expect("drain");
    let month = at.format("%Y-%m").to_string();
    let clean = cli.json(&["reconcile", "--period", &month]).await;
    assert_eq!(clean["drift"], false, "{clean}");
    let customers = clean["customers"].as_array().cloned().unwrap_or_default();
    assert_eq!(customers.len(), 2, "{clean}");
    for c in &customers {
        assert_eq!(
            (&c["ledger"], &c["counters"]),
            (&c["stripe"], &c["stripe"]),
            "{c}"
        );
        assert!(c["ledger"].as_u64().is_some_and(|v| v > 0), "{c}");
    }
    assert!(
        clean["freshness"]
            .as_str()
            .is_some_and(|f| f.contains("asynchronously"))
    );

    let dropped = stack
        .stripe
        .events()
        .into_iter()
        .find(|e| e.customer == "cus_rb")
        .expect("event");
    assert!(stack.stripe.drop_event(&dropped.identifier));
    let run = cli.run(&["reconcile", "--period", &month, "--json"]).await;
    assert_eq!(run.code, 3, "drift exits 3: {}", run.err);
    let report: Value = serde_json::from_str(&run.out).expect("json");
    let by = |c: &str| {
        report["customers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["customer_id"] == c)
            .cloned()
            .expect("customer")
    };
    assert_eq!(
        by("cus_rb")["stripe_drift"],
        dropped.value.to_string(),
        "exactly the planted difference"
    );
    assert_eq!(
        (&by("cus_rb")["drift"], &by("cus_ra")["drift"]),
        (&true.into(), &false.into())
    );
    let tolerated = cli
        .run(&[
            "reconcile",
            "--period",
            &month,
            "--tolerance",
            &dropped.value.to_string(),
        ])
        .await;
    assert_eq!(tolerated.code, 0, "{}", tolerated.out);
    assert!(tolerated.out.contains("no drift"), "{}", tolerated.out);
    let only_a = cli
        .json(&["reconcile", "--period", &month, "--customer", "cus_ra"])
        .await;
    assert_eq!(only_a["customers"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn backfill_refinds_a_range_and_bills_nothing_twice() {
    let stack = TestStack::start("cli-backfill").await.expect("stack");
    let cli = Command::on(&stack);
    let at = now() - Duration::hours(2);
    for (i, id) in ["cf-1", "cf-2", "cf-3"].iter().enumerate() {
        let t = at + Duration::minutes(i as i64);
        stack.langfuse.add_trace(trace(id, "cus_cf", 0.004, 0, t));
    }
    stack.send_traces(&["cf-1", "cf-2"]).await.expect("send");
    stack.drain(10).await.expect("drain");
    assert_eq!(stack.stripe.events().len(), 2);
    let cursor = |s: &TestStack| {
        let store = s.ingest(&[]).store;
        async move {
            tracemeter::ports::IngestStore::load_cursor(&store, "v2")
                .await
                .expect("cursor")
        }
    };
    let before = cursor(&stack).await;

    let early = cli
        .run(&["backfill", "--from", "3h", "--to", "1m", "--yes"])
        .await;
    assert_eq!(early.code, 2, "not settled: {}", early.err);
    let found = cli
        .json(&["backfill", "--from", "3h", "--to", "1h", "--yes"])
        .await;
    assert_eq!(
        (&found["outcome"], &found["traces_found"]),
        (&"Completed".into(), &3.into()),
        "{found}"
    );
    assert_eq!(
        (&found["enqueued"], &found["skipped_covered"]),
        (&1.into(), &2.into()),
        "{found}"
    );
    stack.drain(10).await.expect("drain");
    let again = cli
        .json(&["backfill", "--from", "3h", "--to", "1h", "--yes"])
        .await;
    assert_eq!(
        (&again["enqueued"], &again["skipped_covered"]),
        (&0.into(), &3.into()),
        "{again}"
    );
    stack.drain(10).await.expect("drain");

    let mut ids: Vec<String> = stack
        .stripe
        .events()
        .into_iter()
        .map(|e| e.identifier)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (stack.stripe.events().len(), ids.len()),
        (3, 3),
        "each trace billed once"
    );
    assert_eq!(cursor(&stack).await, before, "the cursor is not moved");
}

/// Plants a customer Stripe does not know, bills two of its traces and one of a known
/// customer; `stripe-errors` shows the error report's samples, `--apply --yes` records them
/// `stripe_rejected` and gives exactly their credits back, once; `reconcile` then agrees.
async fn stripe_errors_round_trip(stack: &TestStack, p: &str) {
    let cli = Command::on(stack);
    let (ghost, known) = (format!("cus_{p}_ghost"), format!("cus_{p}_ok"));
    stack.stripe.plant_unknown_customer(&ghost);
    // One validation window for the whole test, reported once it closes (below).
    stack.stripe.set_validation_window(Duration::hours(1));
    let at = now() - Duration::hours(1);
    let ids = [format!("{p}-g1"), format!("{p}-g2"), format!("{p}-k1")];
    for (id, customer) in ids.iter().zip([&ghost, &ghost, &known]) {
        stack.langfuse.add_trace(trace(id, customer, 0.004, 0, at));
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.send_traces(&refs).await.expect("send");
    stack.drain(10).await.expect("drain");
    let events = stack.stripe.events();
    assert_eq!(events.len(), 3, "Stripe accepted every event: {events:?}");
    let dropped: u64 = events
        .iter()
        .filter(|e| e.customer == ghost)
        .map(|e| e.value)
        .sum();
    let kept = counter(stack, &known).await;
    assert_eq!(counter(stack, &ghost).await, dropped);
    assert!(dropped > 0 && kept > 0);
    let month = at.format("%Y-%m").to_string();
    let drift = cli
        .run(&["reconcile", "--period", &month, "--customer", &ghost])
        .await;
    assert_eq!(drift.code, 3, "Stripe dropped them: {}", drift.out);

    let early = cli.json(&["stripe-errors", "--since", "1h"]).await;
    assert_eq!(early["reports"], 0, "the window is still open: {early}");
    stack.stripe.advance(Duration::hours(1));
    let shown = cli.json(&["stripe-errors", "--since", "1h"]).await;
    let samples = shown["samples"].as_array().cloned().unwrap_or_default();
    assert_eq!(samples.len(), 2, "{shown}");
    assert_eq!(
        (&shown["errors"], &shown["without_sample"]),
        (&2.into(), &0.into())
    );
    let mut traces: Vec<&str> = samples
        .iter()
        .filter_map(|s| s["trace_id"].as_str())
        .collect();
    traces.sort_unstable();
    assert_eq!(traces, [ids[0].as_str(), ids[1].as_str()]);
    for s in &samples {
        assert_eq!(s["code"], "meter_event_customer_not_found", "{s}");
        assert_eq!(s["event_type"], "v1.billing.meter.error_report_triggered");
        assert_eq!(s["standing"], "delivered", "{s}");
        let id = s["identifier"].as_str().unwrap_or_default();
        let sent = events.iter().find(|e| e.identifier == id).expect("sent");
        assert_eq!(s["credits"], sent.value);
    }
    let human = cli.run(&["stripe-errors", "--since", "1h"]).await;
    assert_eq!(human.code, 0, "{}", human.err);
    assert!(
        human.out.contains(&format!("tm_{}_r1", ids[0])),
        "{}",
        human.out
    );
    assert!(human.out.contains("samples"), "{}", human.out);

    let unconfirmed = cli
        .run(&["stripe-errors", "--since", "1h", "--apply"])
        .await;
    assert_eq!(
        unconfirmed.code, 4,
        "asked, answered no: {}",
        unconfirmed.out
    );
    assert_eq!(counter(stack, &ghost).await, dropped, "nothing done");
    let applied = cli
        .run(&["stripe-errors", "--since", "1h", "--apply", "--yes"])
        .await;
    assert_eq!(applied.code, 0, "{}", applied.err);
    let said = format!("recorded 2 revision(s) as stripe_rejected, {dropped} credits given back");
    assert!(applied.out.contains(&said), "{}", applied.out);
    assert_eq!(
        applied.out.matches(" rejected ").count(),
        2,
        "{}",
        applied.out
    );
    assert_eq!(counter(stack, &ghost).await, 0, "given back exactly");
    assert_eq!(counter(stack, &known).await, kept, "others untouched");
    let failed = cli
        .json(&["failures", "list", "--reason", "stripe_rejected"])
        .await;
    let mut listed: Vec<&str> = failed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["trace_id"].as_str())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, [ids[0].as_str(), ids[1].as_str()]);

    let again = cli
        .json(&["stripe-errors", "--since", "1h", "--apply", "--yes"])
        .await;
    assert_eq!(again["credits_given_back"], 0, "{again}");
    assert_eq!(again["applied"], serde_json::json!([]));
    assert!(
        again["samples"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["standing"] == "rejected")
    );
    assert_eq!(counter(stack, &ghost).await, 0, "once");
    let clean = cli.json(&["reconcile", "--period", &month]).await;
    assert_eq!(clean["drift"], false, "{clean}");
    let e = entry(stack, &ids[0]).await;
    assert_eq!(
        (e.state, e.revision, e.billed_credits),
        (LedgerState::Failed, 1, 0)
    );

    // The customer is created in Stripe: a replay bills the two traces once, as new revisions.
    stack.stripe.create_customer(&ghost);
    let replayed = cli
        .json(&["replay", "--reason", "stripe_rejected", "--yes"])
        .await;
    assert_eq!(replayed["sent"], 2, "{replayed}");
    stack.drain(10).await.expect("drain");
    let rebilled: Vec<String> = stack
        .stripe
        .events()
        .into_iter()
        .filter(|e| e.customer == ghost)
        .map(|e| e.identifier)
        .collect();
    assert_eq!(rebilled.len(), 4, "{rebilled:?}");
    assert!(
        rebilled.contains(&format!("tm_{}_r2", ids[0])),
        "{rebilled:?}"
    );
    assert_eq!(counter(stack, &ghost).await, dropped);
    let after = cli.json(&["reconcile", "--period", &month]).await;
    assert_eq!(after["drift"], false, "{after}");
}

/// Stripe samples some of a window's errors: `stripe-errors` says how many it could not
/// map back instead of pretending it found them all.
#[tokio::test]
async fn stripe_errors_counts_the_errors_without_a_sample() {
    let stack = TestStack::start("cli-unsampled").await.expect("stack");
    let cli = Command::on(&stack);
    stack.stripe.plant_unknown_customer("cus_un_ghost");
    stack.stripe.set_validation_window(Duration::hours(1));
    stack.stripe.set_error_sample_limit(1);
    let at = now() - Duration::hours(1);
    let ids = ["un-g1", "un-g2", "un-g3"];
    for id in ids {
        stack
            .langfuse
            .add_trace(trace(id, "cus_un_ghost", 0.004, 0, at));
    }
    stack.send_traces(&ids).await.expect("send");
    stack.drain(10).await.expect("drain");
    stack.stripe.advance(Duration::hours(1));
    let shown = cli.json(&["stripe-errors", "--since", "1h"]).await;
    assert_eq!(shown["reports"], 1, "{shown}");
    assert_eq!(shown["errors"], 3, "{shown}");
    assert_eq!(
        shown["samples"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    assert_eq!(shown["without_sample"], 2, "{shown}");
    let human = cli.run(&["stripe-errors", "--since", "1h"]).await;
    let said = "3 invalid event(s), 1 sample(s), 2 without a sample";
    assert!(human.out.contains(said), "{}", human.out);
}

#[tokio::test]
async fn stripe_errors_gives_back_what_stripe_dropped_v1() {
    let stack = TestStack::start("cli-errors").await.expect("stack");
    stripe_errors_round_trip(&stack, "ce").await;
}

#[tokio::test]
async fn stripe_errors_gives_back_what_stripe_dropped_v2_stream() {
    let options = StackOptions::default().var("STRIPE_API_MODE", "v2_stream");
    let stack = TestStack::start_with("cli-errors2", options)
        .await
        .expect("stack");
    stripe_errors_round_trip(&stack, "cs").await;
    assert!(
        !stack.stripe.stream_batches().is_empty(),
        "sent through the stream"
    );
}
