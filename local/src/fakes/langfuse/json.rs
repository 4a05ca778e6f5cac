//! Traces, observations and scores in the JSON shapes Langfuse answers with.

use super::*;

pub(super) fn effective_user<'a>(
    trace: &'a FakeTrace,
    observation: &'a FakeObservation,
) -> Option<&'a str> {
    observation.user_id.as_deref().or(trace.user_id.as_deref())
}

pub(super) fn internal_model_id(observation: &FakeObservation) -> Option<String> {
    observation
        .model
        .as_ref()
        .map(|model| format!("fake-model-{model}"))
}

/// An ObservationV2 with only the requested field groups.
pub(super) fn observation_v2_json(
    trace: &FakeTrace,
    o: &FakeObservation,
    groups: &BTreeSet<String>,
) -> Value {
    let mut m = Map::new();
    for group in V2_GROUPS {
        if *group == "core" || groups.contains(*group) {
            let fields = v2_group(group, trace, o, groups.contains("model"));
            m.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
    }
    apply_raw(&mut m, o);
    Value::Object(m)
}

/// The fields of one `fields` group of a v2 observation (`core` is always served).
fn v2_group(
    group: &str,
    trace: &FakeTrace,
    o: &FakeObservation,
    with_model: bool,
) -> Vec<(&'static str, Value)> {
    match group {
        "core" => vec![
            ("id", json!(o.id)),
            ("traceId", json!(o.trace_id)),
            ("startTime", json!(iso(&o.start_time))),
            ("endTime", json!(o.end_time.as_ref().map(iso))),
            ("projectId", json!(PROJECT_ID)),
            ("parentObservationId", Value::Null),
            ("type", json!(o.r#type)),
            // Required (nullable) by the spec in every object; null unless `model` is requested.
            (
                "modelId",
                if with_model {
                    json!(internal_model_id(o))
                } else {
                    Value::Null
                },
            ),
            ("inputPrice", Value::Null),
            ("outputPrice", Value::Null),
            ("totalPrice", Value::Null),
        ],
        "basic" => vec![
            ("name", json!(o.name)),
            ("level", json!("DEFAULT")),
            ("statusMessage", Value::Null),
            ("version", Value::Null),
            ("environment", json!("default")),
            ("bookmarked", json!(false)),
            ("public", json!(false)),
            ("userId", json!(effective_user(trace, o))),
            ("sessionId", json!(trace.session_id)),
            ("isRootObservation", json!(true)),
        ],
        "time" => vec![
            ("completionStartTime", Value::Null),
            ("createdAt", json!(iso(&o.start_time))),
            ("updatedAt", json!(iso(&o.end_time.unwrap_or(o.start_time)))),
        ],
        "io" => vec![("input", Value::Null), ("output", Value::Null)],
        "metadata" => vec![("metadata", merged_metadata(trace, o))],
        "model" => vec![
            ("providedModelName", json!(o.model)),
            ("internalModelId", json!(internal_model_id(o))),
            ("modelParameters", json!({})),
        ],
        "usage" => vec![
            ("usageDetails", json!(o.usage_details)),
            ("costDetails", json!(o.cost_details)),
            ("totalCost", json!(o.total_cost)),
            ("usagePricingTierName", Value::Null),
        ],
        "prompt" => vec![
            ("promptId", Value::Null),
            ("promptName", Value::Null),
            ("promptVersion", Value::Null),
        ],
        "metrics" => vec![
            ("latency", json!(o.latency_seconds())),
            ("timeToFirstToken", Value::Null),
        ],
        "trace_context" => vec![
            ("tags", json!(trace.tags)),
            ("release", Value::Null),
            ("traceName", json!(trace.name)),
        ],
        _ => Vec::new(),
    }
}

/// Langfuse v4 SDKs propagate trace-level attributes (metadata included) to every
/// observation; the observation's own keys win.
fn merged_metadata(trace: &FakeTrace, o: &FakeObservation) -> Value {
    let mut merged = trace.metadata.clone();
    if let (Value::Object(into), Value::Object(own)) = (&mut merged, &o.metadata) {
        for (k, v) in own {
            into.insert(k.clone(), v.clone());
        }
    } else if !o.metadata.is_null() {
        merged = o.metadata.clone();
    }
    merged
}

/// Applies an observation's raw field overrides to its rendered JSON.
pub(super) fn apply_raw(m: &mut Map<String, Value>, o: &FakeObservation) {
    for (key, value) in &o.raw {
        match value {
            Some(v) => {
                m.insert(key.clone(), v.clone());
            }
            None => {
                m.remove(key);
            }
        }
    }
}

/// An ObservationsView (legacy full trace).
pub(super) fn observation_view_json(o: &FakeObservation) -> Value {
    let usage = |key: &str| o.usage_details.get(key).copied();
    let input = usage("input").unwrap_or(0);
    let output = usage("output").unwrap_or(0);
    let cost = |key: &str| o.cost_details.get(key).copied();
    let total_cost = o.total_cost.or_else(|| cost("total"));
    let mut view = json!({
        "id": o.id,
        "traceId": o.trace_id,
        "type": o.r#type,
        "name": o.name,
        "startTime": iso(&o.start_time),
        "endTime": o.end_time.as_ref().map(iso),
        "completionStartTime": Value::Null,
        "model": o.model,
        "modelParameters": {},
        "input": Value::Null,
        "version": Value::Null,
        "metadata": o.metadata,
        "output": Value::Null,
        "usage": {
            "input": input,
            "output": output,
            "total": usage("total").unwrap_or(input + output),
            "unit": "TOKENS",
            "inputCost": cost("input"),
            "outputCost": cost("output"),
            "totalCost": total_cost,
        },
        "level": "DEFAULT",
        "statusMessage": Value::Null,
        "parentObservationId": Value::Null,
        "promptId": Value::Null,
        "usageDetails": o.usage_details,
        "costDetails": o.cost_details,
        "environment": "default",
        "promptName": Value::Null,
        "promptVersion": Value::Null,
        "modelId": internal_model_id(o),
        "inputPrice": Value::Null,
        "outputPrice": Value::Null,
        "totalPrice": Value::Null,
        "calculatedInputCost": cost("input"),
        "calculatedOutputCost": cost("output"),
        "calculatedTotalCost": total_cost,
        "latency": o.latency_seconds(),
        "timeToFirstToken": Value::Null,
    });
    if let Value::Object(m) = &mut view {
        apply_raw(m, o);
    }
    view
}

/// A ScoreV1 built from a received CreateScoreRequest.
pub(super) fn score_v1_json(score: &StoredScore) -> Value {
    let body = &score.body;
    let field = |key: &str| body.get(key).cloned().unwrap_or(Value::Null);
    let (value, string_value, default_type) = match body.get("value") {
        Some(Value::String(text)) => (json!(0), Some(text.clone()), "CATEGORICAL"),
        Some(number) => (number.clone(), None, "NUMERIC"),
        None => (Value::Null, None, "NUMERIC"),
    };
    let data_type = body
        .get("dataType")
        .and_then(Value::as_str)
        .unwrap_or(default_type);
    let mut json = json!({
        "id": field("id"),
        "traceId": field("traceId"),
        "name": field("name"),
        "source": "API",
        "observationId": field("observationId"),
        "timestamp": iso(&score.created_at),
        "createdAt": iso(&score.created_at),
        "updatedAt": iso(&score.updated_at),
        "authorUserId": Value::Null,
        "comment": field("comment"),
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "configId": field("configId"),
        "queueId": field("queueId"),
        "environment": body.get("environment").cloned().unwrap_or_else(|| json!("default")),
        "dataType": data_type,
        "value": value,
    });
    if let (Some(string_value), Value::Object(map)) = (string_value, &mut json) {
        map.insert("stringValue".to_owned(), Value::String(string_value));
    }
    json
}

/// ISO 8601 with milliseconds and `Z`, as Langfuse writes timestamps; finer digits (micro-
/// or nanoseconds) when a source sent them, as OpenTelemetry spans carry.
pub(super) fn iso(time: &DateTime<Utc>) -> String {
    let format = match time.timestamp_subsec_nanos() % 1_000_000 {
        0 => SecondsFormat::Millis,
        n if n % 1_000 == 0 => SecondsFormat::Micros,
        _ => SecondsFormat::Nanos,
    };
    time.to_rfc3339_opts(format, true)
}
