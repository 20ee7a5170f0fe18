//! Table-driven bad input: every malformed request gets a 4xx with the JSON error shape, and
//! nothing is stored and no turn runs.

use fake_openai::Scripted;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_full};

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn json_case(name: &'static str, body: Value, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: "/agent".into(),
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
        code,
    }
}

fn raw_case(
    name: &'static str,
    content_type: Option<&'static str>,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: "POST",
        path: "/agent".into(),
        content_type,
        body: body.to_vec(),
        status,
        code,
    }
}

fn cases() -> Vec<Case> {
    let long_unicode = "é".repeat(1001);
    let huge_unicode = format!(r#"{{"message":"{}"}}"#, "😀".repeat(20_000));
    let mut cases = vec![
        raw_case(
            "truncated JSON",
            Some("application/json"),
            br#"{"message": "hi""#,
            400,
            "malformed_json",
        ),
        raw_case(
            "not JSON at all",
            Some("application/json"),
            b"message=hi",
            400,
            "malformed_json",
        ),
        raw_case(
            "empty body",
            Some("application/json"),
            b"",
            400,
            "malformed_json",
        ),
        raw_case(
            "trailing garbage",
            Some("application/json"),
            br#"{"message":"hi"} x"#,
            400,
            "malformed_json",
        ),
        raw_case(
            "invalid UTF-8",
            Some("application/json"),
            b"{\"message\":\"\xff\xfe\"}",
            400,
            "malformed_json",
        ),
        raw_case(
            "no content type",
            None,
            br#"{"message":"hi"}"#,
            415,
            "unsupported_media_type",
        ),
        raw_case(
            "text/plain",
            Some("text/plain"),
            br#"{"message":"hi"}"#,
            415,
            "unsupported_media_type",
        ),
        raw_case(
            "form encoded",
            Some("application/x-www-form-urlencoded"),
            b"message=hi",
            415,
            "unsupported_media_type",
        ),
        raw_case(
            "a 1 MB body",
            Some("application/json"),
            format!(r#"{{"message":"{}"}}"#, "a".repeat(1 << 20)).as_bytes(),
            413,
            "payload_too_large",
        ),
        json_case(
            "message is a number",
            json!({ "message": 5 }),
            422,
            "invalid_request",
        ),
        json_case(
            "message is null",
            json!({ "message": null }),
            422,
            "invalid_request",
        ),
        json_case(
            "message is an object",
            json!({ "message": { "text": "hi" } }),
            422,
            "invalid_request",
        ),
        json_case(
            "message is an array",
            json!({ "message": ["hi"] }),
            422,
            "invalid_request",
        ),
        json_case(
            "message missing",
            json!({ "session_id": "abc" }),
            422,
            "invalid_request",
        ),
        json_case(
            "message empty",
            json!({ "message": "" }),
            422,
            "invalid_request",
        ),
        json_case(
            "message only spaces",
            json!({ "message": "   \n\t" }),
            422,
            "invalid_request",
        ),
        json_case(
            "message with a NUL byte",
            json!({ "message": "hi\u{0}there" }),
            422,
            "invalid_request",
        ),
        json_case(
            "message over the character limit",
            json!({ "message": long_unicode }),
            422,
            "invalid_request",
        ),
        raw_case(
            "huge unicode over the body limit",
            Some("application/json"),
            huge_unicode.as_bytes(),
            413,
            "payload_too_large",
        ),
        json_case("body is an array", json!(["hi"]), 422, "invalid_request"),
        json_case("body is a string", json!("hi"), 422, "invalid_request"),
        json_case(
            "unknown extra field",
            json!({ "message": "hi", "temperature": 2 }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id is a number",
            json!({ "message": "hi", "session_id": 7 }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id with a path",
            json!({ "message": "hi", "session_id": "../../etc/passwd" }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id with SQL",
            json!({ "message": "hi", "session_id": "x'; DROP TABLE sessions; --" }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id too long",
            json!({ "message": "hi", "session_id": "a".repeat(129) }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id empty",
            json!({ "message": "hi", "session_id": "" }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id with a NUL byte",
            json!({ "message": "hi", "session_id": "a\u{0}b" }),
            422,
            "invalid_request",
        ),
        json_case(
            "session id with unicode",
            json!({ "message": "hi", "session_id": "séance" }),
            422,
            "invalid_request",
        ),
    ];
    let method_cases = [
        ("GET", "/agent"),
        ("PUT", "/agent"),
        ("DELETE", "/agent/stream"),
        ("PATCH", "/sessions/abc"),
    ];
    for (method, path) in method_cases {
        cases.push(Case {
            name: "wrong method",
            method,
            path: path.into(),
            content_type: None,
            body: Vec::new(),
            status: 405,
            code: "method_not_allowed",
        });
    }
    for path in [
        "/sessions/..%2F..%2Fetc",
        "/sessions/a%00b",
        "/sessions/a%20b",
    ] {
        cases.push(Case {
            name: "injection-like session path",
            method: "GET",
            path: path.into(),
            content_type: None,
            body: Vec::new(),
            status: 422,
            code: "invalid_request",
        });
    }
    cases.push(Case {
        name: "stream with malformed JSON",
        method: "POST",
        path: "/agent/stream".into(),
        content_type: Some("application/json"),
        body: b"{".to_vec(),
        status: 400,
        code: "malformed_json",
    });
    cases.push(Case {
        name: "stream with a missing message",
        method: "POST",
        path: "/agent/stream".into(),
        content_type: Some("application/json"),
        body: b"{}".to_vec(),
        status: 422,
        code: "invalid_request",
    });
    cases.push(Case {
        name: "a session query value of the wrong type",
        method: "GET",
        path: "/sessions/abc?limit=x".into(),
        content_type: None,
        body: Vec::new(),
        status: 422,
        code: "invalid_request",
    });
    cases.push(Case {
        name: "an unknown session query field",
        method: "GET",
        path: "/sessions/abc?lmit=5".into(),
        content_type: None,
        body: Vec::new(),
        status: 422,
        code: "invalid_request",
    });
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_a_4xx_json_error_and_store_nothing() {
    let (app, fake) = spawn_full(
        vec![Scripted::text("never used")],
        &[("AGENT_API__MAX_MESSAGE_CHARS", "1000")],
    )
    .await;
    let cases = cases();
    assert!(cases.len() >= 25);
    for case in &cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = app
            .client
            .request(method, format!("{}{}", app.address, case.path))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers().contains_key("x-request-id"),
            "{}",
            case.name
        );
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("{}: the body is not JSON: {error}", case.name));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(error_code(&body), case.code, "{}", case.name);
    }
    assert!(fake.requests().await.is_empty(), "no turn ran");
    for session in ["abc", "a", "séance"] {
        if let Ok(id) = agent_core::SessionId::parse(session) {
            assert_eq!(
                app.backends.conversations.session(&id).await.unwrap(),
                None,
                "{session} was stored"
            );
        }
    }
}
