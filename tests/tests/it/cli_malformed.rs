//! Malformed messages from the operator's side, on the local stack: listed with their
//! escaped body, reason and time; not replayable, and said so; acknowledged (deleted) after
//! confirmation. And untrusted text reaches the terminal escaped, JSON staying JSON.

use crate::cli::Command;
use tracemeter_local::harness::TestStack;

/// A body that is no meter message, carrying what SQS lets through and a terminal obeys: an
/// 8-bit control sequence (CSI, `ESC [`), a carriage return and a bidi override.
const HOSTILE: &str = "\u{9b}2J\rnot json \u{202e}gnp.exe";

#[tokio::test]
async fn malformed_messages_are_listed_explained_and_acknowledged() {
    let stack = TestStack::start("cli-malformed").await.expect("stack");
    let cli = Command::on(&stack);
    stack
        .send_bodies(&[HOSTILE.to_string(), "{\"traceId\": \"\"}".to_string()])
        .await
        .expect("send");
    stack.drain(10).await.expect("drain");

    // Listed: JSON with the body as it was, the table with it escaped.
    let listed = cli
        .json(&["failures", "list", "--reason", "malformed_message"])
        .await;
    let items = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(
        items
            .iter()
            .all(|m| m["reason"] == "malformed_message" && m["updated_at"].is_string())
    );
    assert!(items.iter().any(|m| m["body"] == HOSTILE), "{listed}");
    let human = cli
        .run(&["failures", "list", "--reason", "malformed_message"])
        .await;
    assert_eq!(human.code, 0, "{}", human.err);
    assert!(
        human
            .out
            .contains("\\u{009b}2J\\rnot json \\u{202e}gnp.exe"),
        "{}",
        human.out
    );
    assert!(
        !human
            .out
            .chars()
            .any(|c| matches!(c, '\u{9b}' | '\r' | '\u{202e}')),
        "{:?}",
        human.out
    );
    assert!(
        human.out.contains("2 malformed message(s)"),
        "{}",
        human.out
    );
    // `failures list` shows them after the failed traces.
    let all = cli.json(&["failures", "list"]).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");

    // Not replayable: nothing sent, and why.
    let replay = cli
        .run(&["replay", "--reason", "malformed_message", "--yes"])
        .await;
    assert_eq!(replay.code, 2, "{}", replay.out);
    assert!(
        replay.err.contains("cannot be replayed") && replay.err.contains("failures ack"),
        "{}",
        replay.err
    );

    // Acknowledged: asks first (no answer, nothing deleted), then deletes with --yes.
    let asked = cli
        .run(&["failures", "ack", "--reason", "malformed_message"])
        .await;
    assert_eq!(asked.code, 4, "{}", asked.out);
    assert_eq!(
        cli.json(&["failures", "list", "--reason", "malformed_message"])
            .await
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let one = items[0]["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let acked = cli
        .json(&["failures", "ack", "--message", &one, "--yes"])
        .await;
    assert_eq!(acked["deleted"], serde_json::json!([one]), "{acked}");
    let again = cli
        .run(&["failures", "ack", "--message", &one, "--yes"])
        .await;
    assert_eq!(again.code, 1, "{}", again.out);
    let rest = cli
        .json(&["failures", "ack", "--reason", "malformed_message", "--yes"])
        .await;
    assert_eq!(rest["deleted"].as_array().map(Vec::len), Some(1), "{rest}");
    let listed = cli
        .json(&["failures", "list", "--reason", "malformed_message"])
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    // Failed traces are replayed, not acknowledged.
    let refused = cli
        .run(&["failures", "ack", "--reason", "unmapped_customer", "--yes"])
        .await;
    assert_eq!(refused.code, 2, "{}", refused.err);
    assert!(
        refused.err.contains("replay --reason unmapped_customer"),
        "{}",
        refused.err
    );
}

#[tokio::test]
async fn dlq_bodies_reach_the_terminal_escaped() {
    let stack = TestStack::start("cli-dlq-escape").await.expect("stack");
    let cli = Command::on(&stack);
    tracemeter_local::harness::send_bodies_to(
        &stack.sqs,
        &stack.resources.dlq_url,
        &[HOSTILE.to_string()],
    )
    .await
    .expect("send to the dlq");
    let shown = cli.run(&["dlq", "show"]).await;
    assert_eq!(shown.code, 0, "{}", shown.err);
    assert!(
        shown.out.contains("\\u{009b}2J\\rnot json"),
        "{}",
        shown.out
    );
    assert!(
        !shown
            .out
            .chars()
            .any(|c| matches!(c, '\u{9b}' | '\r' | '\u{202e}')),
        "{:?}",
        shown.out
    );
    let json = cli.json(&["dlq", "show"]).await;
    assert_eq!(json["samples"][0], HOSTILE, "{json}");
}
