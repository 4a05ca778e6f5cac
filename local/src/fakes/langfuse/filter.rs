//! The JSON `filter` parameter of `GET /api/public/v2/observations`, as Langfuse handles it:
//! a JSON array of conditions `{"type","column","operator","value"}`, all of which must hold.
//! Each column has a type; a condition must use that type or a compatible one (a `string`
//! column also takes `stringOptions`: `traceId` `any of` [...] becomes `trace_id IN (...)`).
//! An unknown column, an incompatible type, an unknown operator or a malformed value is
//! refused with a 400. When `filter` is given, the plain query filters are ignored.

use super::{FakeObservation, FakeTrace};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One condition of a filter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Condition {
    /// `string`: `=`, `contains`, `does not contain`, `starts with`, `ends with`.
    Text {
        column: Column,
        operator: String,
        value: String,
    },
    /// `stringOptions`: `any of`, `none of`.
    Options {
        column: Column,
        any: bool,
        values: Vec<String>,
    },
    /// `datetime`: `>`, `<`, `>=`, `<=`.
    Time {
        column: Column,
        operator: String,
        value: DateTime<Utc>,
    },
}

/// The columns the fake filters on, with their Langfuse column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Column {
    Id,
    TraceId,
    UserId,
    SessionId,
    Name,
    Type,
    StartTime,
    EndTime,
}

impl Column {
    fn parse(id: &str) -> Option<Column> {
        Some(match id {
            "id" => Column::Id,
            "traceId" => Column::TraceId,
            "userId" => Column::UserId,
            "sessionId" => Column::SessionId,
            "name" => Column::Name,
            "type" => Column::Type,
            "startTime" => Column::StartTime,
            "endTime" => Column::EndTime,
            _ => return None,
        })
    }

    /// The column's type in Langfuse's column definitions.
    fn kind(self) -> &'static str {
        match self {
            Column::Id | Column::TraceId | Column::UserId | Column::SessionId => "string",
            Column::Name | Column::Type => "stringOptions",
            Column::StartTime | Column::EndTime => "datetime",
        }
    }

    /// Whether a condition of `kind` may name this column.
    fn accepts(self, kind: &str) -> bool {
        kind == self.kind() || (self.kind() == "string" && kind == "stringOptions")
    }

    fn text<'a>(self, trace: &'a FakeTrace, o: &'a FakeObservation) -> Option<&'a str> {
        match self {
            Column::Id => Some(&o.id),
            Column::TraceId => Some(&o.trace_id),
            Column::UserId => o.user_id.as_deref().or(trace.user_id.as_deref()),
            Column::SessionId => trace.session_id.as_deref(),
            Column::Name => o.name.as_deref(),
            Column::Type => Some(&o.r#type),
            Column::StartTime | Column::EndTime => None,
        }
    }

    fn time(self, o: &FakeObservation) -> Option<DateTime<Utc>> {
        match self {
            Column::StartTime => Some(o.start_time),
            Column::EndTime => o.end_time,
            _ => None,
        }
    }
}

/// Parses the raw `filter` parameter; the error is the 400's message.
pub(super) fn parse(raw: &str) -> Result<Vec<Condition>, String> {
    let conditions: Value =
        serde_json::from_str(raw).map_err(|e| format!("Invalid filter: not JSON ({e})"))?;
    let Value::Array(conditions) = conditions else {
        return Err("Invalid filter: expected an array of filter conditions".into());
    };
    conditions.iter().map(condition).collect()
}

fn condition(c: &Value) -> Result<Condition, String> {
    let text = |name: &str| {
        c.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Invalid filter: `{name}` must be a string in {c}"))
    };
    let (kind, column_id, operator) = (text("type")?, text("column")?, text("operator")?);
    let column = Column::parse(column_id)
        .ok_or_else(|| format!("Invalid filter: unknown column `{column_id}`"))?;
    if !column.accepts(kind) {
        return Err(format!(
            "Invalid filter: column `{column_id}` is of type {}, not {kind}",
            column.kind()
        ));
    }
    let value = c.get("value").unwrap_or(&Value::Null);
    let bad_value = || format!("Invalid filter: bad value for {kind} `{column_id}`: {value}");
    let bad_operator = || format!("Invalid filter: operator `{operator}` is not valid for {kind}");
    match kind {
        "string" => {
            if ![
                "=",
                "contains",
                "does not contain",
                "starts with",
                "ends with",
            ]
            .contains(&operator)
            {
                return Err(bad_operator());
            }
            let value = value.as_str().ok_or_else(bad_value)?.to_string();
            Ok(Condition::Text {
                column,
                operator: operator.into(),
                value,
            })
        }
        "stringOptions" => {
            let any = match operator {
                "any of" => true,
                "none of" => false,
                _ => return Err(bad_operator()),
            };
            let values = value
                .as_array()
                .ok_or_else(bad_value)?
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(bad_value))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Condition::Options {
                column,
                any,
                values,
            })
        }
        _ => {
            if ![">", "<", ">=", "<="].contains(&operator) {
                return Err(bad_operator());
            }
            let value = value
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .ok_or_else(bad_value)?
                .with_timezone(&Utc);
            Ok(Condition::Time {
                column,
                operator: operator.into(),
                value,
            })
        }
    }
}

/// Whether an observation (of `trace`) meets every condition.
pub(super) fn matches(conditions: &[Condition], trace: &FakeTrace, o: &FakeObservation) -> bool {
    conditions.iter().all(|c| holds(c, trace, o))
}

fn holds(c: &Condition, trace: &FakeTrace, o: &FakeObservation) -> bool {
    match c {
        Condition::Text {
            column,
            operator,
            value,
        } => {
            let Some(text) = column.text(trace, o) else {
                return false;
            };
            match operator.as_str() {
                "=" => text == value,
                "contains" => text.contains(value.as_str()),
                "does not contain" => !text.contains(value.as_str()),
                "starts with" => text.starts_with(value.as_str()),
                _ => text.ends_with(value.as_str()),
            }
        }
        Condition::Options {
            column,
            any,
            values,
        } => {
            let found = column
                .text(trace, o)
                .is_some_and(|t| values.iter().any(|v| v == t));
            found == *any
        }
        Condition::Time {
            column,
            operator,
            value,
        } => {
            let Some(t) = column.time(o) else {
                return false;
            };
            match operator.as_str() {
                ">" => t > *value,
                "<" => t < *value,
                ">=" => t >= *value,
                _ => t <= *value,
            }
        }
    }
}
