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
    pub(crate) backends: agent_server::Backends,
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

    /// The Prometheus text of `GET /metrics`.
    pub(crate) async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("the metrics are text")
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
    let backends = application.backends().clone();
    let shutdown = application.shutdown_trigger();
    let server = tokio::spawn(application.run_until_stopped());
    TestApp {
        backends,
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: client(),
        shutdown,
        server,
    }
}

/// A configuration file (`AGENT_CONFIG`) holding `toml`, in a fresh directory; its path.
pub(crate) fn config_file(toml: &str) -> String {
    let directory = std::env::temp_dir().join(format!("agent-test-{}", uuid_like()));
    std::fs::create_dir_all(&directory).expect("the directory is created");
    let file = directory.join("agent.toml");
    std::fs::write(&file, toml).expect("the file is written");
    file.to_str().expect("the path is UTF-8").to_owned()
}

/// A client that fails a test instead of hanging it.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("the client builds")
}

/// A server on a fresh Postgres database, a fresh Redis prefix and a fake model answering
/// `script`, plus `extra` settings.
pub(crate) async fn spawn_full(
    script: Vec<fake_openai::Scripted>,
    extra: &[(&str, &str)],
) -> (TestApp, fake_openai::FakeOpenAi) {
    let fake = fake_openai::FakeOpenAi::start(script).await;
    (spawn_with_model(&fake, extra).await, fake)
}

pub(crate) async fn spawn_with_model(
    fake: &fake_openai::FakeOpenAi,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut replicas = spawn_replicas(fake, extra, 1).await;
    replicas.remove(0)
}

/// `count` servers sharing one fresh Postgres database and one fresh Redis prefix (replicas of
/// one deployment), with a fake model, plus `extra` settings.
pub(crate) async fn spawn_replicas(
    fake: &fake_openai::FakeOpenAi,
    extra: &[(&str, &str)],
    count: usize,
) -> Vec<TestApp> {
    let database = test_support::fresh_database_url().await;
    let redis = test_support::redis_url();
    let prefix = format!("test:{}:", uuid_like());
    let base_url = fake.base_url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", &database),
        ("REDIS_URL", &redis),
        ("AGENT_STORAGE__REDIS_KEY_PREFIX", &prefix),
        ("OPENAI_BASE_URL", &base_url),
        ("AGENT_MODEL__REQUEST_TIMEOUT", "2s"),
        ("AGENT_MODEL__RETRY_BASE_DELAY", "10ms"),
    ];
    vars.extend_from_slice(extra);
    let mut replicas = Vec::with_capacity(count);
    for _ in 0..count {
        replicas.push(spawn(builder(&vars)).await);
    }
    replicas
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

impl TestApp {
    /// `POST /agent` with a JSON body.
    pub(crate) async fn agent(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/agent", self.address))
            .json(&body)
            .send()
            .await
            .expect("request failed")
    }

    /// `POST /agent/stream` with a JSON body.
    pub(crate) async fn stream(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/agent/stream", self.address))
            .json(&body)
            .send()
            .await
            .expect("request failed")
    }

    /// `POST` of a JSON body to `path`: the status and the JSON answer (null when not JSON).
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request failed");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// The stored messages of a session (none if it does not exist).
    pub(crate) async fn stored(&self, session: &str) -> Vec<agent_storage::StoredMessage> {
        let id = agent_core::SessionId::parse_stored(session).unwrap();
        self.backends
            .conversations
            .recent_messages(&id, 1000)
            .await
            .unwrap()
    }
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

/// A port on which nothing listens.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
