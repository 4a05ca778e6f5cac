//! The ledger table: it exists, its keys, its `attention` index, its stream, its TTL and
//! the price book's index.

use super::report::Check;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    KeySchemaElement, KeyType, StreamViewType, TableDescription, TimeToLiveStatus,
};
use tracemeter::adapters::dynamo::DynamoLedger;
use tracemeter::domain::price_book::ScopeIndex;
use tracemeter::ports::PriceBook;

/// The index `failures list` and `ambiguous list` query.
const INDEX: &str = "attention";
/// The attribute the ledger's items expire by.
const TTL_ATTRIBUTE: &str = "expires_at";

/// The table checks.
pub(super) async fn check(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<Check> {
    let described = client.describe_table().table_name(table).send().await;
    let Some(t) = described.as_ref().ok().and_then(|d| d.table()) else {
        let why = match described {
            Err(e) => DisplayErrorContext(&e).to_string(),
            Ok(_) => "no description".to_string(),
        };
        return vec![Check::fail(
            "dynamodb.table",
            format!("cannot describe table {table} (TABLE_NAME): {why}"),
            "set TABLE_NAME to the stack's ledger table (the TableName output of sam deploy)",
        )];
    };
    let status = t.table_status().map(|s| s.as_str()).unwrap_or("unknown");
    let mut checks = vec![Check::expect(
        "dynamodb.table",
        status == "ACTIVE",
        format!("table {table} is {status}"),
        || "wait until the table is ACTIVE".to_string(),
    )];
    checks.push(Check::expect(
        "dynamodb.keys",
        keys(t.key_schema()) == "pk (HASH), sk (RANGE)",
        format!(
            "the table's keys are {}; the functions use pk (HASH), sk (RANGE)",
            keys(t.key_schema())
        ),
        || "deploy template.yaml's LedgerTable: keys cannot change on a table".to_string(),
    ));
    checks.push(index(t));
    checks.push(stream(t, table));
    checks.push(ttl(client, table).await);
    checks.push(price_index(client, table).await);
    checks
}

/// The price book's index: complete, or a WARN (the processor then reads every customer's
/// prices, one `Query` per customer and instance a minute: correct, more calls).
async fn price_index(client: &aws_sdk_dynamodb::Client, table: &str) -> Check {
    let ledger = DynamoLedger::new(client.clone(), table);
    let fix = "tracemeter price index (once, after the first deploy or an upgrade)";
    match ledger.default_book().await {
        Ok(book) => match book.index {
            ScopeIndex::Complete(names) => Check::ok(
                "dynamodb.price_index",
                format!(
                    "the price index is complete: {} customer(s) with prices of their own",
                    names.len()
                ),
            ),
            ScopeIndex::Unknown => Check::warn(
                "dynamodb.price_index",
                "the price index is not built: the process function reads every customer's prices separately",
                fix,
            ),
        },
        Err(e) => Check::fail(
            "dynamodb.price_index",
            format!("cannot read the price book: {e}"),
            "grant dynamodb:Query on the table to the operator",
        ),
    }
}

/// `name (HASH), name (RANGE)`.
fn keys(schema: &[KeySchemaElement]) -> String {
    let key = |k: &KeySchemaElement| {
        let kind = match k.key_type() {
            KeyType::Hash => "HASH",
            KeyType::Range => "RANGE",
            other => other.as_str(),
        };
        format!("{} ({kind})", k.attribute_name())
    };
    schema.iter().map(key).collect::<Vec<_>>().join(", ")
}

fn index(t: &TableDescription) -> Check {
    let found = t
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some(INDEX))
        .map(|i| keys(i.key_schema()));
    let want = "reason (HASH), updated_at (RANGE)";
    let message = match &found {
        Some(k) => format!("index {INDEX} on {k}; the commands query {want}"),
        None => {
            format!("no index {INDEX}; `failures list` and `ambiguous list` query it on {want}")
        }
    };
    Check::expect(
        "dynamodb.index",
        found.as_deref() == Some(want),
        message,
        || "deploy template.yaml's LedgerTable with its attention index".to_string(),
    )
}

fn stream(t: &TableDescription, table: &str) -> Check {
    let spec = t.stream_specification();
    let view = spec
        .filter(|s| s.stream_enabled())
        .and_then(|s| s.stream_view_type());
    let good = matches!(
        view,
        Some(StreamViewType::NewImage | StreamViewType::NewAndOldImages)
    );
    let message = match view {
        Some(v) => format!("stream on, {}", v.as_str()),
        None => {
            "no stream: budget events never reach EventBridge (BudgetEventsPipe reads it)".into()
        }
    };
    Check::expect("dynamodb.stream", good, message, || {
        format!(
            "aws dynamodb update-table --table-name {table} --stream-specification StreamEnabled=true,StreamViewType=NEW_IMAGE (then redeploy: the pipe reads the stream's ARN)"
        )
    })
}

async fn ttl(client: &aws_sdk_dynamodb::Client, table: &str) -> Check {
    let fix = || {
        format!(
            "aws dynamodb update-time-to-live --table-name {table} --time-to-live-specification Enabled=true,AttributeName={TTL_ATTRIBUTE}"
        )
    };
    let out = match client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let why = DisplayErrorContext(&e).to_string();
            return Check::fail("dynamodb.ttl", format!("DescribeTimeToLive: {why}"), fix());
        }
    };
    let d = out.time_to_live_description();
    let status = d.and_then(|d| d.time_to_live_status());
    let attribute = d.and_then(|d| d.attribute_name()).unwrap_or("-");
    let good = status == Some(&TimeToLiveStatus::Enabled) && attribute == TTL_ATTRIBUTE;
    let status = status.map(|s| s.as_str()).unwrap_or("DISABLED");
    Check::expect(
        "dynamodb.ttl",
        good,
        format!("TTL {status} on `{attribute}`; the ledger's items expire by `{TTL_ATTRIBUTE}`"),
        fix,
    )
}
