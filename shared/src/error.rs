//! Errors that say whether retrying can help.
//!
//! The one distinction that matters for billing: a *transient* error is worth another try
//! (the SQS message goes back to the queue and, after `maxReceiveCount`, to the dead-letter
//! queue), a *permanent* error will fail the same way every time and is recorded in the
//! ledger with its reason, and the message is acknowledged.

use std::fmt;
use std::time::Duration;

/// Why a trace or message could not be billed, for good (until its cause is fixed and it is
/// replayed). The string form is what the ledger stores in `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// The SQS body is not the JSON message tracemeter sends.
    MalformedMessage,
    /// Langfuse does not know the trace.
    TraceNotFound,
    /// No Stripe customer could be resolved for the trace.
    UnmappedCustomer,
    /// The usage is older than Stripe accepts for meter events (35 days).
    UsageTooOld,
    /// The usage time lies further in the future than Stripe accepts (5 minutes).
    UsageInFuture,
    /// The usage figures are impossible (negative or absurd cost or latency).
    InvalidUsage,
    /// Stripe rejected the meter event for good.
    StripeRejected,
    /// An ambiguous claim an operator found missing from Stripe (budget given back).
    NotDelivered,
    /// Token usage without a cost and without a token price, under the `hold` rule.
    UnpricedModel,
}

impl FailureReason {
    /// Every reason, for reports.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::MalformedMessage,
        FailureReason::TraceNotFound,
        FailureReason::UnmappedCustomer,
        FailureReason::UsageTooOld,
        FailureReason::UsageInFuture,
        FailureReason::InvalidUsage,
        FailureReason::StripeRejected,
        FailureReason::NotDelivered,
        FailureReason::UnpricedModel,
    ];

    /// The stable snake_case name stored in the ledger and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::MalformedMessage => "malformed_message",
            FailureReason::TraceNotFound => "trace_not_found",
            FailureReason::UnmappedCustomer => "unmapped_customer",
            FailureReason::UsageTooOld => "usage_too_old",
            FailureReason::UsageInFuture => "usage_in_future",
            FailureReason::InvalidUsage => "invalid_usage",
            FailureReason::StripeRejected => "stripe_rejected",
            FailureReason::NotDelivered => "not_delivered",
            FailureReason::UnpricedModel => "unpriced_model",
        }
    }

    /// Parses the stored name back.
    pub fn parse(s: &str) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of the library.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Worth retrying later: throttling, 5xx, timeouts, lost connections, a conflicting
    /// concurrent writer, and also misconfiguration that an operator can fix (bad
    /// credentials), so that nothing is dropped while it is being fixed.
    #[error("{service}: {detail}")]
    Transient {
        /// The outside system or component: `langfuse`, `stripe`, `dynamodb`, `sqs`.
        service: &'static str,
        /// What happened, without secrets.
        detail: String,
        /// How long the service asked us to wait, when it said so.
        retry_after: Option<Duration>,
    },
    /// Will fail the same way every time.
    #[error("{reason}: {detail}")]
    Permanent {
        /// The classified reason stored in the ledger.
        reason: FailureReason,
        /// What exactly is wrong: which trace, which field, which rule.
        detail: String,
    },
    /// Missing or malformed configuration, found at start.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// A transient error without a retry hint.
    pub fn transient(service: &'static str, detail: impl Into<String>) -> Error {
        Error::Transient {
            service,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(reason: FailureReason, detail: impl Into<String>) -> Error {
        Error::Permanent {
            reason,
            detail: detail.into(),
        }
    }

    /// True when retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// The wait the remote service asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
