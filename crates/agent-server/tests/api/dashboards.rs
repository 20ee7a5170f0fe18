//! The Grafana dashboard (`deploy/grafana/`) and the Prometheus alert rules
//! (`deploy/prometheus/`): the rules pass `promtool check rules` (Debian's `prometheus` package;
//! CI requires it), and every metric either of them queries is one the server exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::{McpServer, McpServerKind};

use crate::helpers::spawn_with_model;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/agent-server.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "agent-server");
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// The PromQL expressions of the alert rules.
fn alert_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yaml")).unwrap();
    let rules: Value = serde_norway::from_str(&text).expect("the rules are YAML");
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().iter())
        .map(|rule| rule["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// The metric names in PromQL expressions: ours all begin `agent_`, `http_` or `model_`, and a
/// histogram's series end `_bucket`, `_count` or `_sum`.
fn metric_names(queries: &[String]) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\b(?:agent|http|model)_[a-z0-9_]+").unwrap();
    queries
        .iter()
        .flat_map(|query| name.find_iter(query).map(|found| found.as_str().to_owned()))
        .collect()
}

/// `promtool`, from Debian's `prometheus` package (the README's apt list names it).
#[test]
fn the_alert_rules_pass_promtool() {
    let promtool = test_support::system_program("promtool", "prometheus").unwrap();
    let output = std::process::Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(deploy("prometheus/alerts.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let queries: Vec<String> = dashboard_queries()
        .into_iter()
        .chain(alert_queries())
        .collect();
    let used = metric_names(&queries);
    assert!(used.len() >= 20, "{used:?}");
    // A server with an MCP server (its series appear once it lists tools), after a turn calling
    // its tool and an error answer (their series appear when first counted).
    let server = McpServer::start(McpServerKind::Python { token: None }).unwrap();
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("py__echo", json!({"text": "hi"})),
        Scripted::text("done"),
    ])
    .await;
    let file = crate::helpers::config_file(&format!(
        "[[mcp_servers]]\nname = \"py\"\nurl = \"{}\"\n",
        server.url()
    ));
    let app = spawn_with_model(&fake, &[("AGENT_CONFIG", file.as_str())]).await;
    let response = app.agent(json!({"message": "echo hi"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/sessions/nobody-has-this").await.status(), 404);
    let metrics = app.metrics().await;
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{metrics}");
    // The new series carry what the panels group by.
    assert!(
        metrics.contains(r#"http_errors_total{route="/sessions/{id}",code="session_not_found"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("agent_ready 1"), "{metrics}");
    assert!(
        metrics.contains(r#"agent_readiness_check_up{check="mcp:py",criticality="optional"} 1"#),
        "{metrics}"
    );
}
