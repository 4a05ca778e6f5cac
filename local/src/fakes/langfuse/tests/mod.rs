#![allow(clippy::unwrap_used)]

mod filter;
mod legacy;

use super::*;
use chrono::TimeZone;
use reqwest::header::HeaderMap;
use std::collections::HashSet;

const PK: &str = "pk-lf-test";
const SK: &str = "sk-lf-test";

/// 2026-01-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + secs, 0)
        .single()
        .expect("valid time")
}

async fn get(fake: &LangfuseFake, path: &str, query: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", fake.base_url()))
        .basic_auth(PK, Some(SK))
        .query(query)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.expect("JSON body");
    (status, headers, body)
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_owned())
        .collect()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

/// t1 (user u1, cus_1): generation o1 [0s, 2s] 100/50 tokens 0.003 USD, span o2 [1s, 5s].
async fn seeded() -> LangfuseFake {
    let fake = LangfuseFake::start(PK, SK).await;
    fake.add_trace(
        FakeTrace::new("t1", t(0))
            .name("chat")
            .user("u1")
            .session("s1")
            .meta("stripeCustomerId", "cus_1")
            .tag("prod")
            .observation(FakeObservation::generation(
                "o1",
                "t1",
                t(0),
                t(2),
                "gpt-4o",
                100,
                50,
                0.003,
            ))
            .observation(FakeObservation::span("o2", "ignored", t(1), t(5)).name("tool")),
    );
    fake
}

#[tokio::test]
async fn auth_is_http_basic_with_public_and_secret_key() {
    let fake = seeded().await;
    let url = format!("{}/api/public/v2/observations", fake.base_url());
    let client = reqwest::Client::new();
    let attempts = [
        client.get(&url),
        client.get(&url).basic_auth(PK, Some("wrong")),
        client.get(&url).bearer_auth(SK),
        client.get(&url).basic_auth(PK, Some(SK)),
    ];
    let mut statuses = Vec::new();
    for attempt in attempts {
        let response = attempt.send().await.expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        if status == 401 {
            assert_eq!(body, json!({"message": "Invalid authorization header"}));
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 200]);
    let recorded = fake.requests();
    assert_eq!(
        recorded.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 401, 401, 200]
    );
    assert_eq!(
        recorded.iter().map(|r| r.authenticated).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(recorded[3].method, "GET");
    assert_eq!(recorded[3].path, "/api/public/v2/observations");
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn v2_cursor_pagination_is_stable_under_inserts() {
    let fake = LangfuseFake::start(PK, SK).await;
    // Seven observations over two traces; o2 and o3 share a start time (tie broken by id).
    for (i, secs) in [10, 20, 30, 30, 50, 60, 70].into_iter().enumerate() {
        let trace = if i % 2 == 0 { "ta" } else { "tb" };
        fake.add_observation(FakeObservation::generation(
            format!("o{i}"),
            trace,
            t(secs),
            t(secs + 1),
            "m",
            1,
            1,
            0.001,
        ));
    }
    let (status, _, page1) = get(&fake, "/api/public/v2/observations", &[("limit", "3")]).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page1), ["o6", "o5", "o4"]);
    let mut cursor = page1["meta"]["cursor"]
        .as_str()
        .expect("cursor on a non-last page")
        .to_owned();

    // Inserted between pages: one newer than everything, one older, and two at the cursor's
    // start time (o4 @50s) on either side of its id.
    fake.add_observation(FakeObservation::span("o9-new", "ta", t(100), t(101)));
    fake.add_observation(FakeObservation::span("o0-old", "tb", t(1), t(2)));
    fake.add_observation(FakeObservation::span("o5-tie", "ta", t(50), t(51)));
    fake.add_observation(FakeObservation::span("o35-tie", "ta", t(50), t(51)));

    let mut seen = ids(&page1);
    loop {
        let (status, _, page) = get(
            &fake,
            "/api/public/v2/observations",
            &[("limit", "3"), ("cursor", &cursor)],
        )
        .await;
        assert_eq!(status, 200);
        seen.extend(ids(&page));
        match page["meta"].get("cursor").and_then(Value::as_str) {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates in {seen:?}");
    // Everything after the cursor position, nothing before it.
    assert_eq!(
        seen,
        [
            "o6", "o5", "o4", "o35-tie", "o3", "o2", "o1", "o0", "o0-old"
        ]
    );

    // A fresh scan sees the newer rows too.
    let (_, _, all) = get(&fake, "/api/public/v2/observations", &[("limit", "1000")]).await;
    assert_eq!(ids(&all).len(), 11);
    assert_eq!(ids(&all)[0], "o9-new");
    assert!(all["meta"].get("cursor").is_none_or(Value::is_null));
}

#[tokio::test]
async fn v2_default_field_groups_are_core_and_basic() {
    let fake = seeded().await;
    fake.add_observation(
        FakeObservation::generation("o3", "t1", t(6), t(7), "gpt-4o-mini", 10, 5, 0.0001)
            .user("u-own"),
    );
    let path = "/api/public/v2/observations";

    let (_, _, default) = get(&fake, path, &[("traceId", "t1")]).await;
    let o1 = default["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|o| o["id"] == "o1")
        .expect("o1");
    for key in [
        "id",
        "traceId",
        "startTime",
        "endTime",
        "projectId",
        "parentObservationId",
        "type",
        "name",
        "level",
        "userId",
        "sessionId",
        "isRootObservation",
        "environment",
    ] {
        assert!(o1.get(key).is_some(), "default field {key} missing: {o1}");
    }
    for key in [
        "usageDetails",
        "costDetails",
        "totalCost",
        "metadata",
        "latency",
        "tags",
    ] {
        assert!(
            o1.get(key).is_none(),
            "{key} returned without its group: {o1}"
        );
    }
    assert_eq!(o1["startTime"], "2026-01-01T00:00:00.000Z");
    assert_eq!(o1["endTime"], "2026-01-01T00:00:02.000Z");
    assert_eq!(o1["type"], "GENERATION");
    assert_eq!(o1["userId"], "u1", "inherited from the trace");
    assert_eq!(o1["sessionId"], "s1");
    assert_eq!(default["data"][0]["id"], "o3");
    assert_eq!(default["data"][0]["userId"], "u-own");
}

#[tokio::test]
async fn v2_field_groups_requested_are_served() {
    let fake = seeded().await;
    fake.add_observation(
        FakeObservation::generation("o3", "t1", t(6), t(7), "gpt-4o-mini", 10, 5, 0.0001)
            .user("u-own"),
    );
    let path = "/api/public/v2/observations";
    let (_, _, selected) = get(
        &fake,
        path,
        &[
            ("traceId", "t1"),
            ("type", "GENERATION"),
            ("fields", "core,usage,model,metrics,trace_context,metadata"),
        ],
    )
    .await;
    assert_eq!(ids(&selected), ["o3", "o1"]);
    let o1 = &selected["data"][1];
    assert!(o1.get("name").is_none(), "basic not requested: {o1}");
    assert_eq!(
        o1["usageDetails"],
        json!({"input": 100, "output": 50, "total": 150})
    );
    assert_eq!(o1["costDetails"]["total"], json!(0.003));
    assert_eq!(o1["totalCost"], json!(0.003));
    assert_eq!(o1["providedModelName"], "gpt-4o");
    assert_eq!(o1["latency"], json!(2.0));
    assert_eq!(o1["tags"], json!(["prod"]));
    assert_eq!(o1["traceName"], "chat");
    assert_eq!(
        o1["metadata"],
        json!({"stripeCustomerId": "cus_1"}),
        "trace metadata propagated to observations"
    );

    let (status, _, body) = get(&fake, path, &[("fields", "core,bogus")]).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("message").contains("bogus"));
}

#[tokio::test]
async fn v2_validates_limit_cursor_and_filters() {
    let fake = seeded().await;
    let path = "/api/public/v2/observations";
    for bad in [
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "ten")],
        vec![("cursor", "not base64!")],
        vec![("cursor", "eyJub3BlIjoxfQ==")],
        vec![("fromStartTime", "yesterday")],
        vec![("toStartTime", "2026-13-01T00:00:00Z")],
    ] {
        let (status, _, body) = get(&fake, path, &bad).await;
        assert_eq!(status, 400, "{bad:?} → {body}");
        assert!(body["message"].is_string());
    }
    let (status, _, _) = get(&fake, path, &[("limit", "1000")]).await;
    assert_eq!(status, 200);

    // fromStartTime inclusive, toStartTime exclusive.
    let (_, _, body) = get(
        &fake,
        path,
        &[
            ("fromStartTime", "2026-01-01T00:00:01Z"),
            ("toStartTime", "2026-01-01T00:00:05Z"),
        ],
    )
    .await;
    assert_eq!(ids(&body), ["o2"]);
    let (_, _, body) = get(&fake, path, &[("toStartTime", "2026-01-01T00:00:01Z")]).await;
    assert_eq!(ids(&body), ["o1"]);
    let (_, _, body) = get(&fake, path, &[("type", "SPAN")]).await;
    assert_eq!(ids(&body), ["o2"]);
    let (_, _, body) = get(&fake, path, &[("userId", "u1")]).await;
    assert_eq!(ids(&body), ["o2", "o1"]);
    let (_, _, body) = get(&fake, path, &[("traceId", "nope")]).await;
    assert_eq!(ids(&body), Vec::<String>::new());
}
