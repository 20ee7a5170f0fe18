//! `/openapi.json` documents every route the server registers.

use serde_json::Value;

use crate::helpers::spawn_app;

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
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let registered = registered_paths();
    assert!(registered.len() >= 8, "{registered:?}");
    for path in &registered {
        assert!(
            paths.contains_key(path),
            "{path} is registered but not in /openapi.json"
        );
    }
    let documented: Vec<(&str, &str)> = vec![
        ("/agent", "post"),
        ("/agent/stream", "post"),
        ("/sessions/{id}", "get"),
        ("/sessions/{id}", "delete"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/startup", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in documented {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    let agent_responses = paths["/agent"]["post"]["responses"].as_object().unwrap();
    for status in [
        "200", "400", "401", "409", "413", "415", "422", "429", "502", "503", "504",
    ] {
        assert!(
            agent_responses.contains_key(status),
            "POST /agent does not document {status}"
        );
    }
}
