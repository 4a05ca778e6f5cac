//! `tracemeter price set|show|list|index` on the local stack (DynamoDB on moto).

use super::*;

fn at_hours(h: i64) -> String {
    (now() + Duration::hours(h)).to_rfc3339()
}

#[tokio::test]
async fn price_set_show_list_and_their_refusals() {
    let stack = TestStack::start("cli-price").await.expect("stack");
    let cli = Command::on(&stack);
    let from = at_hours(1);
    // A default version an hour ahead, without a base: all three prices are needed.
    let run = cli
        .run(&["price", "set", "--from", &from, "--margin", "1.2", "--yes"])
        .await;
    assert_eq!(run.code, 2, "{}", run.out);
    assert!(
        run.err.contains("--credit-price is required"),
        "{}",
        run.err
    );
    let args = [
        "price",
        "set",
        "--from",
        &from,
        "--credit-price",
        "0.00004",
        "--margin",
        "1.2",
        "--compute-per-minute",
        "0.05",
        "--token-price",
        "my-*=1:2",
        "--unpriced",
        "hold",
        "--yes",
    ];
    let set = cli.json(&args).await;
    assert_eq!(set["changed"], true, "{set}");
    // The same version twice changes nothing.
    let again = cli.json(&args).await;
    assert_eq!(again["changed"], false, "{again}");
    // Not confirmed: nothing done (exit 4).
    let later = at_hours(2);
    let run = cli
        .run(&["price", "set", "--from", &later, "--margin", "1.3"])
        .await;
    assert_eq!(run.code, 4, "{}", run.err);
    // Refusals, each naming its reason: by the command (exit 2, nothing written) ...
    let refused = [
        (
            vec!["--from", "2020-01-01T00:00:00Z", "--margin", "1"],
            "before now",
        ),
        (
            vec!["--from", &later, "--margin", "0"],
            "margin must be above 0",
        ),
        (
            vec!["--customer", "cus_nobody", "--from", &later],
            "unknown customer",
        ),
    ];
    for (args, why) in refused {
        let all: Vec<&str> = ["price", "set"]
            .into_iter()
            .chain(args)
            .chain(["--yes"])
            .collect();
        let run = cli.run(&all).await;
        assert_eq!(run.code, 2, "{all:?}: {}", run.out);
        assert!(run.err.contains(why), "{all:?}: {}", run.err);
    }
    // ... and by the shared parsers, before anything is read.
    let unparsed = [
        (
            vec!["--from", &later, "--margin", "-1"],
            "cannot be negative",
        ),
        (
            vec!["--from", &later, "--credit-price", "-0.1"],
            "cannot be negative",
        ),
        (
            vec!["--from", &later, "--token-price", "x=1"],
            "MODEL=IN:OUT",
        ),
        (
            vec!["--from", &later, "--unpriced", "maybe"],
            "compute_only or hold",
        ),
        (vec!["--from", "tomorrow"], "RFC 3339"),
    ];
    for (args, why) in unparsed {
        let all = ["tracemeter", "price", "set"]
            .into_iter()
            .chain(args.iter().copied());
        let e = parse(all).expect_err("refused").to_string();
        assert!(e.contains(why), "{args:?}: {e}");
    }
    // A customer's plan inherits the default version in effect at its --from.
    let plan = cli
        .json(&[
            "price",
            "set",
            "--customer",
            "cus_new",
            "--new-customer",
            "--from",
            &later,
            "--margin",
            "0.8",
            "--yes",
        ])
        .await;
    assert_eq!(plan["token_prices"][0]["pattern"], "my-*", "{plan}");
    assert_eq!(plan["unpriced"], "hold");
    // Before the customer's last version: only with --backdate, which counts what it prices.
    let run = cli
        .run(&[
            "price",
            "set",
            "--customer",
            "cus_new",
            "--from",
            &from,
            "--margin",
            "0.7",
            "--yes",
        ])
        .await;
    assert!(run.err.contains("before the last version"), "{}", run.err);
    let back = cli
        .json(&[
            "price",
            "set",
            "--customer",
            "cus_new",
            "--from",
            &from,
            "--margin",
            "0.7",
            "--backdate",
            "--yes",
        ])
        .await;
    assert_eq!(back["backdated_unbilled"], 0, "{back}");
    let list = cli.json(&["price", "list", "--customer", "cus_new"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let shown = cli
        .json(&[
            "price",
            "show",
            "--customer",
            "cus_new",
            "--at",
            &at_hours(3),
        ])
        .await;
    assert_eq!(shown["version"]["margin"], "0.8", "{shown}");
    let now_default = cli.json(&["price", "show"]).await;
    assert_eq!(now_default["from_variables"], true, "{now_default}");
    let table = cli.run(&["price", "list"]).await;
    assert!(table.out.contains("1 version(s)"), "{}", table.out); // The index names the customer with a plan; building it again changes nothing.
    let index = cli.json(&["price", "index", "--yes"]).await;
    assert_eq!(
        index,
        serde_json::json!({"complete": true, "customers": ["cus_new"]})
    );
    let text = cli.run(&["price", "index", "--yes"]).await;
    assert!(
        text.out.ends_with(
            "\nthe price index is complete: 1 customer(s) with prices of their own (cus_new)\n"
        ),
        "{}{}",
        text.out,
        text.err
    );
}

#[tokio::test]
async fn concurrent_price_sets_store_one_version() {
    let stack = TestStack::start("cli-price-race").await.expect("stack");
    let cli = Command::on(&stack);
    let from = at_hours(1);
    let args = [
        "price",
        "set",
        "--from",
        &from,
        "--credit-price",
        "0.00005",
        "--margin",
        "1",
        "--compute-per-minute",
        "0.05",
        "--json",
        "--yes",
    ];
    let runs = futures::future::join_all((0..4).map(|_| cli.run(&args))).await;
    let changed = runs
        .iter()
        .filter(|r| {
            assert_eq!(r.code, 0, "{}", r.err);
            r.out.contains("\"changed\": true") || r.out.contains("\"changed\":true")
        })
        .count();
    assert_eq!(
        changed,
        1,
        "{:?}",
        runs.iter().map(|r| &r.out).collect::<Vec<_>>()
    );
    let list = cli.json(&["price", "list"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}
