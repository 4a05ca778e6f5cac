//! The process function's SQS trigger and the ingest schedule. This build reads neither the
//! Lambda nor the EventBridge Scheduler API (no SDK for them in the command): both checks
//! say so, with what to look at, rather than pass.

use super::report::Check;

/// The Lambda and schedule checks: WARN, not checked, with the commands that show them.
pub(super) fn check(timeout: u32) -> Vec<Check> {
    vec![
        Check::warn(
            "lambda.event_source_mapping",
            "not checked: the command does not read the Lambda API",
            format!(
                "aws lambda list-event-source-mappings --function-name <ProcessFunction> must show FunctionResponseTypes [ReportBatchItemFailures], and MaximumBatchingWindowInSeconds plus a batch's work well under the function's {timeout} s timeout"
            ),
        ),
        Check::warn(
            "schedule.ingest",
            "not checked: the command does not read the EventBridge Scheduler API",
            "aws scheduler list-schedules --name-prefix <stack name> must show the ingest schedule with State ENABLED",
        ),
    ]
}
