//! Traces through the real wiring: the process's subscriber installed by
//! `telemetry::init_with_exporter` with the SDK's in-memory exporter in place of OTLP's (a test
//! binary of its own: the subscriber is process-wide), the application on a fake model, an HTTP
//! tool on a recording server. Each test finds its own spans by the trace id it sends.

// The API tests' helpers, shared: they may unwrap (a failure there is a failed test), and this
// binary uses only some of them.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent_server::telemetry::{self, LogTarget, Telemetry};
use fake_openai::{COMPLETION_TOKENS, FakeOpenAi, PROMPT_TOKENS, Scripted};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use helpers::{TestApp, config_file, spawn_full};

/// Any endpoint turns traces on in the settings; this process exports to memory instead.
const TRACES_ON: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");

fn exporter() -> &'static (InMemorySpanExporter, Telemetry) {
    static INSTALLED: OnceLock<(InMemorySpanExporter, Telemetry)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let loaded = agent_config::load_from([
            (TRACES_ON.0.to_owned(), TRACES_ON.1.to_owned()),
            ("AGENT_LOG_FORMAT".to_owned(), "pretty".to_owned()),
        ])
        .expect("the settings are valid");
        let traces = loaded.settings.traces.expect("traces are on");
        let exporter = InMemorySpanExporter::default();
        let telemetry = telemetry::init_with_exporter(
            &loaded.settings.log,
            &traces,
            exporter.clone(),
            LogTarget::Stderr,
        );
        (exporter, telemetry)
    })
}

/// A fresh W3C trace id, and a `traceparent` naming a remote parent span in it.
fn trace_parent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let header = format!("00-{trace_id}-{parent_id}-01");
    (trace_id, parent_id, header)
}

/// The spans of `trace_id` once they include the server span and every span named in `names`
/// (or after 10 s: the assertions then say what is missing).
async fn spans_of(trace_id: &str, names: &[&str]) -> Vec<SpanData> {
    let (exporter, telemetry) = exporter();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::task::block_in_place(|| telemetry.flush());
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .expect("the exporter answers")
            .into_iter()
            .filter(|span| span.span_context.trace_id().to_string() == trace_id)
            .collect();
        let served = spans.iter().any(|span| span.span_kind == SpanKind::Server);
        let complete = names
            .iter()
            .all(|name| spans.iter().any(|span| span.name == *name));
        if (served && complete) || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one span {name}: {:?}",
        spans.iter().map(|span| &span.name).collect::<Vec<_>>()
    );
    found[0]
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|pair| pair.key.as_str() == key)
        .map(|pair| &pair.value)
}

fn text(span: &SpanData, key: &str) -> String {
    match attribute(span, key) {
        Some(value) => value.as_str().into_owned(),
        None => panic!("{} has no {key}: {:?}", span.name, span.attributes),
    }
}

fn number(span: &SpanData, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::I64(value)) => *value,
        other => panic!("{} has no integer {key}: {other:?}", span.name),
    }
}

fn is_child(child: &SpanData, parent: &SpanData) -> bool {
    child.parent_span_id == parent.span_context.span_id()
}

/// An HTTP tool `lookup` on a recording server, and the configuration declaring it.
async fn lookup_tool() -> (MockServer, String) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("sunny"))
        .mount(&server)
        .await;
    let file = config_file(&format!(
        "[[http_tools]]\nname = \"lookup\"\ndescription = \"Looks it up.\"\n\
         url = \"{}/lookup\"\nparameters = {{ type = \"object\" }}\n",
        server.uri()
    ));
    (server, file)
}

async fn spawn(extra: &[(&str, &str)]) -> (TestApp, FakeOpenAi, MockServer) {
    exporter();
    let (tool, file) = lookup_tool().await;
    let mut vars = vec![TRACES_ON, ("AGENT_CONFIG", file.as_str())];
    vars.extend_from_slice(extra);
    let (app, fake) = spawn_full(
        vec![
            Scripted::tool_call("lookup", json!({"city": "Oslo"})),
            Scripted::text("It is sunny in Oslo."),
        ],
        &vars,
    )
    .await;
    (app, fake, tool)
}

/// The tool message the model was sent in its second request.
async fn tool_message(fake: &FakeOpenAi) -> serde_json::Value {
    fake.requests().await[1]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|message| message["role"] == "tool")
        .cloned()
        .expect("the tool result went to the model")
}

async fn post(app: &TestApp, path: &str, traceparent: &str, body: serde_json::Value) -> String {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .header("traceparent", traceparent)
        .json(&body)
        .send()
        .await
        .expect("the request is answered");
    assert_eq!(response.status(), 200);
    response.text().await.expect("a body")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_with_a_tool_call_is_one_trace_under_the_callers_span() {
    let (app, fake, tool) = spawn(&[]).await;
    let (trace_id, remote_parent, traceparent) = trace_parent();
    let body = post(
        &app,
        "/agent",
        &traceparent,
        json!({"session_id": "traced-1", "message": "weather in Oslo?"}),
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let spans = spans_of(&trace_id, &["invoke_agent agent", "session.store"]).await;

    // The server span continues the caller's trace.
    let server = one(&spans, "POST /agent");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.parent_span_id.to_string(), remote_parent);
    assert!(server.parent_span_is_remote);
    assert_eq!(text(server, "http.route"), "/agent");
    assert_eq!(text(server, "http.request.method"), "POST");
    assert_eq!(text(server, "url.path"), "/agent");
    assert_eq!(number(server, "http.response.status_code"), 200);
    assert_eq!(text(server, "gen_ai.conversation.id"), "traced-1");
    assert!(!text(server, "request_id").is_empty());
    assert_eq!(server.status, Status::Unset);

    // The turn, its lock, history read and store under the request.
    let turn = one(&spans, "invoke_agent agent");
    assert!(is_child(turn, server));
    for step in ["session.lock", "session.history", "session.store"] {
        assert!(is_child(one(&spans, step), server), "{step}");
    }
    assert_eq!(text(turn, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(text(turn, "gen_ai.agent.id"), "agent");
    assert_eq!(text(turn, "gen_ai.agent.name"), "agent");
    assert_eq!(text(turn, "gen_ai.response.model"), "gpt-4o-mini");

    // Two model calls (the tool call, then the answer), each a client span of the turn.
    let chats = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chats.len(), 2, "{spans:#?}");
    for chat in &chats {
        assert!(is_child(chat, turn));
        assert_eq!(chat.span_kind, SpanKind::Client);
        assert_eq!(text(chat, "gen_ai.operation.name"), "chat");
        assert_eq!(text(chat, "gen_ai.provider.name"), "openai");
        assert_eq!(text(chat, "gen_ai.request.model"), "gpt-4o-mini");
        assert!(!text(chat, "gen_ai.response.model").is_empty());
        assert_eq!(
            number(chat, "gen_ai.usage.input_tokens"),
            PROMPT_TOKENS as i64
        );
        assert_eq!(
            number(chat, "gen_ai.usage.output_tokens"),
            COMPLETION_TOKENS as i64
        );
        assert!(
            matches!(
                attribute(chat, "gen_ai.response.finish_reasons"),
                Some(Value::Array(Array::String(reasons))) if reasons.len() == 1
            ),
            "{:?}",
            attribute(chat, "gen_ai.response.finish_reasons")
        );
    }
    let tokens: i64 = chats
        .iter()
        .map(|chat| {
            number(chat, "gen_ai.usage.input_tokens") + number(chat, "gen_ai.usage.output_tokens")
        })
        .sum();
    assert_eq!(tokens, answer["tokens_used"].as_i64().expect("tokens_used"));
    assert_eq!(
        number(turn, "gen_ai.usage.input_tokens") + number(turn, "gen_ai.usage.output_tokens"),
        tokens
    );

    // The tool call, by name and the model's call id.
    let call = one(&spans, "execute_tool lookup");
    assert!(is_child(call, turn));
    assert_eq!(text(call, "gen_ai.tool.name"), "lookup");
    let call_id = tool_message(&fake).await["tool_call_id"].clone();
    assert_eq!(
        text(call, "gen_ai.tool.call.id"),
        call_id.as_str().expect("an id")
    );

    // The model and the tool were called within their spans.
    let sent = fake.header_values("traceparent").await;
    assert_eq!(sent.len(), 2);
    for (header, chat) in sent.iter().zip(&chats) {
        let header = header
            .as_deref()
            .expect("the model call carries traceparent");
        assert!(header.contains(&trace_id), "{header}");
        assert!(
            chats
                .iter()
                .any(|chat| header.contains(&chat.span_context.span_id().to_string())),
            "{header} names a chat span ({})",
            chat.span_context.span_id()
        );
    }
    let tool_requests = tool.received_requests().await.expect("recorded");
    let tool_header = tool_requests[0]
        .headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .expect("the HTTP tool call carries traceparent");
    assert_eq!(
        tool_header,
        format!("00-{trace_id}-{}-01", call.span_context.span_id())
    );

    // No contents without the opt-in.
    for span in &spans {
        for key in [
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        ] {
            assert!(attribute(span, key).is_none(), "{} has {key}", span.name);
        }
    }
    assert!(!format!("{spans:?}").contains("Oslo"));
}

#[tokio::test(flavor = "multi_thread")]
async fn contents_are_recorded_only_when_opted_in() {
    let (app, _fake, _tool) = spawn(&[("AGENT_TELEMETRY__CAPTURE_CONTENT", "true")]).await;
    let (trace_id, _, traceparent) = trace_parent();
    post(
        &app,
        "/agent",
        &traceparent,
        json!({"message": "weather in Oslo?"}),
    )
    .await;
    let spans = spans_of(&trace_id, &["invoke_agent agent"]).await;
    let chats = named(&spans, "chat gpt-4o-mini");
    let input: serde_json::Value =
        serde_json::from_str(&text(chats[0], "gen_ai.input.messages")).expect("JSON");
    assert_eq!(
        input.as_array().expect("messages").last().expect("one")["role"],
        "user"
    );
    assert_eq!(
        input.as_array().expect("messages").last().expect("one")["parts"][0]["content"],
        "weather in Oslo?"
    );
    let output: serde_json::Value =
        serde_json::from_str(&text(chats[1], "gen_ai.output.messages")).expect("JSON");
    assert_eq!(output[0]["parts"][0]["content"], "It is sunny in Oslo.");
    let call = one(&spans, "execute_tool lookup");
    assert_eq!(
        text(call, "gen_ai.tool.call.arguments"),
        r#"{"city":"Oslo"}"#
    );
    assert_eq!(text(call, "gen_ai.tool.call.result"), "sunny");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_turn_is_in_the_requests_trace() {
    let (app, fake, _tool) = spawn(&[]).await;
    let (trace_id, _, traceparent) = trace_parent();
    let body = post(
        &app,
        "/agent/stream",
        &traceparent,
        json!({"message": "weather in Oslo?"}),
    )
    .await;
    assert!(body.contains("event: done"), "{body}");
    let spans = spans_of(&trace_id, &["invoke_agent agent"]).await;
    let server = one(&spans, "POST /agent/stream");
    let turn = one(&spans, "invoke_agent agent");
    assert!(is_child(turn, server));
    let chats = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chats.len(), 2);
    assert!(chats.iter().all(|chat| is_child(chat, turn)));
    assert!(
        fake.header_values("traceparent")
            .await
            .iter()
            .all(|header| header
                .as_deref()
                .is_some_and(|header| header.contains(&trace_id)))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_set_the_error_status_and_type() {
    exporter();
    let (app, _fake) = spawn_full(vec![Scripted::status(400)], &[TRACES_ON]).await;
    let (trace_id, _, traceparent) = trace_parent();
    let response = app
        .client
        .post(format!("{}/agent", app.address))
        .header("traceparent", &traceparent)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    assert!(status >= 500, "{status}");
    let spans = spans_of(&trace_id, &["invoke_agent agent"]).await;
    let chat = one(&spans, "chat gpt-4o-mini");
    assert_eq!(text(chat, "error.type"), "rejected");
    assert!(matches!(&chat.status, Status::Error { description } if description.contains("400")));
    let turn = one(&spans, "invoke_agent agent");
    assert_eq!(text(turn, "error.type"), "model_rejected");
    let server = one(&spans, "POST /agent");
    assert_eq!(
        number(server, "http.response.status_code"),
        i64::from(status)
    );
    assert!(matches!(server.status, Status::Error { .. }));

    // A client's mistake is typed, not an error of the server.
    let (trace_id, _, traceparent) = trace_parent();
    let response = app
        .client
        .post(format!("{}/agent", app.address))
        .header("traceparent", &traceparent)
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 400);
    let spans = spans_of(&trace_id, &[]).await;
    let server = one(&spans, "POST /agent");
    assert_eq!(text(server, "error.type"), "malformed_json");
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_model_call_is_one_span_with_the_retry_as_an_event() {
    exporter();
    let (app, _fake) = spawn_full(
        vec![Scripted::status(503), Scripted::text("recovered")],
        &[TRACES_ON],
    )
    .await;
    let (trace_id, _, traceparent) = trace_parent();
    post(&app, "/agent", &traceparent, json!({"message": "hello"})).await;
    let spans = spans_of(&trace_id, &["invoke_agent agent"]).await;
    let chat = one(&spans, "chat gpt-4o-mini");
    let events: Vec<&str> = chat
        .events
        .iter()
        .map(|event| event.name.as_ref())
        .collect();
    assert_eq!(events, ["model call failed; retrying"], "{chat:#?}");
    assert_eq!(chat.status, Status::Unset);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_tool_call_carries_the_trace_in_its_meta() {
    exporter();
    let server =
        test_support::McpServer::start(test_support::McpServerKind::Python { token: None })
            .expect("the MCP server starts");
    let file = config_file(&format!(
        "[[mcp_servers]]\nname = \"py\"\nurl = \"{}\"\n",
        server.url()
    ));
    let (app, fake) = spawn_full(
        vec![
            Scripted::tool_call("py__traceparent", json!({})),
            Scripted::text("done"),
        ],
        &[TRACES_ON, ("AGENT_CONFIG", file.as_str())],
    )
    .await;
    let (trace_id, _, traceparent) = trace_parent();
    post(&app, "/agent", &traceparent, json!({"message": "trace me"})).await;
    let spans = spans_of(&trace_id, &["invoke_agent agent"]).await;
    let call = one(&spans, "execute_tool py__traceparent");
    assert_eq!(text(call, "gen_ai.tool.type"), "extension");
    // The MCP server (the official Python SDK) answered the traceparent it was sent.
    assert_eq!(
        tool_message(&fake).await["content"],
        format!("00-{trace_id}-{}-01", call.span_context.span_id())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_did_not_sample_its_trace_is_not_traced_here() {
    let (app, fake, _tool) = spawn(&[]).await;
    let (trace_id, parent, _) = trace_parent();
    post(
        &app,
        "/agent",
        &format!("00-{trace_id}-{parent}-00"),
        json!({"message": "weather in Oslo?"}),
    )
    .await;
    let (_, telemetry) = exporter();
    tokio::task::block_in_place(|| telemetry.flush());
    let (exporter, _) = exporter();
    let spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .expect("the exporter answers")
        .into_iter()
        .filter(|span| span.span_context.trace_id().to_string() == trace_id)
        .collect();
    assert!(spans.is_empty(), "{spans:#?}");
    assert!(
        fake.header_values("traceparent")
            .await
            .iter()
            .all(Option::is_none)
    );
}

/// A stream its client leaves mid-turn still ends its spans, and the server carries on: a
/// sampled request's spans belong to a subscriber of its own, and the registry closes a span's
/// parent through the default dispatcher, so the abandoned body (dropped outside any poll) must
/// be dropped on that subscriber (else the worker panics).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_its_client_leaves_still_ends_its_spans() {
    let (app, _fake, tool) = spawn(&[("AGENT_API__SSE_KEEPALIVE", "100ms")]).await;
    tool.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("sunny")
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&tool)
        .await;
    let (trace_id, _, traceparent) = trace_parent();
    let mut response = app
        .client
        .post(format!("{}/agent/stream", app.address))
        .header("traceparent", &traceparent)
        .json(&json!({"message": "weather in Oslo?"}))
        .send()
        .await
        .expect("the stream starts");
    let mut seen = String::new();
    while !seen.contains("event: tool_call") {
        let chunk = response.chunk().await.expect("a chunk").expect("more");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    // The next keep-alive finds the connection gone: the body, its turn and the tool call in
    // flight are dropped.
    let spans = spans_of(&trace_id, &["invoke_agent agent", "execute_tool lookup"]).await;
    let server = one(&spans, "POST /agent/stream");
    let turn = one(&spans, "invoke_agent agent");
    assert!(is_child(turn, server));
    assert!(is_child(one(&spans, "execute_tool lookup"), turn));
    // Every worker still answers, traced or not.
    for _ in 0..4 {
        let (_, _, traceparent) = trace_parent();
        let response = app
            .client
            .get(format!("{}/health", app.address))
            .header("traceparent", traceparent)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
    }
}
