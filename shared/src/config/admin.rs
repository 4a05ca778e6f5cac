//! The operator command's configuration: the same variables as the functions.

use super::env::Env;
use super::process::default_budget;
use super::stripe::StripeConfig;
use crate::domain::budget::BudgetPolicy;
use crate::error::Result;

/// What the `tracemeter` command reads from the environment.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `TABLE_NAME`: the DynamoDB ledger table.
    pub table_name: String,
    /// `QUEUE_URL`: the SQS meter queue (replays and redrives go there).
    pub queue_url: String,
    /// `DLQ_URL`: the dead-letter queue; only the `dlq` commands need it.
    pub dlq_url: Option<String>,
    /// `STRIPE_METER_ID` (`mtr_...`) with the Stripe variables of the process function: read
    /// only for the verbs that call Stripe (`reconcile`, `stripe-errors`), and only when
    /// `STRIPE_METER_ID` is set.
    pub stripe: Option<(StripeConfig, String)>,
    /// The processor's `DEFAULT_BUDGET_*` variables: the policy of a customer without its
    /// own, for the budget check after credits go back (`ambiguous resolve --not-delivered`,
    /// `stripe-errors --apply`).
    pub default_budget: BudgetPolicy,
}

impl AdminConfig {
    /// Reads the configuration from the process environment; the Stripe variables only when
    /// `calls_stripe` (a verb that does not call Stripe does not depend on them).
    pub fn from_env(calls_stripe: bool) -> Result<AdminConfig> {
        AdminConfig::from_lookup(&|name| std::env::var(name).ok(), calls_stripe)
    }

    /// Reads the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        calls_stripe: bool,
    ) -> Result<AdminConfig> {
        let env = Env::new(lookup);
        let dlq_url = match env.optional("DLQ_URL") {
            Some(_) => Some(env.url("DLQ_URL", None)?),
            None => None,
        };
        let stripe = match env.optional("STRIPE_METER_ID").filter(|_| calls_stripe) {
            Some(meter) => Some((StripeConfig::read(&env)?, meter)),
            None => None,
        };
        Ok(AdminConfig {
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.url("QUEUE_URL", None)?,
            dlq_url,
            stripe,
            default_budget: default_budget(&env)?,
        })
    }
}
