//! The OpenAI-compatible API (`/v1/*`) at the HTTP level: its shapes, each field rule, OpenAI's
//! error shape, stateless and stateful turns, idempotent replays, streams and disconnects. The
//! official SDKs run against the release binary in `cargo xtask sdk`.

use std::time::Duration;

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::sse;

use crate::helpers::{TestApp, spawn_with_model};

const KEY: &str = "alice:alice-0123456789";
const BEARER: &str = "alice-0123456789";

async fn chat(app: &TestApp, body: Value) -> reqwest::Response {
    chat_with(app, body, &[]).await
}

async fn chat_with(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/chat/completions", app.address))
        .bearer_auth(BEARER)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Asserts OpenAI's error shape and answers (type, param, code).
fn openai_error(body: &Value) -> (String, Option<String>, String) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error.as_object().unwrap().contains_key("param"), "{body}");
    (
        error["type"].as_str().unwrap().to_owned(),
        error["param"].as_str().map(str::to_owned),
        error["code"].as_str().unwrap().to_owned(),
    )
}

fn user(text: &str) -> Value {
    json!({ "role": "user", "content": text })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_is_the_one_model() {
    let fake = FakeOpenAi::repeating(Scripted::text("unused")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_OPENAI_API__MODEL_ID", "my-agent"),
        ],
    )
    .await;
    let get = |path: &'static str| {
        app.client
            .get(format!("{}{path}", app.address))
            .bearer_auth(BEARER)
            .send()
    };
    let list: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "my-agent");
    assert_eq!(list["data"][0]["object"], "model");
    assert!(list["data"][0]["created"].as_u64().unwrap() > 1_700_000_000);
    let one = get("/v1/models/my-agent").await.unwrap();
    assert_eq!(one.status(), 200);
    let missing = get("/v1/models/gpt-4o").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        openai_error(&body),
        (
            "invalid_request_error".into(),
            Some("model".into()),
            "model_not_found".into()
        )
    );
    // Auth refusals on /v1 take OpenAI's shape too.
    let anonymous = app
        .client
        .get(format!("{}/v1/models", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(openai_error(&body).2, "invalid_api_key");
    assert_eq!(openai_error(&body).0, "authentication_error");
    // And no route under /v1 is OpenAI-shaped 404.
    let nowhere = get("/v1/nowhere").await.unwrap();
    assert_eq!(nowhere.status(), 404);
    assert!(nowhere.json::<Value>().await.unwrap()["error"]["type"].is_string());
}

/// Stateless: the request's messages are the conversation (the server's system prompt first,
/// the client's system message where it was), the answer is one `chat.completion` with the
/// whole turn's usage, nothing is stored, and the usage is counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_completion_uses_the_given_conversation_and_stores_nothing() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "6*7" })),
        Scripted::text("It is 42."),
    ])
    .await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", KEY)]).await;
    let response = chat(
        &app,
        json!({
            "model": "agent",
            "messages": [
                { "role": "system", "content": "Answer in English." },
                { "role": "user", "content": "hello" },
                { "role": "assistant", "content": "hi!" },
                { "role": "user", "content": [{ "type": "text", "text": "what is" }, { "type": "text", "text": "6*7?" }] },
            ],
            "temperature": 0.5,
            "max_completion_tokens": 100,
            "user": "end-user-1",
            "seed": 3,
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-session-id").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "agent");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "It is 42.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 2 * fake_openai::PROMPT_TOKENS);
    assert_eq!(
        usage["completion_tokens"],
        2 * fake_openai::COMPLETION_TOKENS
    );
    assert_eq!(usage["total_tokens"], 30);

    let sent = &fake.requests().await[0];
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "system", "user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], "Answer in English.");
    assert_eq!(sent["messages"][4]["content"], "what is\n6*7?");
    assert_eq!(
        (
            sent["temperature"].clone(),
            sent["max_tokens"].clone(),
            sent["seed"].clone()
        ),
        (json!(0.5), json!(100), json!(3))
    );

    let sessions: Value = app
        .client
        .get(format!("{}/sessions", app.address))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"], json!([]), "nothing stored");
    let usage: Value = app
        .client
        .get(format!("{}/usage", app.address))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["usage"][0]["turns"], 1);
    assert_eq!(usage["usage"][0]["total_tokens"], 30);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("agent_turns_total{outcome=\"completed\"} 1"),
        "{metrics}"
    );
}

/// Stateful: a session named by `X-Session-Id` (or `metadata.session_id`) takes only the last
/// user message and remembers the turn; the answer names the session; it is the caller's.
#[tokio::test(flavor = "multi_thread")]
async fn a_named_session_remembers_its_turns() {
    let fake = FakeOpenAi::start(vec![
        Scripted::text("Noted: blue."),
        Scripted::text("Blue."),
    ])
    .await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", KEY)]).await;
    let first = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("ignored earlier"), user("my colour is blue")] }),
        &[("x-session-id", "colours")],
    )
    .await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-session-id"], "colours");
    let second = chat(
        &app,
        json!({ "model": "agent", "messages": [user("what is my colour?")], "metadata": { "session_id": "colours" } }),
    )
    .await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-session-id"], "colours");
    let requests = fake.requests().await;
    let remembered: Vec<&str> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["content"].as_str())
        .collect();
    assert!(
        remembered.contains(&"my colour is blue") && remembered.contains(&"Noted: blue."),
        "{remembered:?}"
    );
    assert!(!remembered.contains(&"ignored earlier"));
    let session: Value = app
        .client
        .get(format!("{}/sessions/colours", app.address))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["turn_count"], 2);
    let mismatch = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("x")], "metadata": { "session_id": "other" } }),
        &[("x-session-id", "colours")],
    )
    .await;
    assert_eq!(mismatch.status(), 400);
}

/// Every field rule: what is refused is a 400 in OpenAI's shape naming the parameter.
#[tokio::test(flavor = "multi_thread")]
async fn each_unsupported_or_out_of_bounds_field_is_a_400_naming_it() {
    let fake = FakeOpenAi::repeating(Scripted::text("fine")).await;
    let app = spawn_with_model(
        &fake,
        &[("AGENT_API_KEYS", KEY), ("AGENT_MODEL__MAX_TOKENS", "500")],
    )
    .await;
    let base = || json!({ "model": "agent", "messages": [user("hi")] });
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body
    };
    let cases = [
        (with("n", json!(2)), "n"),
        (
            with(
                "tools",
                json!([{ "type": "function", "function": { "name": "calculator" } }]),
            ),
            "tools[0].function.name",
        ),
        (
            with(
                "tools",
                json!([{ "type": "function", "function": { "name": "f", "parameters": [1] } }]),
            ),
            "tools[0].function.parameters",
        ),
        (
            with(
                "tools",
                json!(vec![
                    json!({ "type": "function", "function": { "name": "f" } });
                    129
                ]),
            ),
            "tools",
        ),
        (with("functions", json!([{ "name": "f" }])), "functions"),
        (with("tool_choice", json!("required")), "tool_choice"),
        (with("logprobs", json!(true)), "logprobs"),
        (with("top_logprobs", json!(2)), "top_logprobs"),
        (
            with("audio", json!({ "voice": "alloy", "format": "mp3" })),
            "audio",
        ),
        (with("logit_bias", json!({ "50256": -100 })), "logit_bias"),
        (with("temperature", json!(2.5)), "temperature"),
        // Above 2 as sent, though 2 once narrowed to 32 bits.
        (
            with("temperature", json!(2.000_000_000_000_000_4)),
            "temperature",
        ),
        (with("top_p", json!(1.5)), "top_p"),
        (with("presence_penalty", json!(-3)), "presence_penalty"),
        (with("frequency_penalty", json!(3)), "frequency_penalty"),
        (with("max_tokens", json!(501)), "max_tokens"),
        (
            with("max_completion_tokens", json!(0)),
            "max_completion_tokens",
        ),
        (with("stop", json!(["a", "b", "c", "d", "e"])), "stop"),
        (
            with("modalities", json!(["text", "audio"])),
            "modalities[1]",
        ),
        (
            with("response_format", json!({ "type": "yaml" })),
            "response_format.type",
        ),
        (
            with(
                "response_format",
                json!({ "type": "json_schema", "json_schema": { "name": "has space", "schema": {} } }),
            ),
            "response_format.json_schema.name",
        ),
        (
            with(
                "response_format",
                json!({ "type": "json_schema", "json_schema": { "name": "a", "schema": { "type": "no-such" } } }),
            ),
            "response_format.json_schema.schema",
        ),
        (with("messages", json!([])), "messages"),
        (
            with(
                "messages",
                json!([user("hi"), { "role": "assistant", "content": "hello" }]),
            ),
            "messages[1].role",
        ),
        (
            with(
                "messages",
                json!([{ "role": "tool", "content": "42", "tool_call_id": "c" }, user("hi")]),
            ),
            "messages[0].tool_call_id",
        ),
        (
            with(
                "messages",
                json!([{ "role": "user", "content": "calling", "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } }] }, user("hi")]),
            ),
            "messages[0].tool_calls",
        ),
        (
            with(
                "messages",
                json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "http://x" } }] }]),
            ),
            "messages[0].content[0].type",
        ),
        (
            with("messages", json!([user("   ")])),
            "messages[0].content",
        ),
        (with("stream", json!("yes")), "stream"),
        (
            with("metadata", json!({ "session_id": "bad id" })),
            "metadata.session_id",
        ),
    ];
    for (body, param) in cases {
        let response = chat(&app, body.clone()).await;
        assert_eq!(response.status(), 400, "{param}: {body}");
        let answer: Value = response.json().await.unwrap();
        let (kind, named, _) = openai_error(&answer);
        assert_eq!(kind, "invalid_request_error", "{answer}");
        assert_eq!(named.as_deref(), Some(param), "{answer}");
    }
    let unknown_model = chat(&app, json!({ "model": "gpt-4o", "messages": [user("hi")] })).await;
    assert_eq!(unknown_model.status(), 404);
    assert!(
        fake.requests().await.is_empty(),
        "nothing refused reached the model"
    );
    // Accepted as OpenAI clients send them: null fields, unknown fields, n = 1, text-only.
    let routine = chat(
        &app,
        json!({
            "model": "agent", "messages": [user("hi")], "n": 1, "stream": null, "temperature": null,
            "stream_options": null, "logprobs": false, "tool_choice": "none", "parallel_tool_calls": true,
            "modalities": ["text"], "response_format": { "type": "text" }, "store": false,
            "metadata": { "purpose": "test" }, "service_tier": "auto", "stop": "END",
        }),
    )
    .await;
    assert_eq!(routine.status(), 200, "{}", routine.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn system_messages_can_be_refused() {
    let fake = FakeOpenAi::repeating(Scripted::text("fine")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_OPENAI_API__SYSTEM_MESSAGES", "refuse"),
        ],
    )
    .await;
    for role in ["system", "developer"] {
        let response = chat(
            &app,
            json!({ "model": "agent", "messages": [{ "role": role, "content": "be terse" }, user("hi")] }),
        )
        .await;
        assert_eq!(response.status(), 400, "{role}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(openai_error(&body).1.as_deref(), Some("messages[0].role"));
    }
}

/// A context-length refusal of the model server is a 400 `context_length_exceeded`; a body over
/// the `/v1` limit is a 413 in OpenAI's shape, and the `/v1` limit is not `/agent`'s.
#[tokio::test(flavor = "multi_thread")]
async fn long_conversations_have_their_own_limit_and_errors() {
    let fake = FakeOpenAi::repeating(Scripted::Status {
        status: 400,
        retry_after: None,
        body: json!({ "error": { "message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded" } }).to_string(),
    })
    .await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_API__MAX_BODY_BYTES", "4096"),
            ("AGENT_OPENAI_API__MAX_BODY_BYTES", "65536"),
        ],
    )
    .await;
    let long = "a".repeat(20_000);
    let history: Vec<Value> = vec![
        user(&long),
        json!({ "role": "assistant", "content": "ok" }),
        user("and?"),
    ];
    let response = chat(&app, json!({ "model": "agent", "messages": history })).await;
    assert_eq!(response.status(), 400, "a 20 kB body fits the /v1 limit");
    let body: Value = response.json().await.unwrap();
    assert_eq!(openai_error(&body).2, "context_length_exceeded");
    let too_big = chat(
        &app,
        json!({ "model": "agent", "messages": [user(&"b".repeat(70_000))] }),
    )
    .await;
    assert_eq!(too_big.status(), 413);
    let body: Value = too_big.json().await.unwrap();
    assert_eq!(openai_error(&body).0, "invalid_request_error");
}

/// `Idempotency-Key`: a retry gets the stored `chat.completion`, the same id; the turn ran once.
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_retry_replays_the_same_completion() {
    let fake = FakeOpenAi::repeating(Scripted::text("once")).await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", KEY)]).await;
    for headers in [
        vec![("idempotency-key", "order-1")],
        vec![("idempotency-key", "order-2"), ("x-session-id", "kept")],
    ] {
        let body = json!({ "model": "agent", "messages": [user("pay")] });
        let first = chat_with(&app, body.clone(), &headers).await;
        assert_eq!(first.status(), 200);
        let first: Value = first.json().await.unwrap();
        let again = chat_with(&app, body, &headers).await;
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again, first);
        let other = chat_with(
            &app,
            json!({ "model": "agent", "messages": [user("other")] }),
            &headers,
        )
        .await;
        assert_eq!(other.status(), 422);
    }
    assert_eq!(fake.requests().await.len(), 2, "each key ran its turn once");
    let streamed = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("pay")], "stream": true }),
        &[("idempotency-key", "order-3")],
    )
    .await;
    assert_eq!(streamed.status(), 400);
}

/// The data of each event of a stream.
fn data_lines(body: &str) -> Vec<String> {
    sse::events(body)
        .into_iter()
        .map(|event| event.data)
        .collect()
}

/// `stream: true`: a role chunk, content chunks, a `stop` chunk, the usage chunk when asked, then
/// `[DONE]`; keep-alive comments while tools run; the tool calls are not sent; on a session the
/// turn is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_sends_openai_chunks_and_ends_with_done() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "6*7" })),
        Scripted::text("6*7 is 42."),
    ])
    .await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_API__SSE_KEEPALIVE", "100ms"),
        ],
    )
    .await;
    let response = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("6*7?")], "stream": true, "stream_options": { "include_usage": true } }),
        &[("x-session-id", "streamed")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-session-id"], "streamed");
    let body = response.text().await.unwrap();
    let lines = data_lines(&body);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["id"] == id && chunk["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "6*7 is 42.");
    let (stop, usage) = (&chunks[chunks.len() - 2], &chunks[chunks.len() - 1]);
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 30);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|chunk| chunk["usage"].is_null())
    );
    assert!(!body.contains("calculator"), "tool calls are not sent");
    assert_eq!(app.stored("alice:streamed").await.len(), 4);
}

/// A failure after the stream began is `data: {"error": …}` and no `[DONE]`; nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_stream_ends_with_an_error_event_and_stores_nothing() {
    let fake = FakeOpenAi::repeating(Scripted::status(500)).await;
    let app = spawn_with_model(
        &fake,
        &[("AGENT_API_KEYS", KEY), ("AGENT_MODEL__MAX_ATTEMPTS", "1")],
    )
    .await;
    let response = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("hi")], "stream": true }),
        &[("x-session-id", "failing")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let lines = data_lines(&body);
    assert!(!lines.iter().any(|line| line == "[DONE]"));
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["code"], "model_unavailable");
    assert!(app.stored("alice:failing").await.is_empty());
}

/// A client that goes away mid-stream cancels the turn: nothing is stored, the session is free.
/// The server notices at its next write (a keep-alive comment at the latest).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_stream_stores_nothing() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "1+1" })),
        Scripted::Slow(
            Duration::from_millis(1500),
            Box::new(Scripted::text("too late")),
        ),
        Scripted::text("next"),
    ])
    .await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_API__SSE_KEEPALIVE", "100ms"),
        ],
    )
    .await;
    let response = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("hi")], "stream": true }),
        &[("x-session-id", "left")],
    )
    .await;
    assert_eq!(response.status(), 200);
    drop(response);
    // The next turn takes the session's lock: had the first gone on, it would hold the lock
    // until it stored, and its messages would be stored too.
    let next = chat_with(
        &app,
        json!({ "model": "agent", "messages": [user("again")] }),
        &[("x-session-id", "left")],
    )
    .await;
    assert_eq!(next.status(), 200);
    // Only the next turn is stored (how many messages it has depends on how far the cancelled
    // turn read the fake model's script before it was dropped).
    let stored = app.stored("alice:left").await;
    let users: Vec<&str> = stored
        .iter()
        .filter(|message| message.message.role == agent_core::Role::User)
        .map(|message| message.message.content.as_str())
        .collect();
    assert_eq!(users, ["again"]);
}

/// Rate limits and quotas answer 429 in OpenAI's shape with `Retry-After`; a quota says the SDKs
/// should not retry it.
#[tokio::test(flavor = "multi_thread")]
async fn limits_answer_in_openai_terms() {
    let fake = FakeOpenAi::repeating(Scripted::text("ok")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_API__DAILY_TOKEN_QUOTA", "10"),
        ],
    )
    .await;
    let body = json!({ "model": "agent", "messages": [user("hi")] });
    assert_eq!(chat(&app, body.clone()).await.status(), 200);
    let refused = chat(&app, body).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(
        openai_error(&answer),
        (
            "insufficient_quota".into(),
            None,
            "insufficient_quota".into()
        )
    );

    let limited = spawn_with_model(
        &fake,
        &[("AGENT_API_KEYS", KEY), ("AGENT_RATE_LIMIT__REQUESTS", "1")],
    )
    .await;
    let body = json!({ "model": "agent", "messages": [user("hi")] });
    chat(&limited, body.clone()).await;
    let refused = chat(&limited, body).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(
        openai_error(&answer),
        (
            "rate_limit_error".into(),
            None,
            "rate_limit_exceeded".into()
        )
    );
}

async fn respond(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/responses", app.address))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The text of a response object's output.
fn output_text(response: &Value) -> &str {
    response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// The Responses API: a stored response starts a session, `previous_response_id` continues it
/// (from its latest response only), `GET /v1/responses/{id}` answers it to its caller alone;
/// `store: false` keeps nothing but may build on a stored response.
#[tokio::test(flavor = "multi_thread")]
async fn responses_are_stored_turns_continued_by_previous_response_id() {
    let fake = FakeOpenAi::start(vec![
        Scripted::text("Hello, Ada."),
        Scripted::text("You are Ada."),
        Scripted::text("Still Ada."),
    ])
    .await;
    let app = spawn_with_model(
        &fake,
        &[(
            "AGENT_API_KEYS",
            "alice:alice-0123456789,bob:bob-0123456789",
        )],
    )
    .await;
    let first = respond(
        &app,
        BEARER,
        json!({ "model": "agent", "input": "I am Ada", "instructions": "Be warm.",
                "metadata": { "k": "v", "a": "b" }, "temperature": 0.5, "top_p": 0.9,
                "max_output_tokens": 100, "user": "end-user-7" }),
    )
    .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_") && id.len() == 37, "{id}");
    assert_eq!(
        (first["object"].as_str(), first["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(output_text(&first), "Hello, Ada.");
    assert_eq!(first["usage"]["total_tokens"], 15);
    assert_eq!(first["instructions"], "Be warm.");
    assert_eq!(first["metadata"]["k"], "v");
    let sent = &fake.requests().await[0]["messages"];
    assert_eq!(
        sent[1],
        json!({ "role": "system", "content": "Be warm." }),
        "{sent}"
    );

    let second = respond(&app, BEARER, json!({ "model": "agent", "input": [{ "role": "user", "content": [{ "type": "input_text", "text": "who am I?" }] }], "previous_response_id": id })).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["previous_response_id"], id.as_str());
    let remembered: Vec<String> = fake.requests().await[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        remembered.contains(&"I am Ada".to_owned()),
        "{remembered:?}"
    );
    assert!(
        !remembered.contains(&"Be warm.".to_owned()),
        "instructions are not carried over"
    );

    // The first response is no longer the latest of its conversation.
    let stale = respond(
        &app,
        BEARER,
        json!({ "model": "agent", "input": "again", "previous_response_id": id }),
    )
    .await;
    assert_eq!(stale.status(), 409);
    assert_eq!(
        openai_error(&stale.json().await.unwrap()).2,
        "response_not_latest"
    );

    let fetched: Value = app
        .client
        .get(format!("{}/v1/responses/{id}", app.address))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        fetched, first,
        "GET answers the response as it was answered"
    );
    for (key, path) in [
        ("bob-0123456789", format!("/v1/responses/{id}")),
        (
            BEARER,
            "/v1/responses/resp_00000000000000000000000000000000".to_owned(),
        ),
    ] {
        let missing = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{key} {path}");
        assert_eq!(
            openai_error(&missing.json().await.unwrap()).2,
            "response_not_found"
        );
    }
    let bobs = respond(
        &app,
        "bob-0123456789",
        json!({ "model": "agent", "input": "hi", "previous_response_id": second["id"] }),
    )
    .await;
    assert_eq!(
        bobs.status(),
        404,
        "another caller's response does not exist for bob"
    );

    // store: false builds on the stored conversation, keeps nothing.
    let unstored = respond(&app, BEARER, json!({ "model": "agent", "input": "and now?", "store": false, "previous_response_id": second["id"] })).await;
    assert_eq!(unstored.status(), 200);
    let unstored: Value = unstored.json().await.unwrap();
    assert_eq!(unstored["store"], false);
    let history: Vec<String> = fake.requests().await[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(history.contains(&"You are Ada.".to_owned()), "{history:?}");
    let gone = app
        .client
        .get(format!(
            "{}/v1/responses/{}",
            app.address,
            unstored["id"].as_str().unwrap()
        ))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let sessions: Value = app
        .client
        .get(format!("{}/sessions", app.address))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        sessions["sessions"][0]["turn_count"], 2,
        "the unstored turn added nothing"
    );
}

/// A streamed response: `response.*` events in order with increasing sequence numbers, the text
/// as deltas, `response.completed` with the whole object, which `GET` then answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_response_sends_response_events() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "6*7" })),
        Scripted::text("6*7 is 42."),
    ])
    .await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", KEY)]).await;
    let response = respond(
        &app,
        BEARER,
        json!({ "model": "agent", "input": "6*7?", "stream": true }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let names = sse::names(&body);
    let events: Vec<Value> = data_lines(&body)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(names.len(), events.len());
    for (name, event) in names.iter().zip(&events) {
        assert_eq!(event["type"], *name);
    }
    let sequence: Vec<u64> = events
        .iter()
        .map(|event| event["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        &names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let deltas: String = events
        .iter()
        .filter(|event| event["type"] == "response.output_text.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "6*7 is 42.");
    let completed = &events.last().unwrap()["response"];
    assert_eq!(output_text(completed), "6*7 is 42.");
    assert_eq!(completed["usage"]["total_tokens"], 30);
    let fetched: Value = app
        .client
        .get(format!(
            "{}/v1/responses/{}",
            app.address,
            completed["id"].as_str().unwrap()
        ))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&fetched, completed);
}
