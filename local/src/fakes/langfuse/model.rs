//! The traces and observations the fake serves, built by tests and the workload.

use super::*;

/// A trace as stored in the fake, with its observations.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTrace {
    /// Trace id.
    pub id: String,
    /// Trace timestamp (what the legacy `fromTimestamp`/`toTimestamp` filters and ordering use).
    pub timestamp: DateTime<Utc>,
    /// Trace name (`name`, and `traceName` on v2 observations).
    pub name: Option<String>,
    /// Trace user id (inherited by observations without their own).
    pub user_id: Option<String>,
    /// Trace session id (reported as the observations' `sessionId`).
    pub session_id: Option<String>,
    /// Trace metadata, a JSON object. v2 observations report it merged into their own
    /// `metadata` (the observation's keys win), as Langfuse v4 SDKs propagate trace attributes.
    pub metadata: Value,
    /// Trace tags.
    pub tags: Vec<String>,
    /// Observations of this trace; their `trace_id` equals `id`.
    pub observations: Vec<FakeObservation>,
}

impl FakeTrace {
    /// A trace with no name, user, session, metadata, tags or observations.
    pub fn new(id: impl Into<String>, timestamp: DateTime<Utc>) -> Self {
        Self {
            id: id.into(),
            timestamp,
            name: None,
            user_id: None,
            session_id: None,
            metadata: Value::Object(Map::new()),
            tags: Vec::new(),
            observations: Vec::new(),
        }
    }

    /// Sets the trace name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the trace user id.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the trace session id.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets one metadata key, e.g. `.meta("stripeCustomerId", "cus_123")`.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        insert_meta(&mut self.metadata, key.into(), value.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds an observation; its `trace_id` is set to this trace's id.
    pub fn observation(mut self, mut observation: FakeObservation) -> Self {
        observation.trace_id.clone_from(&self.id);
        self.observations.push(observation);
        self
    }

    /// The trace's cost in USD as Langfuse reports it (`totalCost`): the sum of
    /// [`FakeObservation::cost_usd`].
    pub fn total_cost_usd(&self) -> f64 {
        self.observations
            .iter()
            .map(FakeObservation::cost_usd)
            .sum()
    }

    /// The trace's latency in seconds as Langfuse reports it: latest observation end (or start,
    /// if it has no end) minus earliest observation start; 0 without observations.
    pub fn latency_seconds(&self) -> f64 {
        let start = self.observations.iter().map(|o| o.start_time).min();
        let end = self
            .observations
            .iter()
            .map(|o| o.end_time.unwrap_or(o.start_time))
            .max();
        match (start, end) {
            (Some(start), Some(end)) => seconds_between(start, end),
            _ => 0.0,
        }
    }
}

/// An observation (span, generation, event, ...) as stored in the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeObservation {
    /// Observation id.
    pub id: String,
    /// Id of the trace it belongs to.
    pub trace_id: String,
    /// Observation type, e.g. `GENERATION`, `SPAN`, `EVENT`.
    pub r#type: String,
    /// Observation name.
    pub name: Option<String>,
    /// Start time (v2 ordering, cursor and `fromStartTime`/`toStartTime` filters use it).
    pub start_time: DateTime<Utc>,
    /// End time, if the observation has ended.
    pub end_time: Option<DateTime<Utc>>,
    /// Model name as provided (`providedModelName` / legacy `model`).
    pub model: Option<String>,
    /// Usage by type, e.g. `input`, `output`, `total` (tokens).
    pub usage_details: BTreeMap<String, i64>,
    /// Cost by usage type in USD, e.g. `input`, `output`, `total`.
    pub cost_details: BTreeMap<String, f64>,
    /// Total cost in USD (`totalCost` / legacy `calculatedTotalCost`).
    pub total_cost: Option<f64>,
    /// Observation metadata (a JSON object).
    pub metadata: Value,
    /// The observation's own user id; when None the trace's is reported.
    pub user_id: Option<String>,
    /// Raw JSON fields applied after rendering, for data Langfuse should never send (a
    /// `null` cost, a missing `startTime`): `Some(value)` replaces the field, `None` removes it.
    pub raw: Vec<(String, Option<Value>)>,
}

impl FakeObservation {
    /// An observation of the given type with no end, model, usage, cost or metadata.
    pub fn new(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        r#type: impl Into<String>,
        start_time: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.into(),
            trace_id: trace_id.into(),
            r#type: r#type.into(),
            name: None,
            start_time,
            end_time: None,
            model: None,
            usage_details: BTreeMap::new(),
            cost_details: BTreeMap::new(),
            total_cost: None,
            metadata: Value::Object(Map::new()),
            user_id: None,
            raw: Vec::new(),
        }
    }

    /// A finished `GENERATION` with token usage (`input`, `output`, `total`) and a cost in USD;
    /// `costDetails` splits the cost over input and output in proportion to the tokens and
    /// carries the whole as `total`, and `totalCost` is `cost_usd`.
    #[allow(clippy::too_many_arguments)]
    pub fn generation(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        start_time: DateTime<Utc>,
        end_time: DateTime<Utc>,
        model: impl Into<String>,
        input_tokens: i64,
        output_tokens: i64,
        cost_usd: f64,
    ) -> Self {
        let total_tokens = input_tokens + output_tokens;
        let input_cost = if total_tokens > 0 {
            cost_usd * input_tokens as f64 / total_tokens as f64
        } else {
            0.0
        };
        let mut observation = Self::new(id, trace_id, "GENERATION", start_time);
        observation.end_time = Some(end_time);
        observation.model = Some(model.into());
        observation.usage_details = BTreeMap::from([
            ("input".to_owned(), input_tokens),
            ("output".to_owned(), output_tokens),
            ("total".to_owned(), total_tokens),
        ]);
        observation.cost_details = BTreeMap::from([
            ("input".to_owned(), input_cost),
            ("output".to_owned(), cost_usd - input_cost),
            ("total".to_owned(), cost_usd),
        ]);
        observation.total_cost = Some(cost_usd);
        observation
    }

    /// A finished `SPAN` without usage or cost.
    pub fn span(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        start_time: DateTime<Utc>,
        end_time: DateTime<Utc>,
    ) -> Self {
        let mut observation = Self::new(id, trace_id, "SPAN", start_time);
        observation.end_time = Some(end_time);
        observation
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the observation's own user id.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets one metadata key.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        insert_meta(&mut self.metadata, key.into(), value.into());
        self
    }

    /// Sets (or clears) the end time.
    pub fn with_end_time(mut self, end_time: Option<DateTime<Utc>>) -> Self {
        self.end_time = end_time;
        self
    }

    /// Sets one usage type, e.g. `.usage("input", 120)`.
    pub fn usage(mut self, usage_type: impl Into<String>, units: i64) -> Self {
        self.usage_details.insert(usage_type.into(), units);
        self
    }

    /// Sets the cost in USD of one usage type, e.g. `.cost("total", 0.003)`.
    pub fn cost(mut self, usage_type: impl Into<String>, usd: f64) -> Self {
        self.cost_details.insert(usage_type.into(), usd);
        self
    }

    /// Serves the JSON field `key` as `value` (or without it, for `None`) whatever the
    /// observation holds: malformed data for the reliability suite.
    pub fn raw_field(mut self, key: impl Into<String>, value: Option<Value>) -> Self {
        self.raw.push((key.into(), value));
        self
    }

    /// Sets (or clears) `totalCost`.
    pub fn with_total_cost(mut self, usd: Option<f64>) -> Self {
        self.total_cost = usd;
        self
    }

    /// The observation's cost in USD: `total_cost`, else `cost_details["total"]`, else the sum of
    /// `cost_details`.
    pub fn cost_usd(&self) -> f64 {
        // A cost sent as `null` (Langfuse could not price the model) adds nothing to the
        // trace's `totalCost` either.
        let null_cost = self.raw.iter().any(|(k, v)| {
            (k == "totalCost" || k == "calculatedTotalCost") && matches!(v, Some(Value::Null))
        });
        if null_cost {
            return 0.0;
        }
        self.total_cost
            .or_else(|| self.cost_details.get("total").copied())
            .unwrap_or_else(|| self.cost_details.values().sum())
    }

    /// End minus start in seconds, None while the observation has no end.
    pub fn latency_seconds(&self) -> Option<f64> {
        self.end_time
            .map(|end| seconds_between(self.start_time, end))
    }
}

fn insert_meta(metadata: &mut Value, key: String, value: Value) {
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    if let Value::Object(map) = metadata {
        map.insert(key, value);
    }
}

fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    let delta = end - start;
    match delta.num_microseconds() {
        Some(micros) => micros as f64 / 1_000_000.0,
        None => delta.num_milliseconds() as f64 / 1_000.0,
    }
}
