//! What calling a tool through an MCP server adds over calling it as an HTTP tool: the same echo
//! in the same process (the official Python SDK's MCP server, `dev-harness/mcp/server.py`), once
//! as `tools/call` over Streamable HTTP and once as a plain `POST /echo`. Both go through the
//! registry's full call path (argument validation, the time bound, the tool message). A third row,
//! `raw_tools_call`, posts the same `tools/call` JSON-RPC request with a bare HTTP client on an
//! initialised session: what the server itself costs, so that what our client adds shows.
//!
//! `cargo bench -p agent-core --bench tool_sources` (the MCP server runs from the venv the test
//! harness provisions, `dev_harness::TestTools`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_core::{
    HttpTool, HttpToolMethod, HttpToolOptions, McpServerOptions, McpTools, ToolCall, ToolRegistry,
};
use criterion::{Criterion, criterion_group, criterion_main};
use dev_harness::{McpServer, McpServerKind};
use serde_json::json;

fn tool_sources(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = McpServer::start(McpServerKind::Python { token: None }).unwrap();
    let url = server.url();
    let registry = runtime.block_on(async {
        let mut registry = ToolRegistry::new(Duration::from_secs(10));
        registry
            .register(Arc::new(
                HttpTool::new(HttpToolOptions {
                    name: "http_echo".into(),
                    description: "Echo over plain HTTP.".into(),
                    parameters: json!({"type": "object", "properties": {"text": {"type": "string"}}}),
                    url: format!("http://127.0.0.1:{}/echo", server.port()).parse().unwrap(),
                    method: HttpToolMethod::Post,
                    headers: Vec::new(),
                    timeout: Duration::from_secs(10),
                    max_response_bytes: 65536,
                })
                .unwrap(),
            ))
            .unwrap();
        let reserved = registry.names().map(str::to_owned).collect();
        let mcp = McpTools::start(
            vec![McpServerOptions {
                name: "py".into(),
                url: url.parse().unwrap(),
                headers: Vec::new(),
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                tools: Some(vec!["echo".into()]),
                prefix: "py".into(),
                required: true,
                max_result_bytes: 65536,
                refresh_interval: Duration::from_secs(3600),
            }],
            reserved,
            None,
        );
        mcp.wait_started().await.unwrap();
        registry.attach(mcp);
        Arc::new(registry)
    });
    let call = |name: &str| ToolCall {
        id: "call_1".into(),
        name: name.into(),
        arguments: json!({"text": "hello"}).to_string(),
    };
    for (label, name) in [("http_tool", "http_echo"), ("mcp_tool", "py__echo")] {
        let call = call(name);
        // Both must work, or the comparison means nothing.
        let outcome = runtime.block_on(registry.call(&call));
        assert_eq!(outcome.content, "echo: hello", "{label}: {outcome:?}");
        criterion.bench_function(&format!("tool_call/{label}"), |bencher| {
            bencher.to_async(&runtime).iter(|| {
                let (registry, call) = (registry.clone(), call.clone());
                async move { registry.call(&call).await }
            });
        });
    }
    let (http, session) = runtime.block_on(raw_session(&url));
    criterion.bench_function("tool_call/raw_tools_call", |bencher| {
        bencher.to_async(&runtime).iter(|| {
            let (http, url, session) = (http.clone(), url.clone(), session.clone());
            async move {
                let body = post(
                    &http,
                    &url,
                    Some(&session),
                    &json!({
                        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": "hello"}}
                    }),
                )
                .await
                .1;
                assert!(body.contains("echo: hello"), "{body}");
            }
        });
    });
    drop(server);
}

/// An initialised MCP session with a bare HTTP client: (the client, the session id).
async fn raw_session(url: &str) -> (reqwest::Client, String) {
    let http = reqwest::Client::new();
    let (session, _) = post(
        &http,
        url,
        None,
        &json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "1"}}
        }),
    )
    .await;
    let session = session.expect("a session id");
    post(
        &http,
        url,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    (http, session)
}

/// Posts one JSON-RPC message; answers the session id header and the whole body.
async fn post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    message: &serde_json::Value,
) -> (Option<String>, String) {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(message);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.unwrap();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (session, response.text().await.unwrap())
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = tool_sources
}
criterion_main!(benches);
