//! Every environment variable the functions and the operator command read, with its default
//! and meaning: the source of `docs/configuration.md`'s reference, which is generated from this
//! list and `template.yaml` (`make docs`). A test records the names each configuration loader
//! really asks for and fails when one is missing here, or listed here and never read; another
//! fails when a variable the template sets is not read by the function it is set on.

/// One documented variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    /// The variable's name.
    pub name: &'static str,
    /// The default when unset, or `required` / `none`.
    pub default: &'static str,
    /// What it means, in one line of Markdown.
    pub meaning: &'static str,
}

const fn var(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        default,
        meaning,
    }
}

/// The variables, in the order the reference lists them.
pub const VARIABLES: &[Variable] = &[
    var(
        "LANGFUSE_BASE_URL",
        "required",
        "e.g. `https://cloud.langfuse.com`",
    ),
    var(
        "LANGFUSE_SECRET_ARN",
        "required",
        "ARN (or name) of the Secrets Manager secret `{\"public_key\": …, \"secret_key\": …}` (Basic auth, public key = user); read at cold start and after a 401",
    ),
    var(
        "LANGFUSE_PUBLIC_KEY",
        "none",
        "**development only**, with `LANGFUSE_SECRET_KEY`, instead of `LANGFUSE_SECRET_ARN` (never re-read); both kinds set is a configuration error",
    ),
    var(
        "LANGFUSE_SECRET_KEY",
        "none",
        "**development only**, with `LANGFUSE_PUBLIC_KEY`, instead of `LANGFUSE_SECRET_ARN`",
    ),
    var(
        "LANGFUSE_API",
        "`v2`",
        "`v2` (Cloud / v4: observations API) or `legacy` (self-hosted v3: traces API)",
    ),
    var("LANGFUSE_TIMEOUT_MS", "`10000`", "per Langfuse request"),
    var(
        "LANGFUSE_SCORE_ENABLED",
        "`false`",
        "write a `tracemeter_billed_credits` score (deterministic id, upserts) on billed traces; best effort",
    ),
    var(
        "LANGFUSE_REQUESTS_PER_MINUTE",
        "`30`",
        "ONE Langfuse request budget for the whole deployment (Cloud Hobby 30, Core/Pro 1000, minus what the organisation's other callers need; `unlimited` for self-hosted); see [One Langfuse request budget](#one-langfuse-request-budget)",
    ),
    var(
        "STRIPE_API_BASE",
        "`https://api.stripe.com`",
        "Stripe's API",
    ),
    var(
        "STRIPE_SECRET_ARN",
        "required (process)",
        "ARN (or name) of the secret `{\"secret_key\": \"sk_…\" or \"rk_…\"}`; read at cold start and after a 401",
    ),
    var(
        "STRIPE_SECRET_KEY",
        "none",
        "**development only**, instead of `STRIPE_SECRET_ARN`; both set is a configuration error",
    ),
    var(
        "STRIPE_METER_EVENT_NAME",
        "required",
        "the meter's `event_name`",
    ),
    var("STRIPE_TIMEOUT_MS", "`10000`", "per Stripe request"),
    var(
        "STRIPE_API_MODE",
        "`v2_stream`",
        "`v2_stream` (meter event session + stream, up to 100 events per request, no per-customer concurrency limit) or `v1` (`POST /v1/billing/meter_events`, one event per request, one concurrent request per customer)",
    ),
    var(
        "STRIPE_METER_EVENTS_BASE",
        "`https://meter-events.stripe.com`",
        "host of the v2 meter event stream (the session is created on `STRIPE_API_BASE`)",
    ),
    var(
        "STRIPE_METER_ID",
        "none",
        "`tracemeter` only: the meter (`mtr_…`) whose event summaries `reconcile` reads; with it the command reads the Stripe variables",
    ),
    var("TABLE_NAME", "required", "the DynamoDB ledger table"),
    var(
        "QUEUE_URL",
        "required",
        "the meter queue (ingest sends to it; process changes visibility and defers on it)",
    ),
    var(
        "PROCESS_TIMEOUT_SECONDS",
        "`30`",
        "`tracemeter doctor` only: the process function's timeout, which the queue's visibility timeout must be at least six times (the template's `Timeout`)",
    ),
    var(
        "DLQ_URL",
        "none",
        "`tracemeter` only: the dead-letter queue, for `dlq show` and `dlq redrive`",
    ),
    var(
        "SETTLE_SECONDS",
        "`900`",
        "how old usage must be before it is enqueued",
    ),
    var(
        "RESCAN_SECONDS",
        "`86400`",
        "how late (after settling) an observation may appear and still be found: the oldest re-scan tier's age (0 = no re-scan)",
    ),
    var(
        "RESCAN_TIERS",
        "`900:900,3600:3600,21600:3600,86400:21600`",
        "re-scan tiers `AGE:EVERY` (seconds): every instant is read again once when it is `AGE` old, by ranges about `EVERY` long; cut at `RESCAN_SECONDS`, always the last tier (see [Ingest's steady state](#ingests-steady-state-how-often-a-trace-is-read))",
    ),
    var(
        "INGEST_START_LOOKBACK_SECONDS",
        "`86400`",
        "how far back the very first run starts",
    ),
    var(
        "INGEST_TIME_BUDGET_MARGIN_SECONDS",
        "`20`",
        "stop, checkpoint and release the lease this long before the deadline",
    ),
    var(
        "INGEST_SEND_ATTEMPTS",
        "`4`",
        "tries per SQS entry before it is reported and its page left for the next run",
    ),
    var(
        "INGEST_LANGFUSE_ATTEMPTS",
        "`4`",
        "tries per Langfuse page on 5xx / transport errors (429s and the request budget are waited out while the run has time)",
    ),
    var(
        "INGEST_PROGRESS_EVERY_PAGES",
        "`10`",
        "a progress line every N pages",
    ),
    var("CREDIT_PRICE_USD", "`0.00004`", "USD per credit"),
    var("MARGIN", "`1.0`", "multiplier on cost"),
    var(
        "COMPUTE_USD_PER_MINUTE",
        "`0.05`",
        "compute price per minute of trace latency",
    ),
    var(
        "MAX_TRACE_COST_USD",
        "`1000`",
        "a trace above this is `invalid_usage`, not billed",
    ),
    var(
        "BYO_KEY_METADATA_KEY",
        "`aiCredentialsOwnership`",
        "metadata key marking a customer's own model key (AI cost 0)",
    ),
    var(
        "BYO_KEY_METADATA_VALUE",
        "`user`",
        "the value of `BYO_KEY_METADATA_KEY` that means the customer's own key",
    ),
    var(
        "CUSTOMER_METADATA_KEYS",
        "`stripeCustomerId,customerId`",
        "metadata keys naming the Stripe customer, in order",
    ),
    var(
        "DEFAULT_CUSTOMER_ID",
        "none",
        "customer for traces nothing else maps",
    ),
    var(
        "DEFAULT_BUDGET_LIMIT",
        "`0` (none)",
        "credits per period for customers without their own policy item",
    ),
    var(
        "DEFAULT_BUDGET_PERIOD",
        "`month`",
        "`day`, `week` (ISO) or `month`, UTC, by usage time",
    ),
    var("DEFAULT_BUDGET_MODE", "`hard`", "`hard` or `soft`"),
    var(
        "BUDGET_ALERT_THRESHOLDS",
        "`50,80,100`",
        "percent of the limit at which an alert is written",
    ),
    var(
        "PROCESS_CONCURRENCY",
        "`8`",
        "messages of a batch processed at once",
    ),
    var(
        "RETRY_BASE_SECONDS",
        "`30`",
        "visibility delay after a transient failure: base × 2^(receives−1), jitter 50–100 %, at least the service's `Retry-After`; a deferral's delay follows the same schedule by its deferral count, except under the Langfuse request budget, where deferrals are booked on the budget's return schedule (bunches of a window's budget, 65 s apart, shared by the instances)",
    ),
    var("RETRY_MAX_SECONDS", "`900`", "the cap of that delay"),
    var(
        "STRIPE_DEDUP_WINDOW_SECONDS",
        "`82800`",
        "claims older than this that were never marked become `ambiguous`",
    ),
    var(
        "LEASE_MARGIN_SECONDS",
        "`5`",
        "added to the invocation deadline for a claim's lease",
    ),
    var(
        "DEADLINE_MARGIN_SECONDS",
        "`3`",
        "no slice of 100 messages starts unless, judging by the longest slice so far, it ends this long before the deadline; the rest returns untried (5 s visibility)",
    ),
    var(
        "RUST_LOG",
        "`info`",
        "log level: a level, or `target=level` directives such as `info,process=debug`; a value it cannot read logs at `info` and says so",
    ),
    var(
        "AWS_ENDPOINT_URL",
        "none",
        "the AWS SDK's own: only for local runs against moto on 127.0.0.1 (the template sets it from `AwsEndpointUrl` when that is not empty)",
    ),
];

/// The documented variable of this name.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}
