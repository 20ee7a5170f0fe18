//! `/agent`, `/agent/stream` and `/sessions` against real Postgres and Redis and the fake model:
//! storage, history, serialisation, idempotency, auth, rate limits, streaming, disconnects and
//! dependency failures.

use std::time::Duration;

use agent_core::Role;
use fake_openai::{FakeOpenAi, Scripted};
use futures_util::future::join_all;
use serde_json::{Value, json};
use test_support::sse;

use crate::helpers::{builder, closed_port, error_code, spawn, spawn_full, spawn_with_model};

fn text(answer: &str) -> Scripted {
    Scripted::text(answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_is_stored_and_its_history_reaches_the_model_on_the_next_turn() {
    let (app, fake) = spawn_full(
        vec![
            Scripted::tool_call("calculator", json!({ "expression": "2+3*4" })),
            text("It is 14."),
            text("You asked about 2+3*4."),
        ],
        &[],
    )
    .await;
    let first = app.agent(json!({ "message": "what is 2+3*4?" })).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["response"], "It is 14.");
    assert_eq!(first["tokens_used"], 30);
    let session = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(session.len(), 36, "a server-made UUID");

    let stored = app.stored(&session).await;
    let roles: Vec<Role> = stored.iter().map(|message| message.message.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );

    let second = app
        .agent(json!({ "message": "what did I ask?", "session_id": session }))
        .await;
    assert_eq!(second.status(), 200);
    let requests = fake.requests().await;
    let sent: Vec<(String, String)> = requests[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| {
            (
                message["role"].as_str().unwrap().to_owned(),
                message["content"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(sent[1], ("user".to_owned(), "what is 2+3*4?".to_owned()));
    assert_eq!(sent[3], ("tool".to_owned(), "14".to_owned()));
    assert_eq!(
        sent.last().unwrap(),
        &("user".to_owned(), "what did I ask?".to_owned())
    );

    let view: Value = app
        .get(&format!("/sessions/{session}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["turn_count"], 2);
    assert_eq!(view["tokens"]["total"], 45);
    assert_eq!(view["messages"].as_array().unwrap().len(), 6);
    assert_eq!(view["messages"][1]["tool_calls"][0]["name"], "calculator");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_chosen_session_id_is_created_and_invalid_ids_are_refused() {
    let (app, _fake) = spawn_full(vec![text("hi")], &[]).await;
    let response = app
        .agent(json!({ "message": "hello", "session_id": "client-chosen.42" }))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.stored("client-chosen.42").await.len(), 2);
    let response = app
        .agent(json!({ "message": "hello", "session_id": "../../etc" }))
        .await;
    assert_eq!(response.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_on_one_session_are_serialised_and_none_is_lost() {
    let fake = FakeOpenAi::repeating(Scripted::Slow(
        Duration::from_millis(30),
        Box::new(text("ok")),
    ))
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let requests = (0..8).map(|index| {
        app.agent(json!({ "message": format!("message {index}"), "session_id": "shared" }))
    });
    let statuses: Vec<u16> = join_all(requests)
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert_eq!(statuses, [200; 8]);
    let stored = app.stored("shared").await;
    let sequences: Vec<u64> = stored.iter().map(|message| message.sequence).collect();
    assert_eq!(sequences, (0..16).collect::<Vec<u64>>());
    // Turns never interleave: each user message is followed by its own answer.
    for pair in stored.chunks(2) {
        assert_eq!(
            (pair[0].message.role, pair[1].message.role),
            (Role::User, Role::Assistant)
        );
    }
    // Every turn after the first saw the ones before it.
    let sizes: Vec<usize> = fake
        .requests()
        .await
        .iter()
        .map(|request| request["messages"].as_array().unwrap().len())
        .collect();
    let mut sorted = sizes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..8).map(|turn| 2 + 2 * turn).collect::<Vec<usize>>(),
        "{sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waiting_too_long_for_a_busy_session_gets_409() {
    let fake = FakeOpenAi::repeating(Scripted::Slow(
        Duration::from_secs(3),
        Box::new(text("slow")),
    ))
    .await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API__LOCK_WAIT", "100ms"),
            ("AGENT_MODEL__REQUEST_TIMEOUT", "30s"),
        ],
    )
    .await;
    let (first, second) = tokio::join!(
        app.agent(json!({ "message": "one", "session_id": "busy" })),
        async {
            // The first holds the session's lock once its model call has begun.
            fake.received(1).await;
            app.agent(json!({ "message": "two", "session_id": "busy" }))
                .await
        }
    );
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(error_code(&body), "session_busy");
    assert_eq!(
        app.stored("busy").await.len(),
        2,
        "only the first turn is stored"
    );
}

async fn post_with_key(app: &crate::helpers::TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/agent", app.address))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_runs_the_turn_once_even_when_the_retry_arrives_during_it() {
    let fake = FakeOpenAi::repeating(Scripted::Slow(
        Duration::from_secs(2),
        Box::new(text("once")),
    ))
    .await;
    let app = spawn_with_model(&fake, &[("AGENT_MODEL__REQUEST_TIMEOUT", "30s")]).await;
    let body = json!({ "message": "charge my card", "session_id": "pay" });
    let (first, retry) = tokio::join!(post_with_key(&app, "key-1", body.clone()), async {
        // The first has claimed the key once its model call has begun.
        fake.received(1).await;
        post_with_key(&app, "key-1", body.clone()).await
    });
    assert_eq!(
        (first.status().as_u16(), retry.status().as_u16()),
        (200, 200)
    );
    assert!(!first.headers().contains_key("idempotent-replayed"));
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let (first, retry): (Value, Value) = (first.json().await.unwrap(), retry.json().await.unwrap());
    assert_eq!(first, retry);

    let later = post_with_key(&app, "key-1", body.clone()).await;
    assert_eq!(later.status(), 200);
    assert_eq!(later.json::<Value>().await.unwrap(), first);
    assert_eq!(fake.requests().await.len(), 1, "the turn ran once");
    assert_eq!(app.stored("pay").await.len(), 2);

    let reused = post_with_key(
        &app,
        "key-1",
        json!({ "message": "something else", "session_id": "pay" }),
    )
    .await;
    assert_eq!(reused.status(), 422);
    assert_eq!(
        error_code(&reused.json().await.unwrap()),
        "idempotency_key_reused"
    );
    // The same message in another format is another request.
    let mut formatted = body.clone();
    formatted["response_format"] = json!({ "type": "json_object" });
    assert_eq!(post_with_key(&app, "key-1", formatted).await.status(), 422);
    // A stream cannot be replayed: a key on one is refused before anything runs.
    let streamed = app
        .client
        .post(format!("{}/agent/stream", app.address))
        .header("idempotency-key", "key-3")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 400);
    let streamed: Value = streamed.json().await.unwrap();
    assert_eq!(error_code(&streamed), "invalid_request");
    let message = streamed["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Idempotency-Key"), "{message}");
    let invalid = post_with_key(&app, "bad key with spaces", body).await;
    assert_eq!(invalid.status(), 400);
    assert_eq!(fake.requests().await.len(), 1, "nothing else ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_idempotent_turn_can_be_retried() {
    let (app, fake) = spawn_full(vec![Scripted::status(400), text("second time lucky")], &[]).await;
    let body = json!({ "message": "try", "session_id": "retry" });
    assert_eq!(
        post_with_key(&app, "key-2", body.clone()).await.status(),
        502
    );
    let retried = post_with_key(&app, "key-2", body).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(fake.requests().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_api_keys_every_route_but_the_probes_needs_one() {
    let (app, _fake) = spawn_full(
        vec![text("hi"), text("hi again")],
        &[(
            "AGENT_API_KEYS",
            "first-key-0123456789,second-key-0123456789",
        )],
    )
    .await;
    let post = |key: Option<&str>| {
        let mut request = app
            .client
            .post(format!("{}/agent", app.address))
            .json(&json!({ "message": "hi" }));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request.send()
    };
    for key in [None, Some("wrong-key"), Some("first-key-012345678")] {
        let response = post(key).await.unwrap();
        assert_eq!(response.status(), 401, "{key:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(error_code(&response.json().await.unwrap()), "unauthorized");
    }
    assert_eq!(
        post(Some("second-key-0123456789")).await.unwrap().status(),
        200,
        "every configured key works"
    );
    let lower_case_scheme = app
        .client
        .post(format!("{}/agent", app.address))
        .header("authorization", "bearer first-key-0123456789")
        .json(&json!({ "message": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        lower_case_scheme.status(),
        200,
        "the scheme is case-insensitive"
    );
    for path in ["/sessions/anything", "/nope"] {
        assert_eq!(app.get(path).await.status(), 401, "{path}");
    }
    // `/openapi.json` too while the docs page is on (the dev profile's default; see pages.rs).
    for path in ["/health", "/ready", "/startup", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_over_the_rate_limit_get_429_with_retry_after() {
    let fake = FakeOpenAi::repeating(text("ok")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_RATE_LIMIT__REQUESTS", "3"),
            ("AGENT_RATE_LIMIT__WINDOW", "60s"),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(app.agent(json!({ "message": "hi" })).await.status(), 200);
    }
    let limited = app.agent(json!({ "message": "hi" })).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(&limited.json().await.unwrap()), "rate_limited");
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "probes are never limited"
    );
    assert_eq!(fake.requests().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_sends_its_events_in_order_and_stores_the_turn() {
    let (app, _fake) = spawn_full(
        vec![
            Scripted::tool_call("calculator", json!({ "expression": "6*7" })),
            text("6*7 is 42."),
        ],
        &[],
    )
    .await;
    let response = app
        .stream(json!({ "message": "6*7?", "session_id": "streamed" }))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let body = response.text().await.unwrap();
    let events = sse::names(&body);
    assert_eq!(events.first().map(String::as_str), Some("run"));
    assert_eq!(events[1], "tool_call");
    assert_eq!(events[2], "tool_result");
    assert!(
        events[3..events.len() - 1]
            .iter()
            .all(|event| *event == "delta"),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("done"));
    let done = sse::events(&body).last().unwrap().json();
    assert_eq!(
        (done["response"].as_str(), done["session_id"].as_str()),
        (Some("6*7 is 42."), Some("streamed"))
    );
    assert_eq!(app.stored("streamed").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_can_be_turned_off() {
    let (app, _fake) = spawn_full(vec![text("unused")], &[("ENABLE_STREAMING", "false")]).await;
    let response = app.stream(json!({ "message": "hi" })).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "streaming_disabled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_disconnecting_mid_turn_leaves_no_partial_turn() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "1+1" })),
        Scripted::Slow(Duration::from_millis(1500), Box::new(text("too late"))),
        text("after the disconnect"),
    ])
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/agent", app.address))
        .json(&json!({ "message": "hi", "session_id": "left" }))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    // The next turn takes the session's lock: had the first turn gone on, it would hold the
    // lock until it stored (after its slow answer), and its messages would come first.
    let next = app
        .agent(json!({ "message": "again", "session_id": "left" }))
        .await;
    assert_eq!(next.status(), 200);
    let stored = app.stored("left").await;
    let contents: Vec<&str> = stored
        .iter()
        .map(|message| message.message.content.as_str())
        .collect();
    assert_eq!(
        contents,
        ["again", "after the disconnect"],
        "nothing of the cancelled turn was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_failures_give_502_or_504_and_store_nothing() {
    let unavailable_for = |seconds: &str| Scripted::Status {
        status: 503,
        retry_after: Some(seconds.to_owned()),
        body: "down for maintenance".into(),
    };
    let cases = [
        (Scripted::status(500), 502, "model_unavailable", None),
        (
            Scripted::status(401),
            502,
            "model_authentication_failed",
            None,
        ),
        (Scripted::Malformed, 502, "model_bad_response", None),
        (
            Scripted::Slow(Duration::from_secs(4), Box::new(text("late"))),
            504,
            "model_timeout",
            None,
        ),
        (
            Scripted::rate_limited("120"),
            503,
            "model_rate_limited",
            Some("120"),
        ),
        // A failing model server that says when it is back: so do we, on the 502.
        (unavailable_for("45"), 502, "model_unavailable", Some("45")),
    ];
    for (answer, status, code, expected) in cases {
        let fake = FakeOpenAi::repeating(answer).await;
        let app = spawn_with_model(&fake, &[("AGENT_MODEL__MAX_ATTEMPTS", "2")]).await;
        let response = app
            .agent(json!({ "message": "hi", "session_id": "failing" }))
            .await;
        assert_eq!(response.status(), status, "{code}");
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), code);
        // When the model server said when, so do we, in the header and the body.
        let expected = expected.map(str::to_owned);
        assert_eq!(retry_after, expected, "{code}");
        assert_eq!(
            body["error"]["retry_after"]
                .as_u64()
                .map(|seconds| seconds.to_string()),
            expected,
            "{code}"
        );
        assert!(app.stored("failing").await.is_empty(), "{code}");
    }
}

/// A stream cannot send a header once it began: its `error` event says when to retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_error_event_says_when_to_retry() {
    let fake = FakeOpenAi::repeating(Scripted::rate_limited("30")).await;
    let app = spawn_with_model(&fake, &[("AGENT_MODEL__MAX_ATTEMPTS", "1")]).await;
    let body = app
        .stream(json!({ "message": "hi" }))
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("event: error"), "{body}");
    let error = sse::events(&body).last().unwrap().json();
    assert_eq!(error_code(&error), "model_rate_limited");
    assert_eq!(error["error"]["retry_after"], 30, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_or_redis_down_gives_503_with_the_json_error() {
    let fake = FakeOpenAi::repeating(text("unused")).await;
    let closed = closed_port();
    let no_postgres = format!("postgres://postgres@127.0.0.1:{closed}/none");
    let no_redis = format!("redis://127.0.0.1:{closed}");
    let base_url = fake.base_url();
    let database = test_support::fresh_database_url().await;
    // Each case: settings, the session named by the request, the expected code, and how many
    // model calls its two requests may make (each such turn is counted as failed at the store).
    let cases = [
        // A first turn on a server-named session touches Postgres only to store (its run is
        // recorded with it): the first request spends its model call and fails at the store;
        // the next one, knowing the store is failing, opens its session first and fails before
        // calling the model.
        (
            vec![
                ("DATABASE_URL", no_postgres.as_str()),
                ("AGENT_STORAGE__RUN_MIGRATIONS", "false"),
            ],
            None,
            "storage_unavailable",
            1,
        ),
        (
            vec![
                ("DATABASE_URL", no_postgres.as_str()),
                ("AGENT_STORAGE__RUN_MIGRATIONS", "false"),
            ],
            Some("chosen"),
            "storage_unavailable",
            0,
        ),
        (
            vec![
                ("DATABASE_URL", database.as_str()),
                ("REDIS_URL", no_redis.as_str()),
            ],
            None,
            "rate_limiter_unavailable",
            0,
        ),
        // A named session needs its lock in Redis.
        (
            vec![
                ("DATABASE_URL", database.as_str()),
                ("REDIS_URL", no_redis.as_str()),
                ("AGENT_RATE_LIMIT__REQUESTS", "0"),
            ],
            Some("chosen"),
            "storage_unavailable",
            0,
        ),
    ];
    for (vars, session, code, model_calls) in cases {
        let mut vars = vars.clone();
        vars.push(("OPENAI_BASE_URL", &base_url));
        let app = spawn(builder(&vars)).await;
        let before = fake.requests().await.len();
        for _ in 0..2 {
            let response = app
                .agent(json!({ "message": "hi", "session_id": session }))
                .await;
            assert_eq!(response.status(), 503, "{code}");
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(error_code(&response.json().await.unwrap()), code);
        }
        assert_eq!(fake.requests().await.len() - before, model_calls, "{code}");
        let metrics = app.get("/metrics").await.text().await.unwrap();
        for line in [
            format!("agent_turns_total{{outcome=\"store_failed\"}} {model_calls}"),
            "agent_turns_total{outcome=\"completed\"} 0".to_owned(),
        ] {
            assert!(
                metrics.contains(&line),
                "{code}: {line} missing from:\n{metrics}"
            );
        }
        assert_eq!(app.get("/health").await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_turn_needs_no_lock_so_it_works_while_redis_is_down() {
    let fake = FakeOpenAi::repeating(text("stored anyway")).await;
    let closed = closed_port();
    let no_redis = format!("redis://127.0.0.1:{closed}");
    let database = test_support::fresh_database_url().await;
    let base_url = fake.base_url();
    let app = spawn(builder(&[
        ("DATABASE_URL", database.as_str()),
        ("REDIS_URL", no_redis.as_str()),
        ("AGENT_RATE_LIMIT__REQUESTS", "0"),
        ("OPENAI_BASE_URL", base_url.as_str()),
    ]))
    .await;
    let response = app.agent(json!({ "message": "hi" })).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let session = body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(body["response"], "stored anyway");
    let stored = app.stored(&session).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    // Its next turn names the session, so it needs the lock Redis cannot give.
    let response = app
        .agent(json!({ "message": "again", "session_id": session }))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "storage_unavailable"
    );
    assert_eq!(app.stored(&session).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_can_be_read_and_deleted() {
    let (app, _fake) = spawn_full(vec![text("one"), text("two")], &[]).await;
    app.agent(json!({ "message": "a", "session_id": "kept" }))
        .await;
    app.agent(json!({ "message": "b", "session_id": "kept" }))
        .await;
    let limited: Value = app
        .get("/sessions/kept?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(limited["messages"].as_array().unwrap().len(), 1);
    assert_eq!(limited["messages"][0]["sequence"], 3);
    assert_eq!(app.get("/sessions/kept?limit=0").await.status(), 422);
    assert_eq!(app.get("/sessions/unknown").await.status(), 404);

    let delete = |path: &str| app.client.delete(format!("{}{path}", app.address)).send();
    assert_eq!(delete("/sessions/kept").await.unwrap().status(), 204);
    assert_eq!(app.get("/sessions/kept").await.status(), 404);
    assert!(app.stored("kept").await.is_empty());
    let again = delete("/sessions/kept").await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(
        error_code(&again.json().await.unwrap()),
        "session_not_found"
    );
    let wrong_method = app
        .client
        .put(format!("{}/sessions/kept", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            wrong_method.status().as_u16(),
            wrong_method.headers()["allow"].to_str().unwrap()
        ),
        (405, "GET, DELETE")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_turns_and_tokens() {
    // The app records into a recorder of its own: these counts are exact whatever other tests
    // run in this process, before or at the same time.
    let (app, _fake) = spawn_full(vec![text("hi")], &[]).await;
    app.agent(json!({ "message": "hello" })).await;
    let metrics = app.metrics().await;
    for name in [
        "http_requests_total{route=\"/agent\",method=\"POST\",status=\"200\"} 1\n",
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "agent_turns_total{outcome=\"completed\"} 1\n",
        "agent_turns_total{outcome=\"store_failed\"} 0\n",
        "agent_tokens_total{kind=\"prompt\"} 10\n",
        "agent_turn_duration_seconds_count 1\n",
        "agent_model_calls_total 1\n",
        // POST /agent calls the model without streaming: its latency is recorded too.
        "model_call_duration_seconds_count{mode=\"complete\"} 1\n",
        "model_call_duration_seconds_count{mode=\"stream\"} 0\n",
        // Background work (lock releases, abandoned claims) is bounded and reported.
        "agent_background_tasks 0\n",
        "agent_background_tasks_limit 1024\n",
        "agent_background_tasks_dropped_total 0\n",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}
