//! Property-based bad input: arbitrary bodies, content types, headers, methods and path segments
//! on `/agent`, `/agent/stream` and `/sessions/{id}` never get a 5xx, are refused with the JSON
//! error shape and a status and code `/openapi.json` documents, and a refused request runs no
//! turn and changes no session.

use std::collections::BTreeMap;

use fake_openai::FakeOpenAi;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use crate::helpers::TestApp;
use crate::openapi::{Contract, app_for_properties, runner};

/// Any JSON value, a few levels deep, with keys that sometimes are the API's own.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |number| number.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("message".to_owned()),
                    Just("session_id".to_owned()),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..4
            )
            .prop_map(|map: BTreeMap<String, Value>| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Request bodies: raw bytes, any JSON, and objects close to the contract.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|value| value.to_string().into_bytes()),
        (json_value(), prop::option::of(json_value())).prop_map(|(message, session)| {
            let mut body = serde_json::Map::new();
            body.insert("message".into(), message);
            if let Some(session) = session {
                body.insert("session_id".into(), session);
            }
            Value::Object(body).to_string().into_bytes()
        }),
        (any::<String>(), prop::option::of(any::<String>())).prop_map(|(message, session)| {
            serde_json::json!({ "message": message, "session_id": session })
                .to_string()
                .into_bytes()
        }),
        // Valid ones too, so refusals are tested next to turns that run and are stored.
        ("[ -~]{1,100}", prop::option::of("[A-Za-z0-9._-]{1,20}")).prop_map(
            |(message, session)| {
                serde_json::json!({ "message": message, "session_id": session })
                    .to_string()
                    .into_bytes()
            }
        ),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some("application/json".to_owned())),
        2 => Just(Some("application/json; charset=utf-8".to_owned())),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = reqwest::Method> {
    prop_oneof![
        16 => Just(reqwest::Method::POST),
        1 => Just(reqwest::Method::GET),
        1 => Just(reqwest::Method::PUT),
        1 => Just(reqwest::Method::DELETE),
        1 => Just(reqwest::Method::PATCH),
    ]
}

/// An extra header with a valid name and value (the client refuses invalid ones).
fn extra_header() -> impl Strategy<Value = Option<(String, String)>> {
    prop::option::of((
        prop_oneof![
            Just("idempotency-key".to_owned()),
            Just("authorization".to_owned()),
            Just("x-request-id".to_owned()),
            Just("accept".to_owned()),
            "x-[a-z]{1,10}",
        ],
        "[ -~]{0,300}",
    ))
}

/// Percent-encodes every byte but ASCII letters and digits, so any string is one path segment.
fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The session a body names, if its id is valid, and that session's stored state.
async fn named_session(app: &TestApp, body: &[u8]) -> Option<(String, Option<u64>)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let id = agent_core::SessionId::parse(value.get("session_id")?.as_str()?).ok()?;
    let state = app
        .backends
        .conversations
        .session(&id)
        .await
        .expect("the store answers")
        .map(|info| info.next_sequence);
    Some((id.to_string(), state))
}

/// A refusal is a 4xx whose body is `{"error": {"code": "...", "message": "..."}}`; every answer
/// is documented for its operation.
async fn check_refusal(
    contract: &Contract,
    method: &reqwest::Method,
    template: &str,
    response: reqwest::Response,
) -> Result<u16, TestCaseError> {
    let status = response.status().as_u16();
    prop_assert!(status < 500, "a client's request got {status}");
    prop_assert!(response.headers().contains_key("x-request-id"));
    // Accepted or not, the whole answer is read (a stream ends with its last event).
    let body = response.bytes().await.expect("the body arrives");
    contract.check(method.as_str(), template, status, &body)?;
    if status >= 400 {
        let json: Value = serde_json::from_slice(&body)
            .map_err(|_| TestCaseError::fail(format!("{status} without a JSON body: {body:?}")))?;
        prop_assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "{json}"
        );
    }
    Ok(status)
}

struct AgentCase {
    stream: bool,
    method: reqwest::Method,
    content_type: Option<String>,
    header: Option<(String, String)>,
    body: Vec<u8>,
}

async fn agent_case(
    app: &TestApp,
    fake: &FakeOpenAi,
    contract: &Contract,
    case: AgentCase,
) -> Result<(), TestCaseError> {
    let path = if case.stream {
        "/agent/stream"
    } else {
        "/agent"
    };
    let session_before = named_session(app, &case.body).await;
    let model_calls_before = fake.requests().await.len();
    let mut request = app
        .client
        .request(case.method.clone(), format!("{}{path}", app.address))
        .body(case.body.clone());
    if let Some(content_type) = &case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some((name, value)) = &case.header {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the server answers");
    let status = check_refusal(contract, &case.method, path, response).await?;
    if status >= 400 {
        prop_assert_eq!(
            fake.requests().await.len(),
            model_calls_before,
            "a refused request ran a turn"
        );
        if let Some((id, before)) = session_before {
            let after = named_session(app, &case.body).await.map(|(_, state)| state);
            prop_assert_eq!(
                after,
                Some(before),
                "a refused request changed session {}",
                id
            );
        }
    }
    Ok(())
}

async fn session_case(
    app: &TestApp,
    contract: &Contract,
    method: reqwest::Method,
    segment: &str,
) -> Result<(), TestCaseError> {
    let url = format!("{}/sessions/{}", app.address, path_segment(segment));
    let response = app
        .client
        .request(method.clone(), url)
        .send()
        .await
        .expect("the server answers");
    // An empty segment is the path `/sessions/`, which has no route; so are `.` and `..` once
    // the client's URL parser has removed them as dot segments (even percent-encoded), giving
    // `/sessions/` and `/`.
    let template = match segment {
        "" | "." => "/sessions/",
        ".." => "/",
        _ => "/sessions/{id}",
    };
    check_refusal(contract, &method, template, response).await?;
    Ok(())
}

#[test]
fn arbitrary_agent_requests_get_no_5xx_and_refusals_change_nothing() {
    let (runtime, app, fake, contract) = app_for_properties(&[
        ("AGENT_API__MAX_MESSAGE_CHARS", "200"),
        // Rate limiting has tests of its own; here it would refuse most cases.
        ("AGENT_RATE_LIMIT__REQUESTS", "1000000"),
    ]);
    let strategy = (
        any::<bool>(),
        method(),
        content_type(),
        extra_header(),
        body(),
    );
    runner(300)
        .run(&strategy, |(stream, method, content_type, header, body)| {
            let case = AgentCase {
                stream,
                method,
                content_type,
                header,
                body,
            };
            runtime.block_on(agent_case(&app, &fake, &contract, case))
        })
        .unwrap();
}

#[test]
fn arbitrary_session_paths_get_no_5xx_and_a_json_error() {
    let (runtime, app, _fake, contract) =
        app_for_properties(&[("AGENT_RATE_LIMIT__REQUESTS", "1000000")]);
    // `.` and `..` (even percent-encoded) are dot segments: the URL parser resolves them before
    // sending (`/sessions/..` is `/`), so they never name a session.
    let segment = prop_oneof![any::<String>(), "[A-Za-z0-9._-]{1,130}", ".{0,600}"]
        .prop_filter("a dot segment", |segment| segment != "." && segment != "..");
    let method = prop_oneof![
        4 => Just(reqwest::Method::GET),
        4 => Just(reqwest::Method::DELETE),
        1 => Just(reqwest::Method::POST),
        1 => Just(reqwest::Method::PUT),
    ];
    runner(300)
        .run(&(method, segment), |(method, segment)| {
            runtime.block_on(session_case(&app, &contract, method, &segment))
        })
        .unwrap();
}
