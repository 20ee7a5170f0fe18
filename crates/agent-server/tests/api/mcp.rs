//! MCP servers as tool sources, against servers nobody here wrote: one on the official Python SDK
//! (`dev-harness/mcp/server.py`, PyPI `mcp` 2.x) and the reference server
//! `@modelcontextprotocol/server-everything` (npm), both over Streamable HTTP, with the fake
//! model scripted to call their tools.

use std::time::{Duration, Instant};

use fake_openai::{FakeOpenAi, Scripted};
use futures_util::StreamExt;
use serde_json::{Value, json};
use test_support::{McpServer, McpServerKind, TestTools};

use crate::helpers::{TestApp, config_file, spawn_with_model};

fn python() -> McpServer {
    McpServer::start(McpServerKind::Python { token: None }).unwrap()
}

/// A configuration file declaring `servers` (TOML `[[mcp_servers]]` tables, and anything else).
fn server_table(name: &str, url: &str, extra: &str) -> String {
    format!("[[mcp_servers]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

async fn spawn_with(fake: &FakeOpenAi, toml: &str, extra: &[(&str, &str)]) -> TestApp {
    let file = config_file(toml);
    let mut vars = vec![("AGENT_CONFIG", file.as_str())];
    vars.extend_from_slice(extra);
    spawn_with_model(fake, &vars).await
}

/// The tool messages the model was sent in its `index`-th request.
async fn tool_messages(fake: &FakeOpenAi, index: usize) -> Vec<String> {
    let requests = fake.requests().await;
    requests[index]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One of the Python server's counts of `wait` calls: `started` or `cancelled`.
async fn count(app: &TestApp, server: &McpServer, name: &str) -> u64 {
    let counts = format!("http://127.0.0.1:{}/counts", server.port());
    let body: Value = app
        .client
        .get(&counts)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body[name].as_u64().unwrap()
}

/// Waits (10 s at most) until the Python server's count `name` reaches `at_least`.
async fn wait_for_count(app: &TestApp, server: &McpServer, name: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(app, server, name).await < at_least {
        assert!(
            Instant::now() < deadline,
            "the server's {name} count never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tools(app: &TestApp) -> Value {
    let (status, body) = app.get_json("/tools").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn tool<'a>(tools: &'a Value, name: &str) -> Option<&'a Value> {
    tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tool| tool["name"] == name)
}

/// Polls `GET /tools` until `condition` holds, up to `within`.
async fn wait_for_tools(
    app: &TestApp,
    within: Duration,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = tools(app).await;
        if condition(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {body:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The harness's own provisioning, from an empty directory: the venv it makes holds the pinned
/// packages and nothing of the system interpreter's, and the MCP server of these tests runs from
/// it and serves a turn's tool call.
#[tokio::test(flavor = "multi_thread")]
async fn the_harness_provisions_an_empty_directory_and_the_mcp_tests_run_from_it() {
    let directory = std::env::temp_dir().join(format!("agent-test-tools-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let provisioned = directory.clone();
    let tools = tokio::task::spawn_blocking(move || TestTools::provision(&provisioned))
        .await
        .unwrap()
        .unwrap();
    assert!(tools.python().starts_with(&directory), "{tools:?}");
    let config = std::fs::read_to_string(directory.join("python/pyvenv.cfg")).unwrap();
    assert!(
        config.contains("include-system-site-packages = false"),
        "{config}"
    );
    let isolated = std::process::Command::new(tools.python())
        .args([
            "-c",
            "import sys, mcp; print(sys.prefix != sys.base_prefix, mcp.__file__)",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&isolated.stdout);
    assert!(
        said.starts_with("True ") && said.contains(directory.to_str().unwrap()),
        "mcp must come from the venv: {said}{}",
        String::from_utf8_lossy(&isolated.stderr)
    );
    // Provisioned again: nothing to do (the pins did not change), so nothing is rewritten.
    let stamp = directory.join("python/.provisioned");
    let made = std::fs::metadata(&stamp).unwrap().modified().unwrap();
    TestTools::provision(&directory).unwrap();
    assert_eq!(std::fs::metadata(&stamp).unwrap().modified().unwrap(), made);

    let server = McpServer::start_with(McpServerKind::Python { token: None }, &tools).unwrap();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__add", json!({"a": 20, "b": 22})),
        Scripted::text("42"),
    ])
    .await;
    let app = spawn_with(&fake, &server_table("py", &server.url(), ""), &[]).await;
    wait_for_tools(&app, Duration::from_secs(10), |listed| {
        tool(listed, "py__add").is_some()
    })
    .await;
    let response = app
        .agent(json!({"session_id": "provisioned", "message": "add 20 and 22"}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(tool_messages(&fake, 1).await, vec!["42".to_owned()]);
    drop(server);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_result_and_a_tool_error_reach_the_model_and_the_stored_turn() {
    let server = python();
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![
            ("py__add".to_owned(), json!({"a": 2, "b": 3}).to_string()),
            (
                "py__fail".to_owned(),
                json!({"message": "no such city"}).to_string(),
            ),
        ]),
        Scripted::text("2 + 3 = 5"),
    ])
    .await;
    let app = spawn_with(&fake, &server_table("py", &server.url(), ""), &[]).await;

    let listed = tools(&app).await;
    let add = tool(&listed, "py__add").expect("py__add is listed");
    assert_eq!(
        (
            &add["source"],
            &add["server"],
            &add["original_name"],
            &add["state"]
        ),
        (
            &json!("mcp"),
            &json!("py"),
            &json!("add"),
            &json!("available")
        )
    );
    assert_eq!(add["parameters"]["properties"]["a"]["type"], "integer");
    assert_eq!(tool(&listed, "calculator").unwrap()["source"], "builtin");
    assert_eq!(listed["mcp_servers"][0]["state"], "connected");
    // The model is offered the MCP tools beside the built-in ones.
    let response = app
        .agent(json!({"session_id": "mcp-1", "message": "add 2 and 3"}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"], "2 + 3 = 5");
    let requests = fake.requests().await;
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        offered.contains(&"py__add") && offered.contains(&"calculator"),
        "{offered:?}"
    );

    let results = tool_messages(&fake, 1).await;
    assert_eq!(results[0], "5");
    assert!(
        results[1].starts_with("error: ") && results[1].contains("no such city"),
        "an isError result is a tool error the model reads: {results:?}"
    );
    let stored = app.stored("mcp-1").await;
    let stored_tools: Vec<&str> = stored
        .iter()
        .filter(|message| message.message.role == agent_core::Role::Tool)
        .map(|message| message.message.content.as_str())
        .collect();
    assert_eq!(
        stored_tools,
        results.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"agent_mcp_calls_total{server="py",tool="add",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"agent_mcp_calls_total{server="py",tool="fail",outcome="tool_error"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"agent_mcp_server_connected{server="py"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("agent_mcp_call_duration_seconds"),
        "{metrics}"
    );
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(
        (status, &ready["checks"]["mcp:py"]["status"]),
        (200, &json!("up")),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_timeout_and_a_server_killed_mid_call_become_tool_errors() {
    let mut server = python();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__wait", json!({"seconds": 30})),
        Scripted::text("gave up"),
        Scripted::tool_call("py__wait", json!({"seconds": 30})),
        Scripted::text("the server went away"),
    ])
    .await;
    let app = spawn_with(
        &fake,
        &server_table("py", &server.url(), "timeout = \"700ms\""),
        &[],
    )
    .await;

    let started = Instant::now();
    let response = app
        .agent(json!({"session_id": "mcp-slow", "message": "wait"}))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let results = tool_messages(&fake, 1).await;
    assert!(
        results[0].contains("did not answer within 700ms"),
        "{results:?}"
    );

    // The server dies while the call runs: the turn still completes, and is stored.
    let turn = {
        let client = app.client.clone();
        let url = format!("{}/agent", app.address);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"session_id": "mcp-killed", "message": "wait again"}))
                .send()
                .await
                .unwrap()
        })
    };
    // Killed once the second call is running on it.
    wait_for_count(&app, &server, "started", 2).await;
    server.kill();
    let response = turn.await.unwrap();
    assert_eq!(response.status(), 200);
    let results = tool_messages(&fake, 3).await;
    assert!(results[0].starts_with("error: "), "{results:?}");
    assert_eq!(app.stored("mcp-killed").await.len(), 4);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"agent_mcp_calls_total{server="py",tool="wait",outcome="timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_down_at_startup_is_retried_and_its_tools_appear_when_it_comes_up() {
    let mut server = McpServer::stopped(McpServerKind::Python { token: None }).unwrap();
    let fake = FakeOpenAi::start(vec![]).await;
    let app = spawn_with(
        &fake,
        &server_table("py", &server.url(), "connect_timeout = \"500ms\""),
        &[],
    )
    .await;

    let listed = tools(&app).await;
    assert!(tool(&listed, "py__add").is_none());
    assert_eq!(listed["mcp_servers"][0]["state"], "down", "{listed}");
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("degraded")),
        "{ready}"
    );
    assert_eq!(ready["checks"]["mcp:py"]["criticality"], "optional");

    server.start_again().unwrap();
    let listed = wait_for_tools(&app, Duration::from_secs(20), |body| {
        tool(body, "py__add").is_some()
    })
    .await;
    assert_eq!(listed["mcp_servers"][0]["state"], "connected");
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("ready")),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_gets_a_new_session_without_the_turns_noticing() {
    let mut server = python();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__echo", json!({"text": "before"})),
        Scripted::text("one"),
        Scripted::tool_call("py__echo", json!({"text": "after"})),
        Scripted::text("two"),
    ])
    .await;
    let app = spawn_with(&fake, &server_table("py", &server.url(), ""), &[]).await;
    let response = app
        .agent(json!({"session_id": "mcp-r", "message": "one"}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(tool_messages(&fake, 1).await, ["echo: before"]);

    // The server restarts: the old session id means nothing to it any more.
    server.stop();
    server.start_again().unwrap();
    let response = app
        .agent(json!({"session_id": "mcp-r", "message": "two"}))
        .await;
    assert_eq!(response.status(), 200);
    let results = tool_messages(&fake, 3).await;
    assert_eq!(results.last().unwrap(), "echo: after", "{results:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_keeps_the_tools_out_and_readiness_says_why() {
    let server = McpServer::start(McpServerKind::Python {
        token: Some("right-token".to_owned()),
    })
    .unwrap();
    let fake = FakeOpenAi::start(vec![]).await;
    let app = spawn_with(
        &fake,
        &server_table(
            "py",
            &server.url(),
            "required = true\nheaders = { Authorization = \"Bearer wrong-token\" }",
        ),
        &[],
    )
    .await;
    let listed = tools(&app).await;
    assert!(tool(&listed, "py__add").is_none());
    let error = listed["mcp_servers"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("refused our credentials"), "{listed}");
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 503, "a required server: {ready}");
    let check = &ready["checks"]["mcp:py"];
    assert_eq!(check["criticality"], "critical");
    assert!(
        check["error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused our credentials"),
        "{ready}"
    );
    assert!(!ready.to_string().contains("wrong-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_tool_list_is_picked_up_and_its_new_tool_called() {
    let server = python();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__grow", json!({})),
        Scripted::text("grown"),
        Scripted::tool_call("py__late", json!({})),
        Scripted::text("called the late tool"),
    ])
    .await;
    // A long refresh interval: the change must come from the server's notification.
    let app = spawn_with(
        &fake,
        &server_table("py", &server.url(), "refresh_interval = \"1h\""),
        &[],
    )
    .await;
    assert!(tool(&tools(&app).await, "py__late").is_none());
    let response = app
        .agent(json!({"session_id": "mcp-grow", "message": "grow"}))
        .await;
    assert_eq!(response.status(), 200);
    wait_for_tools(&app, Duration::from_secs(10), |body| {
        tool(body, "py__late").is_some()
    })
    .await;
    let response = app
        .agent(json!({"session_id": "mcp-grow", "message": "late"}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(tool_messages(&fake, 3).await.last().unwrap(), "late answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_server_everything_works_through_the_allowlist() {
    let server = McpServer::start(McpServerKind::Everything).unwrap();
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![
            ("ev__echo".to_owned(), json!({"message": "hi"}).to_string()),
            ("ev__get-tiny-image".to_owned(), json!({}).to_string()),
        ]),
        Scripted::text("done"),
    ])
    .await;
    let app = spawn_with(
        &fake,
        &server_table(
            "everything",
            &server.url(),
            "prefix = \"ev\"\ntools = [\"echo\", \"get-tiny-image\"]",
        ),
        &[],
    )
    .await;
    let listed = tools(&app).await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|tool| tool["source"] == "mcp")
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ev__echo", "ev__get-tiny-image"],
        "the allowlist: {listed}"
    );
    let response = app
        .agent(json!({"session_id": "mcp-ev", "message": "echo"}))
        .await;
    assert_eq!(response.status(), 200);
    let results = tool_messages(&fake, 1).await;
    assert_eq!(results[0], "Echo: hi");
    assert!(
        results[1].contains("[image: image/png,"),
        "summarised: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_name_collision_at_startup_names_both_tools() {
    let server = python();
    let toml = format!(
        "[[http_tools]]\nname = \"py__echo\"\ndescription = \"An HTTP tool.\"\n\
         url = \"http://127.0.0.1:9/echo\"\nparameters = {{ type = \"object\" }}\n\n{}",
        server_table("py", &server.url(), "")
    );
    let file = config_file(&toml);
    let error = crate::helpers::builder(&[("AGENT_CONFIG", file.as_str())])
        .build()
        .await
        .err()
        .map(|error| agent_server::error_chain(&error))
        .expect("the collision stops the startup");
    assert!(
        error.contains("two tools are named py__echo")
            && error.contains("a built-in or HTTP tool")
            && error.contains("MCP server py"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collision_that_appears_later_leaves_the_newer_tool_out_and_readiness_says_so() {
    let server = python();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__grow", json!({})),
        Scripted::text("grown"),
    ])
    .await;
    // An HTTP tool already has the name the server's late tool will get.
    let toml = format!(
        "[[http_tools]]\nname = \"py__late\"\ndescription = \"An HTTP tool.\"\n\
         url = \"http://127.0.0.1:9/late\"\nparameters = {{ type = \"object\" }}\n\n{}",
        server_table("py", &server.url(), "")
    );
    let app = spawn_with(&fake, &toml, &[]).await;
    let response = app
        .agent(json!({"session_id": "mcp-late", "message": "grow"}))
        .await;
    assert_eq!(response.status(), 200);
    let listed = wait_for_tools(&app, Duration::from_secs(10), |body| {
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|tool| tool["name"] == "py__late" && tool["source"] == "mcp")
    })
    .await;
    let late: Vec<&Value> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|tool| tool["name"] == "py__late")
        .collect();
    assert_eq!(late[0]["source"], "http", "the incumbent keeps its name");
    assert_eq!(late[1]["state"], "left_out", "{listed}");
    assert!(
        late[1]["reason"]
            .as_str()
            .unwrap()
            .contains("taken by a built-in or HTTP tool"),
        "{listed}"
    );
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("degraded")),
        "{ready}"
    );
    assert!(
        ready["checks"]["mcp:py"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("tools left out: py__late"),
        "{ready}"
    );
    // The other tools of the server are still offered.
    assert_eq!(tool(&listed, "py__echo").unwrap()["state"], "available");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_turn_cancels_its_mcp_call_on_the_server() {
    let server = python();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__wait", json!({"seconds": 30})),
        Scripted::text("never reached"),
    ])
    .await;
    let app = spawn_with(&fake, &server_table("py", &server.url(), ""), &[]).await;
    assert_eq!(count(&app, &server, "cancelled").await, 0);
    // The client goes away while the tool runs: the turn is dropped, and with it the call.
    let response = app
        .stream(json!({"message": "wait", "session_id": "mcp-gone"}))
        .await;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        if String::from_utf8_lossy(&chunk.unwrap()).contains("event: tool_call") {
            break;
        }
    }
    // Gone once the call is running on the server.
    wait_for_count(&app, &server, "started", 1).await;
    drop(body);
    wait_for_count(&app, &server, "cancelled", 1).await;
    assert!(
        app.stored("mcp-gone").await.is_empty(),
        "a cancelled turn stores nothing"
    );
}
