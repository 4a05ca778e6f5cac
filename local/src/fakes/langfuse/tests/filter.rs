//! The v2 observations' JSON `filter` and the URL length cap.

use super::*;

const PATH: &str = "/api/public/v2/observations";

/// Three traces of two observations each.
async fn three_traces() -> LangfuseFake {
    let fake = LangfuseFake::start(PK, SK).await;
    for (i, id) in ["ta", "tb", "tc"].iter().enumerate() {
        let (at, later) = (t(i as i64 * 10), t(i as i64 * 10 + 1));
        let trace = FakeTrace::new(*id, at)
            .observation(FakeObservation::span(format!("{id}-1"), *id, at, at))
            .observation(FakeObservation::span(format!("{id}-2"), *id, later, later));
        fake.add_trace(trace);
    }
    fake
}

fn any_of(ids: &[&str]) -> String {
    json!([{"type": "stringOptions", "column": "traceId", "operator": "any of", "value": ids}])
        .to_string()
}

#[tokio::test]
async fn trace_ids_any_of_selects_their_observations_across_pages() {
    let fake = three_traces().await;
    let filter = any_of(&["ta", "tc", "unknown"]);
    let (status, _, first) = get(&fake, PATH, &[("filter", &filter), ("limit", "3")]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), vec!["tc-2", "tc-1", "ta-2"], "newest first");
    let cursor = first["meta"]["cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let query = [
        ("filter", filter.as_str()),
        ("limit", "3"),
        ("cursor", &cursor),
    ];
    let (_, _, second) = get(&fake, PATH, &query).await;
    assert_eq!(ids(&second), vec!["ta-1"]);
    assert!(second["meta"].get("cursor").is_none());
    // The filter takes precedence over the plain query filters.
    let (_, _, body) = get(
        &fake,
        PATH,
        &[("filter", &any_of(&["tb"])), ("traceId", "ta")],
    )
    .await;
    assert_eq!(ids(&body), vec!["tb-2", "tb-1"]);
    // Other conditions combine with it (all must hold).
    let both = json!([
        {"type": "stringOptions", "column": "traceId", "operator": "any of", "value": ["ta", "tb"]},
        {"type": "string", "column": "id", "operator": "ends with", "value": "-1"},
        {"type": "datetime", "column": "startTime", "operator": ">=", "value": "2026-01-01T00:00:05Z"},
    ])
    .to_string();
    let (_, _, body) = get(&fake, PATH, &[("filter", &both)]).await;
    assert_eq!(ids(&body), vec!["tb-1"]);
}

#[tokio::test]
async fn filters_langfuse_would_refuse_answer_400() {
    let fake = three_traces().await;
    let bad = [
        "not json".to_string(),
        json!({"type": "stringOptions"}).to_string(),
        json!([{"type": "stringOptions", "column": "nope", "operator": "any of", "value": []}]).to_string(),
        json!([{"type": "stringOptions", "column": "startTime", "operator": "any of", "value": ["x"]}]).to_string(),
        json!([{"type": "stringOptions", "column": "traceId", "operator": "=", "value": ["x"]}]).to_string(),
        json!([{"type": "stringOptions", "column": "traceId", "operator": "any of", "value": "ta"}]).to_string(),
        json!([{"type": "stringOptions", "column": "traceId", "operator": "any of", "value": [1]}]).to_string(),
        json!([{"type": "datetime", "column": "startTime", "operator": ">", "value": "yesterday"}]).to_string(),
        json!([{"column": "traceId", "operator": "any of", "value": ["ta"]}]).to_string(),
    ];
    for filter in bad {
        let (status, _, body) = get(&fake, PATH, &[("filter", &filter)]).await;
        assert_eq!(status, 400, "{filter}: {body}");
    }
}

#[tokio::test]
async fn a_url_over_the_configured_length_is_refused() {
    let fake = three_traces().await;
    fake.set_max_url_bytes(Some(1000));
    let many: Vec<String> = (0..100).map(|i| format!("trace-{i:04}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let response = reqwest::Client::new()
        .get(format!("{}{PATH}", fake.base_url()))
        .basic_auth(PK, Some(SK))
        .query(&[("filter", any_of(&refs))])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 414);
    let (status, _, _) = get(&fake, PATH, &[("filter", &any_of(&["ta"]))]).await;
    assert_eq!(status, 200, "a short one still passes");
}
