//! The meter queue: it redrives to a dead-letter queue that exists, and its visibility
//! timeout covers six times the process function's timeout (AWS's guidance for SQS event
//! sources: a batch still running is not delivered again).

use super::report::Check;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;

/// The queue checks; `timeout` is the process function's timeout in seconds.
pub(super) async fn check(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    dlq_url: Option<&str>,
    timeout: u32,
) -> Vec<Check> {
    let attributes = match attributes(client, queue_url).await {
        Ok(a) => a,
        Err(why) => {
            return vec![Check::fail(
                "sqs.queue",
                format!("cannot read the queue {queue_url} (QUEUE_URL): {why}"),
                "set QUEUE_URL to the stack's meter queue (the QueueUrl output of sam deploy)",
            )];
        }
    };
    let get = |name: QueueAttributeName| attributes.get(&name).map(String::as_str);
    vec![
        dead_letters(
            client,
            queue_url,
            get(QueueAttributeName::RedrivePolicy),
            dlq_url,
        )
        .await,
        visibility(
            queue_url,
            get(QueueAttributeName::VisibilityTimeout),
            timeout,
        ),
    ]
}

async fn attributes(
    client: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<HashMap<QueueAttributeName, String>, String> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    Ok(out.attributes.unwrap_or_default())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Redrive {
    dead_letter_target_arn: String,
}

async fn dead_letters(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    policy: Option<&str>,
    dlq_url: Option<&str>,
) -> Check {
    let target = policy
        .filter(|p| !p.is_empty())
        .and_then(|p| serde_json::from_str::<Redrive>(p).ok())
        .map(|r| r.dead_letter_target_arn);
    let Some(arn) = target else {
        return Check::fail(
            "sqs.dlq",
            format!(
                "the queue {queue_url} has no RedrivePolicy: a message that keeps failing is received again and again, and never reaches a dead-letter queue"
            ),
            format!(
                "set a RedrivePolicy to the stack's dead-letter queue (template.yaml: MeterQueue, maxReceiveCount 5): aws sqs set-queue-attributes --queue-url {queue_url} --attributes file://redrive.json"
            ),
        );
    };
    // The target exists: look its URL up by name (the ARN's last part) and account.
    let mut parts = arn.rsplit(':');
    let (name, account) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let found = client
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await;
    let Some(url) = found.ok().and_then(|o| o.queue_url) else {
        return Check::fail(
            "sqs.dlq",
            format!("the queue redrives to {arn}, which does not exist"),
            "create it, or point the RedrivePolicy at the stack's MeterDeadLetterQueue",
        );
    };
    match dlq_url {
        Some(set) if set != url => Check::warn(
            "sqs.dlq",
            format!("the queue redrives to {url}; DLQ_URL is {set}"),
            format!("set DLQ_URL to {url}: `tracemeter dlq` reads DLQ_URL"),
        ),
        _ => Check::ok("sqs.dlq", format!("the queue redrives to {url}")),
    }
}

fn visibility(queue_url: &str, raw: Option<&str>, timeout: u32) -> Check {
    let seconds: u32 = raw.and_then(|v| v.parse().ok()).unwrap_or(0);
    let need = timeout.saturating_mul(6);
    Check::expect(
        "sqs.visibility_timeout",
        seconds >= need,
        format!(
            "visibility timeout {seconds} s; 6 x the process function's {timeout} s timeout is {need} s"
        ),
        || {
            format!(
                "aws sqs set-queue-attributes --queue-url {queue_url} --attributes VisibilityTimeout={need} (or lower the function's timeout; PROCESS_TIMEOUT_SECONDS tells doctor what it is)"
            )
        },
    )
}
