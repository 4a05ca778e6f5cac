//! What happened to each message, and the invocation's tally of it.

use std::time::Duration;
use tracemeter::{Error, FailureReason};

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A revision was delivered to Stripe.
    Metered {
        /// Credits sent.
        billable: u64,
        /// Credits over a hard limit.
        capped: u64,
        /// Whether an interrupted earlier attempt was resumed.
        resumed: bool,
    },
    /// Everything was over the hard limit: recorded, nothing sent.
    Capped {
        /// Credits not billed.
        capped: u64,
    },
    /// The ledger already covers this usage.
    AlreadyBilled,
    /// Recorded in the ledger with its reason and acknowledged.
    Permanent(FailureReason),
    /// Claimed long ago and never marked: left for an operator.
    Ambiguous,
    /// Failed for now; the message returns after its visibility timeout.
    Retry {
        /// What failed.
        detail: String,
        /// The wait the service asked for, if any.
        after: Option<Duration>,
    },
    /// Not started before the invocation's deadline; the message returns soon.
    Unreached,
}

impl Outcome {
    /// A retry with no wait asked for.
    pub fn retry(detail: impl Into<String>) -> Outcome {
        Outcome::Retry {
            detail: detail.into(),
            after: None,
        }
    }

    /// A retry after a transient error, honouring the wait it asks for.
    pub fn retry_after(e: &Error) -> Outcome {
        Outcome::Retry {
            detail: e.to_string(),
            after: e.retry_after(),
        }
    }
}

/// The invocation's counts, one line in its summary log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages in the batch.
    pub messages: usize,
    /// Revisions delivered (zero-credit traces included).
    pub metered: usize,
    /// Traces entirely over a hard limit.
    pub capped: usize,
    /// Messages whose usage the ledger already covered.
    pub already_billed: usize,
    /// Permanent failures recorded.
    pub permanent_failures: usize,
    /// Claims left for an operator.
    pub ambiguous: usize,
    /// Messages returned for a retry.
    pub retries: usize,
    /// Messages returned untried: the deadline was too near.
    pub unreached: usize,
    /// Credits delivered to Stripe.
    pub credits_billed: u64,
}

impl Tally {
    /// Counts a batch's outcomes.
    pub fn of(outcomes: &[Outcome]) -> Tally {
        let mut t = Tally {
            messages: outcomes.len(),
            ..Tally::default()
        };
        for o in outcomes {
            match o {
                Outcome::Metered { billable, .. } => {
                    t.metered += 1;
                    t.credits_billed += billable;
                }
                Outcome::Capped { .. } => t.capped += 1,
                Outcome::AlreadyBilled => t.already_billed += 1,
                Outcome::Permanent(_) => t.permanent_failures += 1,
                Outcome::Ambiguous => t.ambiguous += 1,
                Outcome::Retry { .. } => t.retries += 1,
                Outcome::Unreached => t.unreached += 1,
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_each_kind_and_the_credits_billed() {
        let outcomes = [
            Outcome::Metered {
                billable: 5,
                capped: 1,
                resumed: false,
            },
            Outcome::Metered {
                billable: 7,
                capped: 0,
                resumed: true,
            },
            Outcome::Capped { capped: 3 },
            Outcome::AlreadyBilled,
            Outcome::Permanent(FailureReason::TraceNotFound),
            Outcome::Ambiguous,
            Outcome::retry("later"),
            Outcome::Unreached,
        ];
        let t = Tally::of(&outcomes);
        assert_eq!(
            t,
            Tally {
                messages: 8,
                metered: 2,
                capped: 1,
                already_billed: 1,
                permanent_failures: 1,
                ambiguous: 1,
                retries: 1,
                unreached: 1,
                credits_billed: 12,
            }
        );
    }
}
