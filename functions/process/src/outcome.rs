//! What happened to each message, and the invocation's tally of it.

use std::collections::BTreeMap;
use std::time::Duration;
use tracemeter::metrics::Metric;
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
        /// The outside system that failed (`langfuse`, `stripe`, `dynamodb`, `sqs`), if one did.
        service: Option<&'static str>,
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
            service: None,
        }
    }

    /// A retry after a transient error, honouring the wait it asks for.
    pub fn retry_after(e: &Error) -> Outcome {
        Outcome::Retry {
            detail: e.to_string(),
            after: e.retry_after(),
            service: match e {
                Error::Transient { service, .. } => Some(*service),
                _ => None,
            },
        }
    }
}

/// The invocation's counts: its summary log line and its metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages in the batch.
    pub messages: usize,
    /// Revisions delivered (zero-credit traces included).
    pub metered: usize,
    /// Traces entirely over a hard limit.
    pub capped: usize,
    /// Messages whose usage the ledger already covered.
    pub already_billed: usize,
    /// Permanent failures recorded, by reason.
    pub failures: BTreeMap<FailureReason, usize>,
    /// Claims left for an operator.
    pub ambiguous: usize,
    /// Messages returned for a retry.
    pub retries: usize,
    /// Of the retries, those deferred: sent again as new messages with a delay because a
    /// service asked to wait (set when the answer to SQS is made).
    pub deferred: usize,
    /// Messages returned untried: the deadline was too near.
    pub unreached: usize,
    /// Retries by the outside system that failed: (retries, those that asked to wait).
    pub retries_by_service: BTreeMap<&'static str, (usize, usize)>,
    /// Credits delivered to Stripe.
    pub credits_billed: u64,
    /// Traces with token usage that has no cost and no token price: billed compute only
    /// (rule `compute_only`) or failed `unpriced_model` (rule `hold`).
    pub unpriced: usize,
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
                Outcome::Permanent(reason) => {
                    *t.failures.entry(*reason).or_default() += 1;
                    t.unpriced += usize::from(*reason == FailureReason::UnpricedModel);
                }
                Outcome::Ambiguous => t.ambiguous += 1,
                Outcome::Retry { after, service, .. } => {
                    t.retries += 1;
                    let by = t.retries_by_service.entry(service.unwrap_or("internal"));
                    let (retries, throttled) = by.or_default();
                    *retries += 1;
                    *throttled += usize::from(after.is_some());
                }
                Outcome::Unreached => t.unreached += 1,
            }
        }
        t
    }

    /// Permanent failures, all reasons.
    pub fn permanent_failures(&self) -> usize {
        self.failures.values().sum()
    }

    /// The invocation's CloudWatch metrics (names documented in docs/operating.md).
    pub fn metrics(&self, duration: Duration) -> Vec<Metric> {
        let n = |v: usize| v as u64;
        let mut m = vec![
            Metric::count("Messages", n(self.messages)),
            Metric::count("TracesMetered", n(self.metered)),
            Metric::count("TracesCapped", n(self.capped)),
            Metric::count("TracesAlreadyBilled", n(self.already_billed)),
            Metric::count("TracesFailed", n(self.permanent_failures())),
            Metric::count("TracesAmbiguous", n(self.ambiguous)),
            Metric::count("TracesRetried", n(self.retries)),
            Metric::count("TracesDeferred", n(self.deferred)),
            Metric::count("CreditsBilled", self.credits_billed),
            Metric::count("TracesUnpriced", n(self.unpriced)),
            Metric::millis("BatchDuration", duration.as_millis() as u64),
        ];
        for (reason, count) in &self.failures {
            m.push(Metric::count("TracesFailed", n(*count)).by("Reason", reason.as_str()));
        }
        for (service, (retries, throttled)) in &self.retries_by_service {
            m.push(Metric::count("Retries", n(*retries)).by("Service", *service));
            m.push(Metric::count("Throttled", n(*throttled)).by("Service", *service));
        }
        m
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
            Outcome::Permanent(FailureReason::UnpricedModel),
            Outcome::Ambiguous,
            Outcome::retry("later"),
            Outcome::Unreached,
        ];
        let t = Tally::of(&outcomes);
        assert_eq!(
            t,
            Tally {
                messages: 9,
                metered: 2,
                capped: 1,
                already_billed: 1,
                failures: BTreeMap::from([
                    (FailureReason::TraceNotFound, 1),
                    (FailureReason::UnpricedModel, 1),
                ]),
                ambiguous: 1,
                retries: 1,
                deferred: 0,
                unreached: 1,
                retries_by_service: BTreeMap::from([("internal", (1, 0))]),
                credits_billed: 12,
                unpriced: 1,
            }
        );
    }
}

#[cfg(test)]
mod metric_tests {
    use super::*;

    #[test]
    fn retries_are_counted_by_service_and_throttles_by_the_wait_asked() {
        let throttled = Error::Transient {
            service: "langfuse",
            detail: "429".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let failed = Error::transient("stripe", "500");
        let outcomes = [
            Outcome::retry_after(&throttled),
            Outcome::retry_after(&throttled),
            Outcome::retry_after(&failed),
            Outcome::Permanent(FailureReason::UnmappedCustomer),
            Outcome::Permanent(FailureReason::UnmappedCustomer),
        ];
        let t = Tally::of(&outcomes);
        assert_eq!(t.retries_by_service["langfuse"], (2, 2));
        assert_eq!(t.retries_by_service["stripe"], (1, 0));
        let m = t.metrics(Duration::from_millis(250));
        let find = |name: &str, dim: Option<&str>| {
            m.iter()
                .find(|x| x.name == name && x.dimension.as_ref().map(|d| d.1.as_str()) == dim)
                .map(|x| x.value)
        };
        assert_eq!(find("TracesFailed", None), Some(2));
        assert_eq!(find("TracesFailed", Some("unmapped_customer")), Some(2));
        assert_eq!(find("Throttled", Some("langfuse")), Some(2));
        assert_eq!(find("Retries", Some("stripe")), Some(1));
        assert_eq!(find("BatchDuration", None), Some(250));
    }
}
