//! Tool approvals (`require_approval` on each tool source) where the client cannot be asked (Chat
//! Completions have no shape for an approval): a call needing approval never runs unapproved, it
//! is rejected at once and the model reads why, beside the step's other calls, which run. (Where
//! the client can be asked, the run waits: see `waiting`.)

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::{McpServer, McpServerKind};

use crate::helpers::{config_file, spawn_with_model};

#[tokio::test(flavor = "multi_thread")]
async fn a_call_needing_approval_is_not_run_and_the_model_reads_why_while_the_others_run() {
    let server = McpServer::start(McpServerKind::Python { token: None }).unwrap();
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![
            (
                "calculator".to_owned(),
                json!({"expression": "2+3"}).to_string(),
            ),
            ("current_time".to_owned(), "{}".to_owned()),
            ("py__add".to_owned(), json!({"a": 2, "b": 3}).to_string()),
            ("py__echo".to_owned(), json!({"text": "hi"}).to_string()),
        ]),
        Scripted::text("I may not compute that here."),
    ])
    .await;
    let toml = format!(
        "[builtin_tools]\nrequire_approval = {{ always = {{ tool_names = [\"calculator\"] }} }}\n\n\
         [[mcp_servers]]\nname = \"py\"\nurl = \"{}\"\n\
         require_approval = {{ never = {{ tool_names = [\"echo\"] }} }}\n",
        server.url()
    );
    let file = config_file(&toml);
    let app = spawn_with_model(&fake, &[("AGENT_CONFIG", file.as_str())]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, listed) = app.get_json("/tools").await;
        let names: Vec<&str> = listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .collect();
        if names.contains(&"py__add") && names.contains(&"py__echo") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let response = app
        .client
        .post(format!("{}/v1/chat/completions", app.address))
        .header("X-Session-Id", "approvals-1")
        .json(&json!({
            "model": "agent",
            "messages": [{"role": "user", "content": "add, time, echo"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "I may not compute that here."
    );

    // The model's second request holds the four results, in call order.
    let requests = fake.requests().await;
    let results: Vec<(String, String)> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| {
            (
                message["tool_call_id"].as_str().unwrap().to_owned(),
                message["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    let rejected = "rejected by the user: this tool needs the user's approval";
    assert!(results[0].1.starts_with(rejected), "{results:?}");
    assert!(results[1].1.contains("unix"), "the clock ran: {results:?}");
    // Not "5": the MCP server was never asked to add.
    assert!(results[2].1.starts_with(rejected), "{results:?}");
    assert_eq!(
        results[3].1, "echo: hi",
        "echo needs no approval: {results:?}"
    );
    // The stored turn holds every call and what became of it.
    let (status, session) = app.get_json("/sessions/approvals-1").await;
    assert_eq!(status, 200, "{session}");
    let stored: Vec<&str> = session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .filter_map(|message| message["content"].as_str())
        .collect();
    assert_eq!(stored.len(), 4, "{session}");
    assert!(stored[0].starts_with(rejected) && stored[2].starts_with(rejected));
}
