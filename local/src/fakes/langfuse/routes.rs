//! The endpoints: the v2 observations, the legacy trace list and trace, score creation.

use super::json::*;
use super::params::*;
use super::*;

impl LangfuseState {
    /// Answers one request; also says whether it was authenticated.
    pub(super) fn respond(&mut self, incoming: &Incoming) -> (Reply, bool) {
        if let Some(max) = self.max_url_bytes
            && incoming.path.len() + incoming.query.as_ref().map_or(0, |q| q.len() + 1) > max
        {
            let message = format!("URI Too Long: request targets over {max} bytes are refused");
            return (error(414, &message, "URITooLong"), false);
        }
        let route = match Route::parse(&incoming.method, &incoming.path) {
            Ok(route) => route,
            Err(reply) => return (reply, false),
        };
        if let Some(status) = self.fail.take() {
            return (injected_failure(status), false);
        }
        if !self.authorized(incoming) {
            return (
                Reply::json(401, &json!({"message": "Invalid authorization header"})).header(
                    header::WWW_AUTHENTICATE.as_str(),
                    "Basic realm=\"Langfuse\"",
                ),
                false,
            );
        }
        let decision = self.rate.check();
        if let RateDecision::Limited {
            limit,
            retry_after_secs,
            reset_unix,
        } = decision
        {
            let reply = error(
                429,
                "Rate limit exceeded, please retry after the time in the Retry-After header",
                "TooManyRequests",
            )
            .header("Retry-After", retry_after_secs)
            .header("X-RateLimit-Limit", limit)
            .header("X-RateLimit-Remaining", 0)
            .header("X-RateLimit-Reset", reset_unix);
            return (reply, true);
        }
        let mut reply = match incoming.query_params() {
            Err(message) => bad_request(&message),
            Ok(params) => {
                let params = Params(params);
                let result = match route {
                    Route::ObservationsV2 => self.observations_v2(&params),
                    Route::Traces => self.list_traces(&params),
                    Route::Trace(id) => self.get_trace(&id, &params),
                    Route::Scores => Ok(self.create_score(incoming)),
                };
                result.unwrap_or_else(|reply| reply)
            }
        };
        if let RateDecision::Allowed {
            limit,
            remaining,
            reset_unix,
        } = decision
        {
            reply.set_header("X-RateLimit-Limit", limit);
            reply.set_header("X-RateLimit-Remaining", remaining);
            reply.set_header("X-RateLimit-Reset", reset_unix);
        }
        (reply, true)
    }

    fn authorized(&self, incoming: &Incoming) -> bool {
        let Some((scheme, credentials)) = incoming
            .header(header::AUTHORIZATION)
            .and_then(|value| value.trim().split_once(' '))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = STANDARD.decode(credentials.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        decoded.split_once(':') == Some((self.public_key.as_str(), self.secret_key.as_str()))
    }

    /// `GET /api/public/v2/observations`.
    fn observations_v2(&self, params: &Params) -> Result<Reply, Reply> {
        // A JSON `filter` takes precedence over the plain query filters.
        let filter = params
            .get("filter")
            .map(filter::parse)
            .transpose()
            .map_err(|message| bad_request(&message))?;
        if params.get("parseIoAsJson") == Some("true") {
            return Err(bad_request(
                "parseIoAsJson is deprecated: input/output are always returned as raw strings",
            ));
        }
        let groups = parse_groups(params.get("fields"), V2_GROUPS, V2_DEFAULT_GROUPS)?;
        let limit = params.bounded_int("limit", 50, 1, 1000)?;
        let cursor = params.get("cursor").map(Cursor::decode).transpose()?;
        let from = params.datetime("fromStartTime")?;
        let to = params.datetime("toStartTime")?;
        let trace_id = params.get("traceId");
        let r#type = params.get("type");
        let user_id = params.get("userId");
        let session_id = params.get("sessionId");
        let name = params.get("name");

        let mut rows: Vec<(&FakeTrace, &FakeObservation)> = self
            .traces
            .values()
            .flat_map(|trace| trace.observations.iter().map(move |o| (trace, o)))
            .filter(|(trace, o)| match &filter {
                Some(conditions) => {
                    filter::matches(conditions, trace, o)
                        && cursor.as_ref().is_none_or(|c| c.is_before(o))
                }
                None => {
                    trace_id.is_none_or(|id| o.trace_id == id)
                        && r#type.is_none_or(|t| o.r#type == t)
                        && user_id.is_none_or(|u| effective_user(trace, o) == Some(u))
                        && session_id.is_none_or(|s| trace.session_id.as_deref() == Some(s))
                        && name.is_none_or(|n| o.name.as_deref() == Some(n))
                        && from.is_none_or(|from| o.start_time >= from)
                        && to.is_none_or(|to| o.start_time < to)
                        && cursor.as_ref().is_none_or(|c| c.is_before(o))
                }
            })
            .collect();
        // Newest first; ties by id (descending) so the order is total and stable.
        rows.sort_by(|(_, a), (_, b)| {
            b.start_time
                .cmp(&a.start_time)
                .then_with(|| b.id.cmp(&a.id))
        });
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|(_, o)| Cursor::after(o).encode())
        } else {
            None
        };
        let data: Vec<Value> = rows
            .iter()
            .map(|(trace, o)| observation_v2_json(trace, o, &groups))
            .collect();
        let meta = match next_cursor {
            Some(cursor) => json!({ "cursor": cursor }),
            None => json!({}),
        };
        Ok(Reply::json(200, &json!({ "data": data, "meta": meta })))
    }

    /// `GET /api/public/traces`.
    fn list_traces(&self, params: &Params) -> Result<Reply, Reply> {
        if params.get("filter").is_some() {
            return Err(bad_request(
                "LangfuseFake does not support the JSON `filter` parameter; use the query \
                 parameter filters (userId, name, sessionId, tags, fromTimestamp, toTimestamp)",
            ));
        }
        let page = params.bounded_int("page", 1, 1, i64::from(u32::MAX))?;
        let limit = params.bounded_int("limit", 50, 1, 100)?;
        let groups = parse_groups(params.get("fields"), LEGACY_GROUPS, LEGACY_GROUPS)?;
        let from = params.datetime("fromTimestamp")?;
        let to = params.datetime("toTimestamp")?;
        let order = TraceOrder::parse(params.get("orderBy"))?;
        let user_id = params.get("userId");
        let session_id = params.get("sessionId");
        let name = params.get("name");
        let tags = params.all("tags");

        let mut traces: Vec<&FakeTrace> = self
            .traces
            .values()
            .filter(|t| {
                user_id.is_none_or(|u| t.user_id.as_deref() == Some(u))
                    && session_id.is_none_or(|s| t.session_id.as_deref() == Some(s))
                    && name.is_none_or(|n| t.name.as_deref() == Some(n))
                    && from.is_none_or(|from| t.timestamp >= from)
                    && to.is_none_or(|to| t.timestamp < to)
                    && tags.iter().all(|tag| t.tags.iter().any(|have| have == tag))
            })
            .collect();
        traces.sort_by(|a, b| order.compare(a, b));
        let total_items = traces.len();
        let total_pages = total_items.div_ceil(limit);
        let data: Vec<Value> = traces
            .into_iter()
            .skip((page - 1).saturating_mul(limit))
            .take(limit)
            .map(|t| self.trace_json(t, &groups, false))
            .collect();
        Ok(Reply::json(
            200,
            &json!({
                "data": data,
                "meta": {
                    "page": page,
                    "limit": limit,
                    "totalItems": total_items,
                    "totalPages": total_pages,
                },
            }),
        ))
    }

    /// `GET /api/public/traces/{traceId}`.
    fn get_trace(&self, id: &str, params: &Params) -> Result<Reply, Reply> {
        let groups = parse_groups(params.get("fields"), LEGACY_GROUPS, LEGACY_GROUPS)?;
        let Some(trace) = self.traces.get(id) else {
            return Err(error(
                404,
                &format!("Trace {id} not found within authorized project"),
                "LangfuseNotFoundError",
            ));
        };
        Ok(Reply::json(200, &self.trace_json(trace, &groups, true)))
    }

    /// `POST /api/public/scores`.
    fn create_score(&mut self, incoming: &Incoming) -> Reply {
        let body: Value = match serde_json::from_slice(&incoming.body) {
            Ok(body) => body,
            Err(e) => return bad_request(&format!("Invalid JSON body: {e}")),
        };
        let Value::Object(mut score) = body else {
            return invalid_request_data(vec![issue_invalid_type(&[], "object", "other")]);
        };
        let mut issues = Vec::new();
        match score.get("name") {
            Some(Value::String(name)) if !name.is_empty() => {}
            None | Some(Value::Null) => issues.push(issue_required("name", "string")),
            Some(_) => issues.push(issue_invalid_type(&["name"], "string", "other")),
        }
        match score.get("value") {
            Some(Value::Number(_) | Value::String(_)) => {}
            None | Some(Value::Null) => issues.push(issue_required("value", "number | string")),
            Some(_) => issues.push(issue_invalid_type(&["value"], "number | string", "other")),
        }
        for key in [
            "id",
            "traceId",
            "sessionId",
            "observationId",
            "datasetRunId",
            "comment",
            "dataType",
            "configId",
        ] {
            if let Some(value) = score.get(key)
                && !(value.is_string() || value.is_null())
            {
                issues.push(issue_invalid_type(&[key], "string", "other"));
            }
        }
        if !issues.is_empty() {
            return invalid_request_data(issues);
        }
        let id = match score.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => fake_uuid(),
        };
        score.insert("id".to_owned(), Value::String(id.clone()));
        let now = Utc::now();
        match self
            .scores
            .iter_mut()
            .find(|s| s.body.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            Some(existing) => {
                existing.body = Value::Object(score);
                existing.updated_at = now;
            }
            None => self.scores.push(StoredScore {
                body: Value::Object(score),
                created_at: now,
                updated_at: now,
            }),
        }
        Reply::json(200, &json!({ "id": id }))
    }

    fn trace_scores<'a>(&'a self, trace_id: &'a str) -> impl Iterator<Item = &'a StoredScore> {
        self.scores
            .iter()
            .filter(move |s| s.body.get("traceId").and_then(Value::as_str) == Some(trace_id))
    }

    /// TraceWithDetails (`full == false`) or TraceWithFullDetails (`full == true`).
    fn trace_json(&self, trace: &FakeTrace, groups: &BTreeSet<String>, full: bool) -> Value {
        let io = groups.contains("io");
        let metrics = groups.contains("metrics");
        let observations: Vec<Value> = if groups.contains("observations") {
            let mut sorted: Vec<&FakeObservation> = trace.observations.iter().collect();
            sorted.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.id.cmp(&b.id)));
            sorted
                .into_iter()
                .map(|o| {
                    if full {
                        observation_view_json(o)
                    } else {
                        Value::String(o.id.clone())
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let scores: Vec<Value> = if groups.contains("scores") {
            self.trace_scores(&trace.id)
                .map(|s| {
                    if full {
                        score_v1_json(s)
                    } else {
                        s.body.get("id").cloned().unwrap_or(Value::Null)
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "id": trace.id,
            "timestamp": iso(&trace.timestamp),
            "name": trace.name,
            "input": Value::Null,
            "output": Value::Null,
            "sessionId": trace.session_id,
            "release": Value::Null,
            "version": Value::Null,
            "userId": trace.user_id,
            "metadata": if io { trace.metadata.clone() } else { Value::Null },
            "tags": trace.tags,
            "public": false,
            "environment": "default",
            "htmlPath": format!("/project/{PROJECT_ID}/traces/{}", trace.id),
            "latency": if metrics { trace.latency_seconds() } else { -1.0 },
            "totalCost": if metrics { trace.total_cost_usd() } else { -1.0 },
            "observations": observations,
            "scores": scores,
        })
    }
}
