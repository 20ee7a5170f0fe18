//! Several agents in one deployment: each answers with its own instructions and tools (what the
//! fake model was sent shows which one answered), a caller sees and uses only the agents its
//! `callers` allow (404 otherwise, in OpenAI's shape on `/v1`), a model outside an agent's tools
//! is refused where tools run, and a chain falls back on a 5xx but never on a 400.

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};

use crate::helpers::{TestApp, builder, config_file, error_code, spawn_with_model};

const KEYS: &str = "alice:key-alice,bob:key-bob";

const TWO_AGENTS: &str = r#"
default_agent = "support"

[[agents]]
id = "support"
name = "Support"
description = "Answers questions about orders."
instructions = "You are the support agent."
tools = ["calculator"]

[[agents]]
id = "research"
instructions = "You are the research agent."
tools = ["current_*"]
callers = ["alice"]
"#;

/// A request as the holder of `key` (a GET without a body): its status and JSON answer.
async fn ask(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", app.address);
    let request = match body {
        None => app.client.get(url),
        Some(body) => app.client.post(url).json(&body),
    };
    let response = request
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The system prompt and the offered tools' names of the model's request number `index`.
async fn sent(fake: &FakeOpenAi, index: usize) -> (String, Vec<String>) {
    let requests = fake.requests().await;
    let request = &requests[index];
    let system = request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tools = request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tool| tool["function"]["name"].as_str())
        .map(str::to_owned)
        .collect();
    (system, tools)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_agent_answers_with_its_own_instructions_and_tools_for_the_callers_it_allows() {
    let fake = FakeOpenAi::repeating(Scripted::text("hello")).await;
    let file = config_file(TWO_AGENTS);
    let app = spawn_with_model(
        &fake,
        &[("AGENT_CONFIG", file.as_str()), ("AGENT_API_KEYS", KEYS)],
    )
    .await;

    // Bob sees the support agent only.
    let (status, listed) = ask(&app, "key-bob", "/agents", None).await;
    assert_eq!(status, 200, "{listed}");
    let support = &listed["agents"][0];
    assert_eq!(listed["agents"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(support["id"], "support");
    assert_eq!(support["name"], "Support");
    assert_eq!(support["description"], "Answers questions about orders.");
    assert_eq!(support["default"], true);
    assert_eq!(support["tools"], json!(["calculator"]));
    let model = support["models"][0].as_str().unwrap().to_owned();
    assert!(!listed.to_string().contains("127.0.0.1"), "no address");
    for path in ["/agents/research", "/agents/nobody"] {
        let (status, body) = ask(&app, "key-bob", path, None).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(error_code(&body), "agent_not_found");
    }
    let (status, body) = ask(
        &app,
        "key-bob",
        "/agent",
        Some(json!({"message": "hi", "agent": "research"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "agent_not_found");
    // An id no agent can have is an invalid field, as the document's pattern says.
    let (status, body) = ask(
        &app,
        "key-bob",
        "/agent",
        Some(json!({"message": "hi", "agent": "NOT VALID!"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "invalid_request");
    let (_, models) = ask(&app, "key-bob", "/v1/models", None).await;
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(models["data"][0]["id"], "support");
    let (status, body) = ask(
        &app,
        "key-bob",
        "/v1/chat/completions",
        Some(json!({"model": "research", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    assert!(
        fake.requests().await.is_empty(),
        "nothing reached the model"
    );

    // Alice: the default agent, then the research agent, each as itself.
    let (status, body) = ask(&app, "key-alice", "/agent", Some(json!({"message": "hi"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent"], "support");
    assert_eq!(body["model"], model.as_str());
    assert_eq!(
        sent(&fake, 0).await,
        (
            "You are the support agent.".to_owned(),
            vec!["calculator".to_owned()]
        )
    );
    let (status, body) = ask(
        &app,
        "key-alice",
        "/agent",
        Some(json!({"message": "hi", "agent": "research"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent"], "research");
    assert_eq!(
        sent(&fake, 1).await,
        (
            "You are the research agent.".to_owned(),
            vec!["current_time".to_owned()]
        )
    );
    let (status, body) = ask(
        &app,
        "key-alice",
        "/v1/chat/completions",
        Some(json!({"model": "research", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "research");
    assert_eq!(sent(&fake, 2).await.0, "You are the research agent.");
    let (status, body) = ask(
        &app,
        "key-alice",
        "/v1/responses",
        Some(json!({"model": "support", "input": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "support");
    assert_eq!(sent(&fake, 3).await.0, "You are the support agent.");
    let (_, models) = ask(&app, "key-alice", "/v1/models", None).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|model| model["id"].as_str())
        .collect();
    assert_eq!(ids, ["support", "research"]);
    let metrics = app.metrics().await;
    // Usage: one row for the day, or one per agent.
    let (_, usage) = ask(&app, "key-alice", "/usage", None).await;
    assert_eq!(usage["usage"].as_array().unwrap().len(), 1, "{usage}");
    assert_eq!(usage["usage"][0]["turns"], 4, "{usage}");
    assert!(usage["usage"][0].get("agent").is_none(), "{usage}");
    let (_, usage) = ask(&app, "key-alice", "/usage?by_agent=true", None).await;
    let split: Vec<(&str, u64)> = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["agent"].as_str().unwrap(),
                row["turns"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(split, [("research", 2), ("support", 2)], "{usage}");
    for line in [
        r#"agent_turns_total{outcome="completed",agent="support"} 2"#,
        r#"agent_turns_total{outcome="completed",agent="research"} 2"#,
        r#"agent_tokens_total{kind="prompt",agent="research"} "#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_of_a_tool_outside_the_agents_list_is_refused_never_run() {
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![
            (
                "calculator".to_owned(),
                json!({"expression": "2+3"}).to_string(),
            ),
            ("current_time".to_owned(), "{}".to_owned()),
        ]),
        Scripted::text("done"),
    ])
    .await;
    let file = config_file(TWO_AGENTS);
    let app = spawn_with_model(&fake, &[("AGENT_CONFIG", file.as_str())]).await;
    let response = app.agent(json!({"message": "add and tell the time"})).await;
    assert_eq!(response.status(), 200);
    let requests = fake.requests().await;
    let results: Vec<&str> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .filter_map(|message| message["content"].as_str())
        .collect();
    assert_eq!(results[0], "5");
    assert!(
        results[1].starts_with("error:") && results[1].contains("no tool named \"current_time\""),
        "{results:?}"
    );
}

/// A server whose agent `support` calls the model `primary`, then `backup`.
async fn fallback_app(primary: &FakeOpenAi, backup: &FakeOpenAi) -> TestApp {
    let toml = format!(
        r#"
[[agents]]
id = "support"
model = "primary"
fallbacks = ["backup"]

[[models]]
name = "primary"
base_url = "{}"
model = "primary-model"
max_attempts = 1

[[models]]
name = "backup"
base_url = "{}"
model = "backup-model"
api_key = "backup-key"
headers = {{ X-Gateway = "eu" }}
"#,
        primary.base_url(),
        backup.base_url()
    );
    let file = config_file(&toml);
    spawn_with_model(primary, &[("AGENT_CONFIG", file.as_str())]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_model_falls_back_to_the_next_of_the_chain_and_a_refused_request_does_not() {
    let primary = FakeOpenAi::start(vec![
        Scripted::status(500),
        Scripted::status(503),
        Scripted::status(400),
    ])
    .await;
    let backup = FakeOpenAi::repeating(Scripted::text("backup answers")).await;
    let app = fallback_app(&primary, &backup).await;

    // A 500: the backup answers, and the header, the body and the metric say so.
    let response = app.agent(json!({"message": "hi"})).await;
    assert_eq!(response.headers()["x-agent-model"], "backup");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"], "backup answers", "{body}");
    assert_eq!(body["model"], "backup");
    let sent = backup.requests().await;
    assert_eq!(sent[0]["model"], "backup-model");
    assert_eq!(
        backup.header_values("authorization").await,
        [Some("Bearer backup-key".to_owned())]
    );
    assert_eq!(
        backup.header_values("x-gateway").await,
        [Some("eu".to_owned())]
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"agent_model_fallbacks_total{agent="support",from="primary",to="backup",reason="upstream"} 1"#
        ),
        "{metrics}"
    );

    // A stream names the model in its final event.
    let events = app
        .stream(json!({"message": "hi"}))
        .await
        .text()
        .await
        .unwrap();
    let done = events
        .split("\n\n")
        .find(|event| event.contains("event: done"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(done.contains(r#""model":"backup""#), "{done}");

    // A 400: the request is bad wherever it goes; no fallback.
    let response = app.agent(json!({"message": "hi"})).await;
    assert_eq!(response.status(), 502);
    assert!(response.headers().get("x-agent-model").is_none());
    assert_eq!(backup.requests().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_naming_no_tool_or_model_that_exists_stops_startup_naming_it() {
    let file =
        config_file("[[agents]]\nid = \"support\"\ntools = [\"calculator\", \"tickets__*\"]\n");
    let error = builder(&[("AGENT_CONFIG", file.as_str())])
        .build()
        .await
        .map(|_| ())
        .unwrap_err();
    let text = agent_core::error_chain(&error);
    assert!(
        text.contains("agents (support): tools: 'tickets__*' names no tool"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_the_agent_of_its_first_turn() {
    let fake = FakeOpenAi::repeating(Scripted::text("hello")).await;
    let file = config_file(&TWO_AGENTS.replace("callers = [\"alice\"]\n", ""));
    let app = spawn_with_model(&fake, &[("AGENT_CONFIG", file.as_str())]).await;
    let (status, first) = app
        .post_json(
            "/agent",
            &json!({"message": "hi", "agent": "research", "session_id": "kept"}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    // Naming no agent continues with the session's own, not the default one.
    let (status, second) = app
        .post_json("/agent", &json!({"message": "again", "session_id": "kept"}))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["agent"], "research");
    assert_eq!(sent(&fake, 1).await.0, "You are the research agent.");
    // Naming another is refused, on every surface, and stores nothing.
    let (status, refused) = app
        .post_json(
            "/agent",
            &json!({"message": "switch", "agent": "support", "session_id": "kept"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(error_code(&refused), "session_agent_mismatch");
    let response = app
        .client
        .post(format!("{}/v1/chat/completions", app.address))
        .header("X-Session-Id", "kept")
        .json(&json!({"model": "support", "messages": [{"role": "user", "content": "switch"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_agent_mismatch", "{body}");
    assert_eq!(fake.requests().await.len(), 2, "refused before the model");
    let (_, session) = app.get_json("/sessions/kept").await;
    assert_eq!(session["agent"], "research");
    // Its runs are the session's agent's.
    let run = first["run_id"].as_str().unwrap();
    let (_, shown) = app.get_json(&format!("/runs/{run}")).await;
    assert_eq!(shown["agent"], "research", "{shown}");
    let (_, runs) = app.get_json("/sessions/kept/runs").await;
    assert_eq!(runs["runs"][1]["agent"], "research", "{runs}");
    assert_eq!(session["turn_count"], 2);
    assert_eq!(app.stored("anonymous:kept").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_shows_each_model_and_a_chain_is_up_while_one_of_its_models_is() {
    let backup = FakeOpenAi::repeating(Scripted::text("backup answers")).await;
    let dead = format!("http://127.0.0.1:{}/v1", crate::helpers::closed_port());
    let toml = format!(
        "[[agents]]\nid = \"support\"\nmodel = \"dead\"\nfallbacks = [\"backup\"]\n\n\
         [[models]]\nname = \"dead\"\nbase_url = \"{dead}\"\nmodel = \"m\"\nmax_attempts = 1\n\n\
         [[models]]\nname = \"backup\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        backup.base_url()
    );
    let file = config_file(&toml);
    let app = spawn_with_model(&backup, &[("AGENT_CONFIG", file.as_str())]).await;
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    let checks = &ready["checks"];
    assert_eq!(checks["model:dead"]["status"], "down", "{ready}");
    assert_eq!(checks["model:dead"]["criticality"], "optional");
    assert_eq!(checks["model:backup"]["status"], "up", "{ready}");
    assert_eq!(checks["agent:support"]["status"], "up", "{ready}");
    // GET /models: no tokens spent, no chat call.
    assert!(backup.requests().await.is_empty());
    // And the turn goes to the backup.
    let response = app.agent(json!({"message": "hi"})).await;
    assert_eq!(response.headers()["x-agent-model"], "backup");
}
