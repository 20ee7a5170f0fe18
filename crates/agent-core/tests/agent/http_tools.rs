//! Operator-declared HTTP tools: arguments go out as JSON to the configured URL only, secret
//! headers are sent, responses are capped, failures become tool errors.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{HttpTool, HttpToolMethod, HttpToolOptions, ToolCall, ToolRegistry};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn options(server: &MockServer, method: HttpToolMethod) -> HttpToolOptions {
    HttpToolOptions {
        name: "weather".into(),
        description: "Weather for a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": { "city": { "type": "string" } },
            "required": ["city"],
            "additionalProperties": false
        }),
        url: format!("{}/weather", server.uri()).parse().unwrap(),
        method,
        headers: vec![(
            "authorization".into(),
            "Bearer tool-secret".to_owned().into(),
        )],
        timeout: Duration::from_secs(1),
        max_response_bytes: 64,
    }
}

async fn call(options: HttpToolOptions, arguments: serde_json::Value) -> agent_core::ToolOutcome {
    let mut registry = ToolRegistry::new(Duration::from_secs(5));
    registry
        .register(Arc::new(HttpTool::new(options).unwrap()))
        .unwrap();
    registry
        .call(&ToolCall {
            id: "1".into(),
            name: "weather".into(),
            arguments: arguments.to_string(),
        })
        .await
}

#[tokio::test]
async fn post_tools_send_the_arguments_as_json_with_their_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/weather"))
        .and(header("authorization", "Bearer tool-secret"))
        .and(body_json(json!({ "city": "Lyon" })))
        .respond_with(ResponseTemplate::new(200).set_body_string("sunny, 21 C"))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = call(
        options(&server, HttpToolMethod::Post),
        json!({ "city": "Lyon" }),
    )
    .await;
    assert_eq!(
        (outcome.content.as_str(), outcome.is_error),
        ("sunny, 21 C", false)
    );
}

#[tokio::test]
async fn get_tools_send_the_arguments_as_query_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/weather"))
        .and(query_param("city", "Oslo"))
        .respond_with(ResponseTemplate::new(200).set_body_string("snow"))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = call(
        options(&server, HttpToolMethod::Get),
        json!({ "city": "Oslo" }),
    )
    .await;
    assert_eq!(outcome.content, "snow");
}

#[tokio::test]
async fn invalid_arguments_never_reach_the_service() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let outcome = call(
        options(&server, HttpToolMethod::Post),
        json!({ "town": "Lyon" }),
    )
    .await;
    assert!(
        outcome.is_error && outcome.content.contains("invalid arguments"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_large_or_failed_answers_are_errors() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    Mock::given(path("/weather"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/steal", elsewhere.uri()).as_str()),
        )
        .mount(&server)
        .await;
    let redirected = call(
        options(&server, HttpToolMethod::Post),
        json!({ "city": "Lyon" }),
    )
    .await;
    assert!(
        redirected.is_error && redirected.content.contains("302"),
        "{redirected:?}"
    );

    let big = MockServer::start().await;
    Mock::given(path("/weather"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(1000)))
        .mount(&big)
        .await;
    let capped = call(
        options(&big, HttpToolMethod::Post),
        json!({ "city": "Lyon" }),
    )
    .await;
    assert!(
        capped.is_error && capped.content.contains("larger than 64 bytes"),
        "{capped:?}"
    );

    let failing = MockServer::start().await;
    Mock::given(path("/weather"))
        .respond_with(ResponseTemplate::new(503).set_body_string("maintenance"))
        .mount(&failing)
        .await;
    let failed = call(
        options(&failing, HttpToolMethod::Post),
        json!({ "city": "Lyon" }),
    )
    .await;
    assert!(
        failed.is_error && failed.content.contains("503") && failed.content.contains("maintenance"),
        "{failed:?}"
    );

    let slow = MockServer::start().await;
    Mock::given(path("/weather"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let timed_out = call(
        options(&slow, HttpToolMethod::Post),
        json!({ "city": "Lyon" }),
    )
    .await;
    assert!(timed_out.is_error, "{timed_out:?}");
}
