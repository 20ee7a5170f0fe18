//! Callers: API keys name who calls (`name:key`); keys sharing a name are one caller for rate
//! limits and idempotency (rotation keeps access), and the name, never the key, is what the
//! request's log lines carry.

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_with_model};

/// `POST /agent` as the holder of `key`, with an optional `Idempotency-Key`.
async fn post_as(app: &TestApp, key: &str, idempotency: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/agent", app.address))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({ "message": "pay" }));
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_sharing_a_name_are_one_caller_for_idempotency_and_rate_limits() {
    let fake = FakeOpenAi::repeating(Scripted::text("paid")).await;
    let app = spawn_with_model(
        &fake,
        &[
            (
                "AGENT_API_KEYS",
                "alice:alice-old-0123456789,alice:alice-new-0123456789,bob:bob-0123456789",
            ),
            ("AGENT_RATE_LIMIT__REQUESTS", "3"),
            ("AGENT_RATE_LIMIT__WINDOW", "60s"),
        ],
    )
    .await;
    let first = post_as(&app, "alice-old-0123456789", Some("invoice-7")).await;
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    // The rotated key is the same caller: the same Idempotency-Key replays.
    let rotated = post_as(&app, "alice-new-0123456789", Some("invoice-7")).await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(rotated.headers()["idempotent-replayed"], "true");
    // Another caller's same Idempotency-Key is a key of its own.
    let bob = post_as(&app, "bob-0123456789", Some("invoice-7")).await;
    assert_eq!(bob.status(), 200);
    assert!(!bob.headers().contains_key("idempotent-replayed"));
    assert_eq!(fake.requests().await.len(), 2, "alice's turn ran once");

    // Alice's two keys share her limit of 3 (two requests so far).
    assert_eq!(
        post_as(&app, "alice-new-0123456789", None).await.status(),
        200
    );
    let limited = post_as(&app, "alice-old-0123456789", None).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(
        error_code(&limited.json::<Value>().await.unwrap()),
        "rate_limited"
    );
    assert_eq!(
        post_as(&app, "bob-0123456789", None).await.status(),
        200,
        "bob has his own limit"
    );
}

const KEYS: &str = "alice:alice-0123456789,bob:bob-0123456789";

/// `method path` as the holder of `key`, with an optional JSON body.
async fn call_as(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .header("authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Alice's session cannot be read, continued, deleted or replayed by Bob: to him it does not
/// exist, with the same answers as an id nobody used; his turns on the same id make a session of
/// his own.
async fn sessions_belong_to_their_callers(app: &TestApp) {
    use reqwest::Method;
    let (alice, bob) = ("alice-0123456789", "bob-0123456789");
    let turn = |message: &str| json!({ "message": message, "session_id": "plans" });
    let created = call_as(app, alice, Method::POST, "/agent", Some(turn("alice 1"))).await;
    assert_eq!(created.status(), 200);
    assert_eq!(
        created.json::<Value>().await.unwrap()["session_id"],
        "plans"
    );
    // A server-named session is its creator's too.
    let named = call_as(
        app,
        alice,
        Method::POST,
        "/agent",
        Some(json!({ "message": "hi" })),
    )
    .await;
    let named = named.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    for id in ["plans", named.as_str(), "never-used"] {
        let path = format!("/sessions/{id}");
        let read = call_as(app, bob, Method::GET, &path, None).await;
        assert_eq!(read.status(), 404, "{id}");
        let body: Value = read.json().await.unwrap();
        assert_eq!(error_code(&body), "session_not_found");
        assert_eq!(
            body["error"]["message"],
            format!("session {id} was not found")
        );
        let deleted = call_as(app, bob, Method::DELETE, &path, None).await;
        assert_eq!(deleted.status(), 404, "{id}");
    }
    // Bob "continuing" Alice's id starts a session of his own.
    let bobs = call_as(app, bob, Method::POST, "/agent", Some(turn("bob 1"))).await;
    assert_eq!(bobs.status(), 200);
    let view: Value = call_as(app, bob, Method::GET, "/sessions/plans", None)
        .await
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "user")
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["bob 1"]);
    // Alice's is untouched, and hers to continue and delete.
    let continued = call_as(app, alice, Method::POST, "/agent", Some(turn("alice 2"))).await;
    assert_eq!(continued.status(), 200);
    let view: Value = call_as(app, alice, Method::GET, "/sessions/plans", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["session_id"], "plans");
    assert_eq!(view["turn_count"], 2);
    let stream = call_as(app, bob, Method::POST, "/agent/stream", Some(turn("bob 2"))).await;
    assert!(stream.text().await.unwrap().contains("event: done"));
    assert_eq!(
        call_as(app, alice, Method::GET, "/sessions/plans", None)
            .await
            .json::<Value>()
            .await
            .unwrap()["turn_count"],
        2,
        "bob's stream went to his own session"
    );
    assert_eq!(
        call_as(app, alice, Method::DELETE, "/sessions/plans", None)
            .await
            .status(),
        204
    );
    assert_eq!(
        call_as(app, bob, Method::GET, "/sessions/plans", None)
            .await
            .status(),
        200,
        "bob's own session is still there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_belong_to_their_callers_in_postgres() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", KEYS)]).await;
    sessions_belong_to_their_callers(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_belong_to_their_callers_in_memory() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let base_url = fake.base_url();
    let app = crate::helpers::spawn(crate::helpers::builder(&[
        ("AGENT_API_KEYS", KEYS),
        ("OPENAI_BASE_URL", &base_url),
    ]))
    .await;
    sessions_belong_to_their_callers(&app).await;
}

/// Sessions made without keys (and every session made before callers had names) are the
/// anonymous caller's: once keys are on, a key named `anonymous` reaches them, no other does.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_made_without_keys_stay_the_anonymous_callers() {
    use reqwest::Method;
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let database = test_support::fresh_database_url().await;
    let base_url = fake.base_url();
    let storage = [
        ("DATABASE_URL", database.as_str()),
        ("OPENAI_BASE_URL", &base_url),
    ];
    let before = crate::helpers::spawn(crate::helpers::builder(&storage)).await;
    let made = before
        .agent(json!({ "message": "before keys", "session_id": "old" }))
        .await;
    assert_eq!(made.status(), 200);
    before.shutdown.trigger();

    let mut with_keys = storage.to_vec();
    with_keys.push((
        "AGENT_API_KEYS",
        "anonymous:legacy-0123456789,alice:alice-0123456789",
    ));
    let after = crate::helpers::spawn(crate::helpers::builder(&with_keys)).await;
    let legacy = call_as(
        &after,
        "legacy-0123456789",
        Method::GET,
        "/sessions/old",
        None,
    )
    .await;
    assert_eq!(legacy.status(), 200);
    let alice = call_as(
        &after,
        "alice-0123456789",
        Method::GET,
        "/sessions/old",
        None,
    )
    .await;
    assert_eq!(alice.status(), 404);
}

/// `GET /sessions` lists the caller's own sessions, newest first, a page at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_lists_its_own_sessions_in_pages() {
    use reqwest::Method;
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", KEYS)]).await;
    let (alice, bob) = ("alice-0123456789", "bob-0123456789");
    for n in 0..5 {
        let body = json!({ "message": "hi", "session_id": format!("a{n}") });
        assert_eq!(
            call_as(&app, alice, Method::POST, "/agent", Some(body))
                .await
                .status(),
            200
        );
    }
    let body = json!({ "message": "hi", "session_id": "b0" });
    assert_eq!(
        call_as(&app, bob, Method::POST, "/agent", Some(body))
            .await
            .status(),
        200
    );

    let mut listed = Vec::new();
    let mut path = "/sessions?limit=2".to_owned();
    loop {
        let page: Value = call_as(&app, alice, Method::GET, &path, None)
            .await
            .json()
            .await
            .unwrap();
        for session in page["sessions"].as_array().unwrap() {
            assert_eq!(session["turn_count"], 1, "{session}");
            assert_eq!(session["tokens"]["total"], 15, "{session}");
            listed.push(session["session_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/sessions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(listed, ["a4", "a3", "a2", "a1", "a0"]);
    let bobs: Value = call_as(&app, bob, Method::GET, "/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["sessions"][0]["session_id"], "b0");
    assert_eq!(bobs["next_cursor"], Value::Null);
    for bad in [
        "/sessions?cursor=nonsense",
        "/sessions?limit=0",
        "/sessions?limit=101",
    ] {
        let answer = call_as(&app, alice, Method::GET, bad, None).await;
        assert_eq!(answer.status(), 422, "{bad}");
        assert_eq!(
            error_code(&answer.json::<Value>().await.unwrap()),
            "invalid_request"
        );
    }
}

/// `GET /usage`: each caller reads its own turns and tokens per day; a usage reader reads
/// everyone's; counted by the turns' own statements, so it adds up after concurrent turns.
#[tokio::test(flavor = "multi_thread")]
async fn usage_per_caller_adds_up_and_only_readers_see_everyone() {
    use reqwest::Method;
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let app = spawn_with_model(
        &fake,
        &[
            (
                "AGENT_API_KEYS",
                "alice:alice-0123456789,bob:bob-0123456789,ops:ops-0123456789",
            ),
            ("AGENT_API__USAGE_READERS", "ops"),
        ],
    )
    .await;
    let (alice, bob, ops) = ("alice-0123456789", "bob-0123456789", "ops-0123456789");
    let turns = (0..20).map(|n| {
        let key = if n % 4 == 0 { bob } else { alice };
        let body = json!({ "message": format!("turn {n}") });
        call_as(&app, key, Method::POST, "/agent", Some(body))
    });
    for answer in futures_util::future::join_all(turns).await {
        assert_eq!(answer.status(), 200);
    }
    let totals = |report: &Value, caller: &str| -> (u64, u64) {
        report["usage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["caller"] == caller)
            .fold((0, 0), |(turns, tokens), row| {
                (
                    turns + row["turns"].as_u64().unwrap(),
                    tokens + row["total_tokens"].as_u64().unwrap(),
                )
            })
    };
    let own: Value = call_as(&app, alice, Method::GET, "/usage", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(totals(&own, "alice"), (15, 15 * 15));
    assert_eq!(totals(&own, "bob"), (0, 0), "alice sees only her own");
    let forbidden = call_as(&app, alice, Method::GET, "/usage?caller=bob", None).await;
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        error_code(&forbidden.json::<Value>().await.unwrap()),
        "forbidden"
    );
    let everyone: Value = call_as(&app, ops, Method::GET, "/usage", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(totals(&everyone, "alice"), (15, 225));
    assert_eq!(totals(&everyone, "bob"), (5, 75));
    let only_bob: Value = call_as(&app, ops, Method::GET, "/usage?caller=bob", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(totals(&only_bob, "alice"), (0, 0));
    assert_eq!(totals(&only_bob, "bob"), (5, 75));
    let long_ago = call_as(
        &app,
        alice,
        Method::GET,
        "/usage?from=2020-01-01&to=2020-01-31",
        None,
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(long_ago["usage"], json!([]));
    for (query, names) in [
        (
            "from=yesterday",
            "from: 'yesterday' is not a day (YYYY-MM-DD)",
        ),
        ("to=2026-13-01", "to: '2026-13-01' is not a day"),
    ] {
        let invalid = call_as(&app, alice, Method::GET, &format!("/usage?{query}"), None).await;
        assert_eq!(invalid.status(), 422, "{query}");
        let body: Value = invalid.json().await.unwrap();
        assert_eq!(error_code(&body), "invalid_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
    }
}

/// A daily token quota stops its caller once today's stored turns have used it, on every
/// replica (the count is shared in Postgres), with `Retry-After` until the next UTC midnight;
/// other callers are not affected, and `GET /usage` shows the caller its quota.
#[tokio::test(flavor = "multi_thread")]
async fn a_quota_stops_its_caller_at_the_limit_across_replicas() {
    use reqwest::Method;
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let replicas = crate::helpers::spawn_replicas(
        &fake,
        &[
            ("AGENT_API_KEYS", KEYS),
            ("AGENT_API__DAILY_TOKEN_QUOTAS", "alice:40"),
        ],
        2,
    )
    .await;
    let (alice, bob) = ("alice-0123456789", "bob-0123456789");
    let turn = || Some(json!({ "message": "count me" }));
    // 15 tokens a turn: 0, 15 and 30 are under 40, so three turns run, alternating replicas.
    for n in 0..3 {
        let answer = call_as(&replicas[n % 2], alice, Method::POST, "/agent", turn()).await;
        assert_eq!(answer.status(), 200, "turn {n}");
    }
    let model_calls = fake.requests().await.len();
    for app in &replicas {
        for path in ["/agent", "/agent/stream"] {
            let refused = call_as(app, alice, Method::POST, path, turn()).await;
            assert_eq!(refused.status(), 429, "{path}");
            let retry_after: u64 = refused.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let now = chrono::Utc::now();
            let midnight = (now.date_naive() + chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc();
            let until_midnight = (midnight - now).num_seconds() as u64;
            assert!(
                retry_after.abs_diff(until_midnight) <= 2,
                "Retry-After {retry_after}, midnight in {until_midnight} s"
            );
            let body: Value = refused.json().await.unwrap();
            assert_eq!(error_code(&body), "quota_exceeded");
            assert_eq!(body["error"]["retry_after"], retry_after);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("used 45 of its 40 tokens"),
                "{body}"
            );
        }
    }
    assert_eq!(
        fake.requests().await.len(),
        model_calls,
        "a refused turn never reaches the model"
    );
    let bob_turn = call_as(&replicas[1], bob, Method::POST, "/agent", turn()).await;
    assert_eq!(bob_turn.status(), 200, "bob has no quota");
    let usage: Value = call_as(&replicas[0], alice, Method::GET, "/usage", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(usage["quota"]["daily_tokens"], 40);
    assert_eq!(usage["quota"]["used_today"], 45);
    assert_eq!(usage["usage"][0]["turns"], 3);
    let bob_usage: Value = call_as(&replicas[0], bob, Method::GET, "/usage", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(bob_usage.get("quota").is_none(), "{bob_usage}");
}

/// With `AGENT_API__METRICS_CALLER_LABELS=true` the turn, token and quota counters are split by
/// caller name (never the key); by default no series carries a caller.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_carry_the_caller_only_when_configured() {
    use reqwest::Method;
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let (alice, bob) = ("alice-0123456789", "bob-0123456789");
    let settings = [
        ("AGENT_API_KEYS", KEYS),
        ("AGENT_API__DAILY_TOKEN_QUOTAS", "bob:1"),
    ];
    let unlabelled = crate::helpers::spawn_with_model(&fake, &settings).await;
    let turn = || Some(json!({ "message": "count me" }));
    assert_eq!(
        call_as(&unlabelled, alice, Method::POST, "/agent", turn())
            .await
            .status(),
        200
    );
    let text = unlabelled.metrics().await;
    assert!(
        text.contains("agent_turns_total{outcome=\"completed\"} 1"),
        "{text}"
    );
    assert!(!text.contains("caller="), "{text}");

    let mut labelled = settings.to_vec();
    labelled.push(("AGENT_API__METRICS_CALLER_LABELS", "true"));
    let app = crate::helpers::spawn_with_model(&fake, &labelled).await;
    for key in [alice, alice, bob, bob] {
        call_as(&app, key, Method::POST, "/agent", turn()).await;
    }
    let text = app.metrics().await;
    for series in [
        "agent_turns_total{outcome=\"completed\",caller=\"alice\"} 2",
        "agent_turns_total{outcome=\"completed\",caller=\"bob\"} 1",
        "agent_tokens_total{kind=\"completion\",caller=\"alice\"} 10",
        "agent_quota_refusals_total{caller=\"bob\"} 1",
        "agent_quota_refusals_total{caller=\"alice\"} 0",
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
    assert!(!text.contains("0123456789"), "no key in a label");
}
