//! Failures: a permanent one is recorded in the ledger with its reason and the message is
//! acknowledged; a transient one sends the message back.

use crate::{Deps, Outcome};
use tracemeter::domain::claim::FailureKey;
use tracemeter::{Error, FailureReason};
use tracing::warn;

/// Records a permanent failure. If even that fails, the message retries.
pub(crate) async fn record_permanent(
    deps: &Deps<'_>,
    key: &FailureKey,
    reason: FailureReason,
    detail: &str,
) -> Outcome {
    match deps
        .ledger
        .record_failure(key, reason, detail, deps.clock.now())
        .await
    {
        Ok(()) => {
            warn!(reason = %reason, detail = %detail, "permanent failure recorded; message acknowledged");
            Outcome::Permanent(reason)
        }
        Err(e) => Outcome::retry(format!(
            "could not record permanent failure {reason} ({detail}): {e}"
        )),
    }
}

/// What an error means for a trace's message.
pub(crate) async fn outcome(deps: &Deps<'_>, trace_id: &str, e: Error) -> Outcome {
    match e {
        Error::Permanent { reason, detail } => {
            let key = FailureKey::Trace(trace_id.to_string());
            record_permanent(deps, &key, reason, &detail).await
        }
        e => {
            warn!(trace_id, error = %e, "transient failure, will retry");
            Outcome::retry_after(&e)
        }
    }
}
