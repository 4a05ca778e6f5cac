//! Bad input to the operator's command, as issue 24 probed it: each probe is refused with the
//! flag, the value and the expected form (exit 2), never a panic (exit 101) and never a
//! silent success; an outage of a service only the verb uses is exit 1, naming it.

use crate::cli::Command;
use crate::common::function_binary;
use chrono::{Duration, Months};
use tracemeter::clock::Clock;
use tracemeter::domain::budget::Period;
use tracemeter::ports::{BudgetStore, CustomerDirectory};
use tracemeter_cli::parse;
use tracemeter_local::harness::TestStack;

/// What clap says about `args` (the command must refuse them while parsing).
fn refused(args: &[&str]) -> String {
    match parse(std::iter::once("tracemeter").chain(args.iter().copied())) {
        Ok(cli) => panic!("{args:?} accepted: {cli:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            e.to_string()
        }
    }
}

/// The `tracemeter` binary run with `args` and `env` only: (exit code, stderr, stdout).
fn binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(function_binary("tracemeter"))
        .args(args)
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .envs(env.iter().copied())
        .output()
        .expect("run tracemeter");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stderr), text(&out.stdout))
}

#[test]
fn time_arguments_never_panic_and_name_their_flag() {
    for (args, flag, value) in [
        (
            &["backfill", "--from", "7é", "--to", "1h"][..],
            "--from",
            "7é",
        ),
        (&["backfill", "--from", "2d", "--to", "ééh"], "--to", "ééh"),
        (
            &["backfill", "--from", "99999999999d", "--to", "1h"],
            "--from",
            "99999999999d",
        ),
        (
            &["failures", "list", "--since", "9223372036854775807m"],
            "--since",
            "9223372036854775807m",
        ),
        (&["stripe-errors", "--since", "-6h"], "--since", "-6h"),
        (&["failures", "list", "--since", ""], "--since", ""),
    ] {
        let err = refused(args);
        assert!(
            err.contains(&format!("{flag} \"{value}\": expected RFC 3339")),
            "{args:?}: {err}"
        );
    }
    assert!(refused(&["failures", "list", "--since", "-6h"]).contains("negative age"));
    assert!(
        refused(&["backfill", "--from", "99999999999d", "--to", "1h"]).contains("too far back")
    );
    // The binary itself: exit 2 and a sentence, not exit 101 and a backtrace.
    let (code, err, _) = binary(&["backfill", "--from", "7é", "--to", "1h"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--from \"7é\"") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn customer_ids_the_processor_refuses_are_refused_by_the_command() {
    for bad in ["", " ", "cus 1", "cus_1\t"] {
        for args in [
            &["customer", "map", "u-1", bad][..],
            &["budget", "set", bad, "--limit", "100"],
            &["budget", "show", bad],
            &["reconcile", "--period", "2026-11", "--customer", bad],
        ] {
            let err = refused(args);
            assert!(
                err.contains("expected a Stripe customer id"),
                "{args:?}: {err}"
            );
        }
    }
    assert!(refused(&["customer", "map", "", "cus_1"]).contains("USER_ID \"\""));
    assert!(refused(&["trace", "show", " "]).contains("expected a Langfuse trace id"));
    assert!(refused(&["budget", "set", "cus_1", "--limit", "0"]).contains("--limit \"0\""));
    assert!(
        refused(&[
            "budget",
            "set",
            "cus_1",
            "--limit",
            "9",
            "--thresholds",
            ",,"
        ])
        .contains("--thresholds")
    );
    assert!(refused(&["failures", "list", "--reason", "nope"]).contains("malformed_message"));
}

#[test]
fn period_arguments_are_checked_for_their_form() {
    for bad in [
        "2026-13",
        "",
        "2026-1",
        "26-11",
        "2026-W60",
        "2026-11-31",
        "2026-11 ",
    ] {
        let err = refused(&["budget", "show", "cus_1", "--period", bad]);
        assert!(
            err.contains("--period") && err.contains("expected a month 2026-11"),
            "{bad:?}: {err}"
        );
    }
    let err = refused(&["reconcile", "--period", "2026-W48"]);
    assert!(
        err.contains("expected a UTC month 2026-11 or day 2026-11-23"),
        "{err}"
    );
}

#[tokio::test]
async fn budget_show_and_reconcile_refuse_periods_that_cannot_hold_usage() {
    let stack = TestStack::start("cli-periods").await.expect("stack");
    let cli = Command::on(&stack);
    let now = stack.clock.now();
    let future_month = Period::Month.key(now + Months::new(2));
    assert_eq!(
        cli.run(&["budget", "set", "cus_p", "--limit", "100", "--yes"])
            .await
            .code,
        0
    );

    let today = Period::Day.key(now);
    for (period, why) in [
        (today.as_str(), "this budget counts per month"),
        (future_month.as_str(), "has not started yet"),
    ] {
        let run = cli
            .run(&["budget", "show", "cus_p", "--period", period])
            .await;
        assert_eq!(run.code, 2, "{period}: {}", run.out);
        assert!(
            run.err.contains(&format!("--period {period}")) && run.err.contains(why),
            "{}",
            run.err
        );
    }
    let this_month = Period::Month.key(now);
    assert_eq!(
        cli.run(&["budget", "show", "cus_p", "--period", &this_month])
            .await
            .code,
        0
    );
    // No policy: the default budget's kind (month) applies.
    let weekly = Period::Week.key(now - Duration::days(7));
    let run = cli
        .run(&["budget", "show", "cus_none", "--period", &weekly])
        .await;
    assert_eq!(run.code, 2, "{}", run.out);

    let run = cli.run(&["reconcile", "--period", &future_month]).await;
    assert_eq!(run.code, 2, "{}", run.out);
    assert!(
        run.err.contains("has not started yet") && !run.out.contains("no drift"),
        "{}",
        run.err
    );
    let tomorrow = Period::Day.key(now + Duration::days(1));
    assert_eq!(cli.run(&["reconcile", "--period", &tomorrow]).await.code, 2);
}

#[tokio::test]
async fn a_refused_customer_id_writes_nothing() {
    let stack = TestStack::start("cli-ids").await.expect("stack");
    let env: Vec<(&str, &str)> = stack
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (code, err, _) = binary(&["customer", "map", "u-blank", " ", "--yes"], &env);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CUSTOMER \" \": expected a Stripe customer id"),
        "{err}"
    );
    assert_eq!(
        stack
            .ledger
            .customer_for_user("u-blank")
            .await
            .expect("read"),
        None
    );
    let (code, err, _) = binary(&["budget", "set", "", "--limit", "5", "--yes"], &env);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(stack.ledger.budget_policy("").await.expect("read"), None);
}

#[tokio::test]
async fn only_the_verbs_that_call_stripe_read_its_secret() {
    let stack = TestStack::start("cli-stripe-secret").await.expect("stack");
    let mut env: Vec<(&str, &str)> = stack
        .env
        .iter()
        .filter(|(k, _)| k.as_str() != "STRIPE_SECRET_ARN")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("STRIPE_METER_ID", "mtr_probe"));
    env.push(("STRIPE_SECRET_ARN", "tracemeter-no-such-secret"));
    // Verbs that do not call Stripe do not need its secret.
    for args in [
        &["budget", "list"][..],
        &["failures", "list"],
        &["trace", "show", "t-none"],
    ] {
        let (code, err, _) = binary(args, &env);
        assert!(!err.contains("secret"), "{args:?}: {err}");
        assert_ne!(code, Some(2), "{args:?}: {err}");
    }
    // The ones that do: an outage of Secrets Manager (exit 1), naming it and the secret.
    let month = Period::Month.key(stack.clock.now());
    let (code, err, _) = binary(&["reconcile", "--period", &month], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("secretsmanager") && err.contains("tracemeter-no-such-secret"),
        "{err}"
    );
    assert!(!err.contains("configuration error"), "{err}");
    // A Stripe variable missing: the verbs that call Stripe stop (exit 2, naming it), the
    // others do not read it.
    env.retain(|(k, _)| *k != "STRIPE_METER_EVENT_NAME");
    let (code, err, _) = binary(&["reconcile", "--period", &month], &env);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("STRIPE_METER_EVENT_NAME"), "{err}");
    let (code, err, _) = binary(&["budget", "list"], &env);
    assert_eq!(code, Some(0), "{err}");
    // An outage of the table: exit 1, naming the service and the table.
    env.retain(|(k, _)| *k != "TABLE_NAME");
    env.push(("TABLE_NAME", "tracemeter-no-such-table"));
    let (code, err, _) = binary(&["budget", "list"], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("dynamodb") && err.contains("tracemeter-no-such-table"),
        "{err}"
    );
    // A configuration error is exit 2, naming the variable.
    env.retain(|(k, _)| *k != "TABLE_NAME");
    let (code, err, _) = binary(&["budget", "list"], &env);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TABLE_NAME"), "{err}");
}

#[tokio::test]
async fn a_function_names_a_table_or_queue_that_does_not_exist_at_start() {
    let stack = TestStack::start("start-check").await.expect("stack");
    let wrong_queue = format!("{}-missing", stack.resources.queue_url);
    for function in ["process", "ingest"] {
        for (name, value) in [
            ("TABLE_NAME", "no-such-table"),
            ("QUEUE_URL", wrong_queue.as_str()),
        ] {
            let out = std::process::Command::new(function_binary(function))
                .env_clear()
                .envs(stack.env.iter())
                .env(name, value)
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
                .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
                .env("AWS_LAMBDA_FUNCTION_NAME", function)
                .output()
                .expect("run the function");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{function} {name}: started: {err}");
            assert!(
                err.contains(name) && err.contains(value),
                "{function} {name}: {err}"
            );
        }
    }
}
