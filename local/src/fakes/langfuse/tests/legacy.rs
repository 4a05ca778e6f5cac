use super::*;

#[tokio::test]
async fn legacy_trace_list_pages_and_metrics() {
    let fake = seeded().await;
    for i in 1..=4 {
        fake.add_trace(FakeTrace::new(format!("t{}", i + 1), t(i * 10)).user("u2"));
    }
    let path = "/api/public/traces";

    let (status, _, page1) = get(&fake, path, &[("limit", "2")]).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page1), ["t5", "t4"]);
    assert_eq!(
        page1["meta"],
        json!({"page": 1, "limit": 2, "totalItems": 5, "totalPages": 3})
    );
    let (_, _, page3) = get(&fake, path, &[("limit", "2"), ("page", "3")]).await;
    assert_eq!(ids(&page3), ["t1"]);
    let (_, _, page4) = get(&fake, path, &[("limit", "2"), ("page", "4")]).await;
    assert_eq!(ids(&page4), Vec::<String>::new());
    let (_, _, asc) = get(&fake, path, &[("orderBy", "timestamp.asc"), ("limit", "2")]).await;
    assert_eq!(ids(&asc), ["t1", "t2"]);

    // Default: all groups.
    let t1 = &page3["data"][0];
    assert_eq!(
        t1["latency"],
        json!(5.0),
        "seconds from first start to last end"
    );
    assert_eq!(t1["totalCost"], json!(0.003));
    assert_eq!(t1["observations"], json!(["o1", "o2"]));
    assert_eq!(t1["metadata"], json!({"stripeCustomerId": "cus_1"}));
    assert_eq!(t1["userId"], "u1");
    assert_eq!(t1["timestamp"], "2026-01-01T00:00:00.000Z");
    assert_eq!(t1["htmlPath"], format!("/project/{PROJECT_ID}/traces/t1"));

    // Without metrics: -1; without observations / io: empty.
    let (_, _, core) = get(&fake, path, &[("fields", "core"), ("userId", "u1")]).await;
    let t1 = &core["data"][0];
    assert_eq!(t1["latency"], json!(-1.0));
    assert_eq!(t1["totalCost"], json!(-1.0));
    assert_eq!(t1["observations"], json!([]));
    assert_eq!(t1["metadata"], Value::Null);
    let (_, _, metrics) = get(&fake, path, &[("fields", "core,metrics"), ("userId", "u1")]).await;
    assert_eq!(metrics["data"][0]["latency"], json!(5.0));

    // Filters: fromTimestamp inclusive, toTimestamp exclusive, tags.
    let (_, _, window) = get(
        &fake,
        path,
        &[
            ("fromTimestamp", "2026-01-01T00:00:10Z"),
            ("toTimestamp", "2026-01-01T00:00:30Z"),
        ],
    )
    .await;
    assert_eq!(ids(&window), ["t3", "t2"]);
    let (_, _, tagged) = get(&fake, path, &[("tags", "prod")]).await;
    assert_eq!(ids(&tagged), ["t1"]);

    for bad in [
        vec![("page", "0")],
        vec![("page", "-1")],
        vec![("limit", "0")],
        vec![("limit", "101")],
        vec![("orderBy", "timestamp.sideways")],
        vec![("fields", "core,usage")],
        vec![("fromTimestamp", "not-a-date")],
    ] {
        let (status, _, body) = get(&fake, path, &bad).await;
        assert_eq!(status, 400, "{bad:?} → {body}");
    }
}

#[tokio::test]
async fn legacy_trace_by_id_and_404() {
    let fake = seeded().await;
    let (status, _, trace) = get(&fake, "/api/public/traces/t1", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(trace["id"], "t1");
    assert_eq!(trace["latency"], json!(5.0));
    assert_eq!(trace["totalCost"], json!(0.003));
    let o1 = &trace["observations"][0];
    assert_eq!(o1["id"], "o1");
    assert_eq!(o1["traceId"], "t1");
    assert_eq!(o1["type"], "GENERATION");
    assert_eq!(o1["model"], "gpt-4o");
    assert_eq!(
        o1["usage"],
        json!({"input": 100, "output": 50, "total": 150, "unit": "TOKENS",
               "inputCost": 0.002, "outputCost": 0.001, "totalCost": 0.003})
    );
    assert_eq!(o1["calculatedTotalCost"], json!(0.003));
    assert_eq!(o1["latency"], json!(2.0));
    assert_eq!(trace["observations"][1]["traceId"], "t1", "normalised");
    assert_eq!(trace["observations"][1]["usage"]["total"], json!(0));

    let (_, _, core) = get(&fake, "/api/public/traces/t1", &[("fields", "core")]).await;
    assert_eq!(core["totalCost"], json!(-1.0));
    assert_eq!(core["observations"], json!([]));

    let (status, _, body) = get(&fake, "/api/public/traces/missing", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"message": "Trace missing not found within authorized project",
               "error": "LangfuseNotFoundError"})
    );

    assert!(fake.remove_trace("t1"));
    let (status, _, _) = get(&fake, "/api/public/traces/t1", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn late_observation_is_appended_to_its_trace() {
    let fake = seeded().await;
    fake.add_observation(FakeObservation::generation(
        "o-late",
        "t1",
        t(8),
        t(10),
        "gpt-4o",
        10,
        10,
        0.001,
    ));
    let (_, _, trace) = get(&fake, "/api/public/traces/t1", &[]).await;
    assert_eq!(trace["observations"].as_array().expect("array").len(), 3);
    assert_eq!(trace["latency"], json!(10.0));
    let total = trace["totalCost"].as_f64().expect("number");
    assert!((total - 0.004).abs() < 1e-12, "{total}");

    // An observation for an unknown trace creates it.
    fake.add_observation(FakeObservation::span("x1", "t-new", t(50), t(51)));
    let (status, _, created) = get(&fake, "/api/public/traces/t-new", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(created["timestamp"], "2026-01-01T00:00:50.000Z");
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let fake = seeded().await;
    fake.set_rate_limit(Some(2));
    let path = "/api/public/v2/observations";
    let now = Utc::now().timestamp();

    // An unauthenticated request is not counted.
    let unauthenticated = reqwest::get(format!("{}{path}", fake.base_url()))
        .await
        .expect("request");
    assert_eq!(unauthenticated.status().as_u16(), 401);

    let (status, headers, _) = get(&fake, path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-limit"), "2");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "1");
    let (status, headers, _) = get(&fake, path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");

    let (status, headers, body) = get(&fake, "/api/public/traces", &[]).await;
    assert_eq!(status, 429);
    assert!(body["message"].is_string());
    let retry_after: u64 = header(&headers, "retry-after").parse().expect("integer");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&headers, "x-ratelimit-limit"), "2");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    let reset: i64 = header(&headers, "x-ratelimit-reset")
        .parse()
        .expect("integer");
    assert!(reset > now && reset <= now + 62, "{reset} vs {now}");

    fake.set_rate_limit(None);
    let (status, headers, _) = get(&fake, path, &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn fail_next_injects_errors_then_recovers() {
    let fake = seeded().await;
    fake.fail_next(2, 503);
    let path = "/api/public/traces/t1";
    for _ in 0..2 {
        let (status, headers, body) = get(&fake, path, &[]).await;
        assert_eq!(status, 503);
        assert!(body["message"].is_string());
        assert!(headers.get("retry-after").is_none());
    }
    let (status, _, _) = get(&fake, path, &[]).await;
    assert_eq!(status, 200);

    fake.fail_next(1, 429);
    let (status, headers, _) = get(&fake, path, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(
        fake.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 200, 429]
    );
}

#[tokio::test]
async fn scores_upsert_by_id_and_validate() {
    let fake = seeded().await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/public/scores", fake.base_url());
    let post = |body: Value| {
        client
            .post(&url)
            .basic_auth(PK, Some(SK))
            .json(&body)
            .send()
    };

    for value in [1, 2] {
        let response = post(json!({"id": "billed-t1", "traceId": "t1", "name": "billed",
                                   "value": value, "dataType": "NUMERIC"}))
        .await
        .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body, json!({"id": "billed-t1"}));
    }
    let response = post(json!({"traceId": "t1", "name": "status", "value": "billed"}))
        .await
        .expect("request");
    let generated: Value = response.json().await.expect("JSON");
    assert!(!generated["id"].as_str().expect("id").is_empty());

    let scores = fake.scores();
    assert_eq!(scores.len(), 2);
    assert_eq!(scores[0]["id"], "billed-t1");
    assert_eq!(scores[0]["value"], json!(2));

    for bad in [
        json!({"name": "x"}),
        json!({"value": 1}),
        json!({"name": "x", "value": [1]}),
    ] {
        let response = post(bad).await.expect("request");
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["message"], "Invalid request data");
    }
    assert_eq!(fake.scores().len(), 2);

    let (_, _, trace) = get(&fake, "/api/public/traces/t1", &[]).await;
    assert_eq!(trace["scores"][0]["id"], "billed-t1");
    assert_eq!(trace["scores"][0]["value"], json!(2));
    assert_eq!(trace["scores"][1]["stringValue"], "billed");
    let (_, _, list) = get(&fake, "/api/public/traces", &[("userId", "u1")]).await;
    assert_eq!(list["data"][0]["scores"][0], "billed-t1");
}

#[tokio::test]
async fn unknown_routes_latency_and_shutdown() {
    let fake = seeded().await;
    let (status, _, body) = get(&fake, "/api/public/ingestion", &[]).await;
    assert_eq!(status, 404);
    assert!(body["message"].is_string());
    let response = reqwest::Client::new()
        .delete(format!("{}/api/public/v2/observations", fake.base_url()))
        .basic_auth(PK, Some(SK))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 405);

    fake.set_latency(Duration::from_millis(400));
    let slow = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client")
        .get(format!("{}/api/public/traces", fake.base_url()))
        .basic_auth(PK, Some(SK))
        .send()
        .await;
    assert!(slow.expect_err("times out").is_timeout());
    fake.set_latency(Duration::ZERO);
    // The fake still answers (and records) the abandoned request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests().last().map(|r| r.status), Some(200));

    let base = fake.base_url();
    fake.shutdown_and_wait().await;
    let after = reqwest::Client::new()
        .get(format!("{base}/api/public/traces"))
        .send()
        .await;
    assert!(after.is_err(), "server still serving after shutdown");
}
