//! Query parameters, cursors, orders and the error answers.

use super::*;

/// The position after which the next page starts (newest-first order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cursor {
    #[serde(rename = "lastStartTime")]
    start_time: DateTime<Utc>,
    #[serde(rename = "lastId")]
    id: String,
}

impl Cursor {
    pub(super) fn after(observation: &FakeObservation) -> Self {
        Self {
            start_time: observation.start_time,
            id: observation.id.clone(),
        }
    }

    pub(super) fn encode(&self) -> String {
        let json = json!({
            "lastStartTime": self.start_time.to_rfc3339_opts(SecondsFormat::Nanos, true),
            "lastId": self.id,
        });
        STANDARD.encode(json.to_string())
    }

    pub(super) fn decode(raw: &str) -> Result<Self, Reply> {
        STANDARD
            .decode(raw.trim())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| bad_request(&format!("Invalid cursor: {raw}")))
    }

    /// Whether `o` comes after this position in newest-first order.
    pub(super) fn is_before(&self, o: &FakeObservation) -> bool {
        (o.start_time, o.id.as_str()) < (self.start_time, self.id.as_str())
    }
}

/// `orderBy` of the legacy trace list.
#[derive(Debug, Clone, Copy)]
pub(super) struct TraceOrder {
    by_id: bool,
    ascending: bool,
}

impl TraceOrder {
    pub(super) fn parse(raw: Option<&str>) -> Result<Self, Reply> {
        let Some(raw) = raw else {
            return Ok(Self {
                by_id: false,
                ascending: false,
            });
        };
        let (field, direction) = raw.split_once('.').unwrap_or((raw, ""));
        let ascending = match direction {
            "asc" => true,
            "desc" => false,
            _ => {
                return Err(bad_request(&format!(
                    "Invalid orderBy '{raw}': expected [field].[asc|desc]"
                )));
            }
        };
        let by_id = match field {
            "timestamp" => false,
            "id" => true,
            _ => {
                return Err(bad_request(&format!(
                    "orderBy field '{field}' is not supported by LangfuseFake (timestamp, id)"
                )));
            }
        };
        Ok(Self { by_id, ascending })
    }

    pub(super) fn compare(self, a: &FakeTrace, b: &FakeTrace) -> std::cmp::Ordering {
        let ordering = if self.by_id {
            a.id.cmp(&b.id)
        } else {
            a.timestamp.cmp(&b.timestamp).then_with(|| a.id.cmp(&b.id))
        };
        if self.ascending {
            ordering
        } else {
            ordering.reverse()
        }
    }
}

/// Decoded query parameters.
#[derive(Debug)]
pub(super) struct Params(pub(super) Vec<(String, String)>);

impl Params {
    /// First non-empty value of a parameter.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// All non-empty values of a repeated parameter (`tags=a&tags=b`).
    pub(super) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// An integer parameter within `min..=max`, `default` when absent.
    pub(super) fn bounded_int(
        &self,
        name: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<usize, Reply> {
        let value = match self.get(name) {
            None => default,
            Some(raw) => raw.trim().parse::<i64>().map_err(|_| {
                bad_request(&format!("Invalid {name} '{raw}': expected an integer"))
            })?,
        };
        if !(min..=max).contains(&value) {
            return Err(bad_request(&format!(
                "Invalid {name} {value}: must be between {min} and {max}"
            )));
        }
        usize::try_from(value)
            .map_err(|_| bad_request(&format!("Invalid {name} {value}: out of range")))
    }

    /// An ISO 8601 date-time parameter.
    pub(super) fn datetime(&self, name: &str) -> Result<Option<DateTime<Utc>>, Reply> {
        self.get(name)
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw.trim())
                    .map(|time| time.with_timezone(&Utc))
                    .map_err(|e| {
                        bad_request(&format!(
                            "Invalid {name} '{raw}': expected an ISO 8601 date-time ({e})"
                        ))
                    })
            })
            .transpose()
    }
}

/// Parses a `fields` list; `core` is always included, unknown groups are a 400.
pub(super) fn parse_groups(
    raw: Option<&str>,
    allowed: &[&str],
    default: &[&str],
) -> Result<BTreeSet<String>, Reply> {
    let mut groups: BTreeSet<String> = BTreeSet::new();
    match raw {
        None => groups.extend(default.iter().map(|g| (*g).to_owned())),
        Some(raw) => {
            for group in raw.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                if !allowed.contains(&group) {
                    return Err(bad_request(&format!(
                        "Invalid field group '{group}'. Available groups: {}",
                        allowed.join(", ")
                    )));
                }
                groups.insert(group.to_owned());
            }
        }
    }
    groups.insert("core".to_owned());
    Ok(groups)
}

pub(super) fn error(status: u16, message: &str, error: &str) -> Reply {
    Reply::json(status, &json!({ "message": message, "error": error }))
}

pub(super) fn bad_request(message: &str) -> Reply {
    error(400, message, "InvalidRequestError")
}

pub(super) fn injected_failure(status: u16) -> Reply {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let reply = error(
        status,
        &format!("{reason} (injected by LangfuseFake::fail_next)"),
        reason,
    );
    if status == 429 {
        reply.header("Retry-After", 1)
    } else {
        reply
    }
}

/// Langfuse's zod-style 400.
pub(super) fn invalid_request_data(issues: Vec<Value>) -> Reply {
    Reply::json(
        400,
        &json!({ "message": "Invalid request data", "error": issues }),
    )
}

pub(super) fn issue_required(field: &str, expected: &str) -> Value {
    json!({
        "code": "invalid_type",
        "expected": expected,
        "received": "undefined",
        "path": [field],
        "message": "Required",
    })
}

pub(super) fn issue_invalid_type(path: &[&str], expected: &str, received: &str) -> Value {
    json!({
        "code": "invalid_type",
        "expected": expected,
        "received": received,
        "path": path,
        "message": format!("Expected {expected}, received {received}"),
    })
}
