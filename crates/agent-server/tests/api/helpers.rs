//! `spawn_app()`: the application on port 0 with test-friendly settings, and a client for it.

use std::time::Duration;

use agent_server::{Application, ApplicationBuilder, ShutdownTrigger, StartupError};
use tokio::task::JoinHandle;

/// Settings every test server starts from: port 0, short shutdown timings, no result cache.
const TEST_VARS: &[(&str, &str)] = &[
    ("PORT", "0"),
    ("WORKERS", "2"),
    ("AGENT_LOG_FORMAT", "pretty"),
    ("AGENT_SERVER__SHUTDOWN_DELAY", "300ms"),
    ("AGENT_SERVER__DRAIN_TIMEOUT", "5s"),
    ("AGENT_HEALTH__CACHE_TTL", "0s"),
    ("AGENT_HEALTH__CHECK_TIMEOUT", "500ms"),
];

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) client: reqwest::Client,
    pub(crate) shutdown: ShutdownTrigger,
    pub(crate) server: JoinHandle<Result<(), StartupError>>,
}

impl TestApp {
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request failed")
    }

    pub(crate) async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("the body is not JSON"))
    }
}

/// A builder with the test settings plus `extra` variables.
pub(crate) fn builder(extra: &[(&str, &str)]) -> ApplicationBuilder {
    let vars = TEST_VARS
        .iter()
        .chain(extra)
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()));
    let loaded = agent_config::load_from(vars).expect("the test settings are valid");
    Application::builder(loaded.settings)
}

/// Builds and runs the application; returns once it answers.
pub(crate) async fn spawn_app() -> TestApp {
    spawn(builder(&[])).await
}

pub(crate) async fn spawn(builder: ApplicationBuilder) -> TestApp {
    let application = builder.build().await.expect("the application builds");
    run(application)
}

pub(crate) fn run(application: Application) -> TestApp {
    let port = application.port();
    let shutdown = application.shutdown_trigger();
    let server = tokio::spawn(application.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: client(),
        shutdown,
        server,
    }
}

/// A client that fails a test instead of hanging it.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("the client builds")
}

/// Asserts the one error shape and returns the code.
pub(crate) fn error_code(body: &serde_json::Value) -> &str {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}
