//! The one JSON error shape, and the request id on every response.

use actix_web::HttpResponse;

use crate::helpers::{builder, error_code, spawn, spawn_app};

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = spawn_app().await;
    for path in ["/nope", "/agent/../etc/passwd", "/health/extra", "/%00"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "not_found", "{path}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let app = spawn_app().await;
    for path in ["/health", "/ready", "/startup"] {
        let response = app
            .client
            .delete(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{path}");
        assert_eq!(response.headers()["allow"], "GET");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "method_not_allowed");
    }
}

#[tokio::test]
async fn a_plain_error_response_gets_the_json_shape_and_keeps_its_headers() {
    let app = spawn(builder(&[]).with_routes(|config| {
        config.route(
            "/plain-error",
            actix_web::web::get().to(|| async {
                HttpResponse::TooManyRequests()
                    .insert_header(("retry-after", "7"))
                    .body("slow down")
            }),
        );
    }))
    .await;
    let response = app.get("/plain-error").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");
}

#[tokio::test]
async fn a_valid_request_id_is_echoed_and_others_are_replaced() {
    let app = spawn_app().await;
    let request_id = |value: Option<&str>| {
        let mut request = app.client.get(format!("{}/health", app.address));
        if let Some(value) = value {
            request = request.header("x-request-id", value);
        }
        async move {
            let response = request.send().await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        request_id(Some("client-chosen-id-42")).await,
        "client-chosen-id-42"
    );

    let generated = request_id(None).await;
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_ne!(
        generated,
        request_id(None).await,
        "each request gets its own id"
    );

    let forged = "a".repeat(200);
    let replaced = request_id(Some(&forged)).await;
    assert_ne!(replaced, forged);
    assert_eq!(replaced.len(), 36);
    assert_ne!(
        request_id(Some("has spaces in it")).await,
        "has spaces in it"
    );
}
