//! `/openapi.json` says exactly what the server does: every registered route is documented, the
//! document follows the configuration, requests generated from its schemas are accepted, every
//! constraint it states is enforced, and every status the server answers is documented for its
//! operation (`Contract::check`, also used by the property tests in `properties`).

use fake_openai::{FakeOpenAi, Scripted};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{TestApp, builder, error_code, spawn, spawn_with_model};

/// The document of a running server, and the checks it implies.
pub(crate) struct Contract {
    pub(crate) document: Value,
}

impl Contract {
    pub(crate) async fn of(app: &TestApp) -> Self {
        let (status, document) = app.get_json("/openapi.json").await;
        assert_eq!(status, 200, "{document}");
        Self { document }
    }

    /// The operation for a method and a path template, if documented.
    pub(crate) fn operation(&self, method: &str, template: &str) -> Option<&Value> {
        self.document["paths"][template]
            .get(method.to_ascii_lowercase())
            .filter(|operation| operation.is_object())
    }

    /// The statuses documented for an operation.
    pub(crate) fn statuses(&self, method: &str, template: &str) -> Vec<u16> {
        self.operation(method, template)
            .and_then(|operation| operation["responses"].as_object())
            .map(|responses| {
                responses
                    .keys()
                    .filter_map(|key| key.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A schema of `components.schemas`.
    pub(crate) fn schema(&self, name: &str) -> &Value {
        &self.document["components"]["schemas"][name]
    }

    /// Checks an answer against the document: its status is documented for the operation (or
    /// is 405 for a method the path does not document), and an error's code is one of the
    /// documented codes. A path the document does not have answers 404.
    pub(crate) fn check(
        &self,
        method: &str,
        template: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), TestCaseError> {
        if self.document["paths"].get(template).is_none() {
            prop_assert_eq!(status, 404, "{} is not a documented path", template);
        } else if self.operation(method, template).is_some() {
            let documented = self.statuses(method, template);
            prop_assert!(
                documented.contains(&status),
                "{method} {template} answered {status}, documented: {documented:?}"
            );
        } else {
            prop_assert_eq!(status, 405, "{} {} is not documented", method, template);
        }
        if status >= 400 {
            let json: Value = serde_json::from_slice(body)
                .map_err(|_| TestCaseError::fail(format!("{status} without a JSON body")))?;
            let codes = self.schema("ErrorCode")["enum"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            prop_assert!(
                codes.contains(&json["error"]["code"]),
                "{} is not a documented error code",
                json["error"]["code"]
            );
        }
        Ok(())
    }
}

/// The document has no `null` anywhere: OpenAPI has no field whose value may be null, and a
/// validator refuses the whole document for one.
fn assert_no_null(value: &Value, at: &str) {
    match value {
        Value::Null => panic!("null at {at}"),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                assert_no_null(item, &format!("{at}/{index}"));
            }
        }
        Value::Object(fields) => {
            for (name, field) in fields {
                assert_no_null(field, &format!("{at}/{name}"));
            }
        }
        _ => {}
    }
}

/// The paths registered in `src/routes/mod.rs`, read from its source so that a new route that
/// is not documented fails this test.
fn registered_paths() -> Vec<String> {
    let source = include_str!("../../src/routes/mod.rs");
    source
        .split('"')
        .filter(|piece| piece.starts_with('/') && !piece.contains(' '))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_registered_route_is_documented_with_its_methods() {
    let app = spawn(builder(&[("AGENT_API_KEYS", "a-key-0123456789")])).await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .bearer_auth("a-key-0123456789")
        .send()
        .await
        .unwrap();
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_no_null(&document, "");
    let paths = document["paths"].as_object().unwrap();
    let registered = registered_paths();
    assert!(registered.len() >= 8, "{registered:?}");
    for path in &registered {
        assert!(
            paths.contains_key(path),
            "{path} is registered but not in /openapi.json"
        );
    }
    for (path, method) in [
        ("/agent", "post"),
        ("/agent/stream", "post"),
        ("/sessions/{id}", "get"),
        ("/sessions/{id}", "delete"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/startup", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    let codes = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.len() >= 30, "{codes:?}");
    for event in [
        "DeltaEvent",
        "ToolCallEvent",
        "ToolResultEvent",
        "ShutdownEvent",
    ] {
        assert!(
            document["components"]["schemas"][event].is_object(),
            "{event}"
        );
    }
    let limit = document["paths"]["/sessions/{id}"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .unwrap();
    assert_eq!(
        (
            &limit["in"],
            &limit["required"],
            &limit["schema"]["minimum"],
            &limit["schema"]["maximum"]
        ),
        (&json!("query"), &json!(false), &json!(1), &json!(1000)),
        "{limit}"
    );
}

#[tokio::test]
async fn the_document_describes_the_running_configuration() {
    // Defaults: no keys, rate limits on, streaming on.
    let open = Contract::of(&spawn(builder(&[("AGENT_API__MAX_MESSAGE_CHARS", "77")])).await).await;
    assert!(open.document["components"].get("securitySchemes").is_none());
    for (template, item) in open.document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation.get("security").is_none(), "{method} {template}");
            assert!(
                operation["responses"].get("401").is_none(),
                "{method} {template}"
            );
        }
    }
    // A header carries text, never JSON's null: a header parameter typed `[integer, "null"]`
    // would let a client (and a fuzzer) send `Last-Event-ID: null` and be refused.
    for (template, item) in open.document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "header" {
                    let kind = &parameter["schema"]["type"];
                    assert!(kind.is_string(), "{method} {template}: {parameter}");
                }
            }
        }
    }
    assert!(open.statuses("post", "/agent").contains(&429));
    assert!(!open.statuses("get", "/health").contains(&429));
    // Every API 429 and 503 says when to retry; the probes' 503 is a state, not a refusal.
    for (method, template, status, documented) in [
        ("post", "/agent", "429", true),
        ("post", "/agent", "503", true),
        ("post", "/agent/stream", "503", true),
        ("get", "/sessions/{id}", "503", true),
        ("get", "/ready", "503", false),
    ] {
        let header = &open.operation(method, template).unwrap()["responses"][status]["headers"]["Retry-After"];
        assert_eq!(
            header.is_object(),
            documented,
            "{method} {template} {status}"
        );
    }
    let message = &open.schema("AgentRequest")["properties"]["message"];
    assert_eq!(
        (&message["minLength"], &message["maxLength"]),
        (&json!(1), &json!(77))
    );

    let keyed = spawn(builder(&[
        ("AGENT_API_KEYS", "a-key-0123456789"),
        ("AGENT_RATE_LIMIT__REQUESTS", "0"),
        ("ENABLE_STREAMING", "false"),
    ]))
    .await;
    let document: Value = keyed
        .client
        .get(format!("{}/openapi.json", keyed.address))
        .bearer_auth("a-key-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keyed = Contract { document };
    assert!(keyed.document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(keyed.document["paths"].get("/agent/stream").is_none());
    for (method, template, secured) in [
        ("post", "/agent", true),
        ("get", "/sessions/{id}", true),
        // Open while the docs page is on (the dev profile's default).
        ("get", "/openapi.json", false),
        ("get", "/health", false),
        ("get", "/metrics", false),
    ] {
        let operation = keyed.operation(method, template).unwrap();
        assert_eq!(
            operation.get("security").is_some(),
            secured,
            "{method} {template}"
        );
        assert_eq!(
            keyed.statuses(method, template).contains(&401),
            secured,
            "{method} {template}"
        );
        // Without rate limits or quotas, only the cap of queued background runs answers 429.
        assert_eq!(
            keyed.statuses(method, template).contains(&429),
            template == "/agent",
            "{method} {template}"
        );
    }

    // Quotas without rate limits: a 429 on the routes that run turns, and only there.
    let quotas = spawn(builder(&[
        ("AGENT_API__DAILY_TOKEN_QUOTA", "1000"),
        ("AGENT_RATE_LIMIT__REQUESTS", "0"),
    ]))
    .await;
    let quotas = Contract::of(&quotas).await;
    for (method, template, refused) in [
        ("post", "/agent", true),
        ("post", "/agent/stream", true),
        ("get", "/sessions", false),
        ("get", "/usage", false),
    ] {
        let operation = quotas.operation(method, template).unwrap();
        let answer = &operation["responses"]["429"];
        assert_eq!(answer.is_object(), refused, "{method} {template}");
        if refused {
            assert!(
                answer["description"]
                    .as_str()
                    .unwrap()
                    .contains("quota_exceeded"),
                "{answer}"
            );
            assert!(answer["headers"]["Retry-After"].is_object());
        }
    }
}

/// A string the document's pattern and length bounds allow, from the pattern itself.
fn from_schema(schema: &Value) -> BoxedStrategy<String> {
    // The generator matches whole strings already; it takes no anchors.
    let pattern = schema["pattern"].as_str().expect("a pattern");
    let pattern = pattern.trim_start_matches('^').trim_end_matches('$');
    let max = schema["maxLength"].as_u64().expect("a maxLength") as usize;
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    proptest::string::string_regex(pattern)
        .expect("the pattern is a regular expression")
        .prop_filter("within the length bounds", move |text| {
            (min..=max).contains(&text.chars().count())
        })
        .boxed()
}

/// A property runner: `cases` cases, the failing input printed, no regression files written
/// into the tree.
pub(crate) fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// For property tests (proptest's runner is synchronous): a runtime, a server with `extra`
/// settings on a fake model answering "fine", the fake, and the server's document.
pub(crate) fn app_for_properties(
    extra: &[(&str, &str)],
) -> (tokio::runtime::Runtime, TestApp, FakeOpenAi, Contract) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, fake, contract) = runtime.block_on(async {
        let fake = FakeOpenAi::repeating(Scripted::text("fine")).await;
        let app = spawn_with_model(&fake, extra).await;
        let contract = Contract::of(&app).await;
        (app, fake, contract)
    });
    (runtime, app, fake, contract)
}

/// Every body the schema allows is accepted, runs a turn and is stored; the answers are
/// documented.
#[test]
fn requests_generated_from_the_document_are_accepted() {
    let (runtime, app, _fake, contract) = app_for_properties(&[
        ("AGENT_API__MAX_MESSAGE_CHARS", "300"),
        ("AGENT_RATE_LIMIT__REQUESTS", "0"),
    ]);
    let request = contract.schema("AgentRequest")["properties"].clone();
    let strategy = (
        from_schema(&request["message"]),
        prop::option::of(from_schema(&request["session_id"])),
    );
    runner(150)
        .run(&strategy, |(message, session)| {
            runtime.block_on(async {
                let response = app
                    .agent(json!({ "message": message, "session_id": session }))
                    .await;
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap();
                contract.check("post", "/agent", status, &body)?;
                prop_assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                let answer: Value = serde_json::from_slice(&body).unwrap();
                let id = answer["session_id"].as_str().unwrap();
                if let Some(session) = &session {
                    prop_assert_eq!(id, session.as_str());
                }
                // The session can be read back by the id, as the document describes the path.
                let (status, _) = app.get_json(&format!("/sessions/{id}")).await;
                prop_assert_eq!(status, 200);
                Ok(())
            })
        })
        .unwrap();
}

/// Each constraint the document states, just past its bound, is refused with 422, documented,
/// and runs no turn; just within it, accepted.
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_constraint_is_enforced_at_its_bound() {
    let fake = FakeOpenAi::repeating(Scripted::text("fine")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API__MAX_MESSAGE_CHARS", "40"),
            ("AGENT_RATE_LIMIT__REQUESTS", "0"),
        ],
    )
    .await;
    let contract = Contract::of(&app).await;
    let properties = &contract.schema("AgentRequest")["properties"];
    let max_message = properties["message"]["maxLength"].as_u64().unwrap() as usize;
    let max_session = properties["session_id"]["maxLength"].as_u64().unwrap() as usize;
    let cases = [
        (json!({ "message": "é".repeat(max_message) }), 200),
        (json!({ "message": "é".repeat(max_message + 1) }), 422),
        (json!({ "message": "" }), 422),
        (json!({ "message": " \t\n\u{3000}" }), 422),
        (json!({ "message": "a\u{0}b" }), 422),
        (json!({ "message": "\u{feff}" }), 200),
        (
            json!({ "message": "hi", "session_id": "s".repeat(max_session) }),
            200,
        ),
        (
            json!({ "message": "hi", "session_id": "s".repeat(max_session + 1) }),
            422,
        ),
        (json!({ "message": "hi", "session_id": "" }), 422),
        (json!({ "message": "hi", "session_id": "." }), 422),
        (json!({ "message": "hi", "session_id": ".." }), 422),
        (json!({ "message": "hi", "session_id": "..." }), 200),
        (json!({ "message": "hi", "session_id": "a b" }), 422),
        (json!({ "message": "hi", "session_id": null }), 200),
        (json!({ "message": "hi", "extra": 1 }), 422),
        (json!({ "session_id": "x" }), 422),
    ];
    for (body, expected) in cases {
        let calls = fake.requests().await.len();
        let response = app.agent(body.clone()).await;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        contract.check("post", "/agent", status, &bytes).unwrap();
        assert_eq!(
            status,
            expected,
            "{body}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status == 422 {
            assert_eq!(
                error_code(&serde_json::from_slice(&bytes).unwrap()),
                "invalid_request"
            );
            assert_eq!(fake.requests().await.len(), calls, "{body} ran a turn");
        }
    }
    let limit = contract.operation("get", "/sessions/{id}").unwrap()["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    let (minimum, maximum) = (
        limit["minimum"].as_u64().unwrap(),
        limit["maximum"].as_u64().unwrap(),
    );
    for (query, expected) in [
        (format!("limit={minimum}"), 404),
        (format!("limit={maximum}"), 404),
        (format!("limit={}", minimum - 1), 422),
        (format!("limit={}", maximum + 1), 422),
        ("limit=many".to_owned(), 422),
        ("other=1".to_owned(), 422),
    ] {
        let response = app.get(&format!("/sessions/unknown?{query}")).await;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        contract
            .check("get", "/sessions/{id}", status, &bytes)
            .unwrap();
        assert_eq!(status, expected, "{query}");
    }
}

/// Schemathesis (PyPI), a third-party fuzzer driven only by `/openapi.json`, finds no server
/// error, no undocumented status, content type or header, no refused schema-valid request and no
/// accepted schema-invalid one: once open, once with API keys and rate limits. CI installs it and
/// sets `CI`; elsewhere the test says it skipped.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing() {
    let key = "fuzz-key-0123456789";
    for (settings, headers) in [
        (vec![("AGENT_RATE_LIMIT__REQUESTS", "0")], vec![]),
        (
            vec![
                ("AGENT_API_KEYS", key),
                ("AGENT_RATE_LIMIT__REQUESTS", "1000000"),
            ],
            vec!["-H".to_owned(), format!("Authorization: Bearer {key}")],
        ),
    ] {
        let app = spawn(builder(&settings)).await;
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/schemathesis.toml");
        let url = format!("{}/openapi.json", app.address);
        let fuzzer = test_support::TestTools::get().unwrap().program("st");
        let output = tokio::process::Command::new(fuzzer)
            .args(["--config-file", config, "run", &url, "--checks", "all"])
            // One worker: with two, Hypothesis's `ast.parse` of Schemathesis's own source from two
            // threads at once hits a CPython 3.11.7 bug now and then ("AST constructor recursion
            // depth mismatch", an internal error of the fuzzer, not a finding).
            .args(["--max-examples", "60", "--seed", "1", "--workers", "1"])
            .args(&headers)
            .env("NO_COLOR", "1")
            .current_dir(std::env::temp_dir())
            .output()
            .await;
        let output = output.expect("schemathesis (st) from the provisioned venv");
        let report = String::from_utf8_lossy(&output.stdout);
        // Reproductions quote whole generated bodies; the first lines of each say enough.
        let shown: String = report
            .lines()
            .map(|line| line.chars().take(300).collect::<String>() + "\n")
            .collect();
        assert!(
            output.status.success(),
            "schemathesis with {settings:?} found problems:\n{shown}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(report.contains("No issues found"), "{report}");
    }
}

/// docs/api.md names every error code the document lists.
#[tokio::test]
async fn every_error_code_is_explained_in_the_api_docs() {
    let contract = Contract::of(&spawn(builder(&[])).await).await;
    let docs = include_str!("../../../../docs/api.md");
    for code in contract.schema("ErrorCode")["enum"].as_array().unwrap() {
        let code = code.as_str().unwrap();
        assert!(
            docs.contains(&format!("`{code}`")),
            "docs/api.md does not explain {code}"
        );
    }
}
