//! CORS for browser clients: off by default; listed origins get their preflights answered and
//! their answers (refusals included) readable; other origins' preflights are refused.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, builder, error_code, spawn};

const APP: &str = "https://app.example.com";

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}/agent", app.address))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

async fn post_from(app: &TestApp, origin: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/agent", app.address))
        .header("origin", origin)
        .json(&json!({ "message": "hi" }));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_origins_are_answered_and_others_refused() {
    let app = spawn(builder(&[
        ("AGENT_API__CORS_ALLOWED_ORIGINS", APP),
        ("AGENT_API_KEYS", "alice:alice-0123456789"),
    ]))
    .await;
    let allowed = preflight(&app, APP).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(!headers.contains_key("access-control-allow-credentials"));

    let refused = preflight(&app, "https://evil.example").await;
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_eq!(
        error_code(&refused.json::<Value>().await.unwrap()),
        "origin_not_allowed"
    );

    let answered = post_from(&app, APP, Some("alice-0123456789")).await;
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["access-control-allow-origin"], APP);
    let exposed = answered.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    // A refusal is readable by the page too.
    let unauthorized = post_from(&app, APP, None).await;
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["access-control-allow-origin"], APP);
    // An unlisted origin's request is answered without CORS headers: the browser stops it.
    let other = post_from(&app, "https://evil.example", Some("alice-0123456789")).await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default_and_any_origin_is_a_wildcard_without_credentials() {
    let off = spawn(builder(&[])).await;
    let refused = preflight(&off, APP).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        error_code(&refused.json::<Value>().await.unwrap()),
        "origin_not_allowed"
    );
    let plain = post_from(&off, APP, None).await;
    assert_eq!(plain.status(), 200);
    assert!(!plain.headers().contains_key("access-control-allow-origin"));

    let any = spawn(builder(&[("AGENT_API__CORS_ALLOWED_ORIGINS", "*")])).await;
    let answered = preflight(&any, "https://anything.example").await;
    assert!(answered.status().is_success());
    assert_eq!(answered.headers()["access-control-allow-origin"], "*");
    assert!(
        !answered
            .headers()
            .contains_key("access-control-allow-credentials")
    );
}
