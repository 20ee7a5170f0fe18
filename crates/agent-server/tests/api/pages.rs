//! The browser pages: `GET /docs` (Swagger UI served from the binary) on by default in the dev
//! profile and off in production, each switchable; strict headers, `ETag` revalidation, gzip
//! assets; the page and `/openapi.json` open without a key while it is on, nothing else.

use fake_openai::{FakeOpenAi, Scripted};
use reqwest::StatusCode;

use crate::helpers::{TestApp, builder, spawn, spawn_replicas};

const KEY: &str = "docs-key-0123456789";

/// The page's own files, as the page links them (relative to `/docs`).
const ASSETS: [&str; 3] = [
    "docs/swagger-ui.css",
    "docs/swagger-ui-bundle.js",
    "docs/docs.js",
];

async fn status_of(app: &TestApp, path: &str) -> StatusCode {
    app.get(path).await.status()
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary_with_strict_headers() {
    let app = spawn(builder(&[("AGENT_API_KEYS", KEY)])).await;
    let page = app.get("/docs").await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    let directive = |name: &str| {
        policy
            .split(';')
            .map(str::trim)
            .find(|directive| directive.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {policy}"))
            .to_owned()
    };
    assert_eq!(directive("default-src"), "default-src 'none'");
    assert_eq!(
        directive("script-src"),
        "script-src 'self'",
        "no inline script"
    );
    assert_eq!(directive("connect-src"), "connect-src 'self'");
    assert_eq!(directive("frame-ancestors"), "frame-ancestors 'none'");
    assert!(!policy.contains("http"), "no other origin: {policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    // Every script and style the page loads is one of its own files, and none is inline.
    let linked: Vec<&str> = html
        .split(['"', '\''])
        .filter(|piece| piece.starts_with("docs/"))
        .collect();
    assert_eq!(linked, ASSETS, "{html}");
    assert!(
        !html.contains("<script>") && !html.contains("<style"),
        "{html}"
    );
    for asset in ASSETS {
        let answer = app.get(&format!("/{asset}")).await;
        assert_eq!(answer.status(), 200, "{asset}");
        assert!(answer.headers()["etag"].to_str().unwrap().starts_with('"'));
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
        let expected = if asset.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(expected),
            "{asset}"
        );
    }
    // The initializer reads this server's document and keeps the key out of storage and URLs.
    let initializer = app.get("/docs/docs.js").await.text().await.unwrap();
    for setting in [
        "url: \"openapi.json\"",
        "persistAuthorization: false",
        "validatorUrl: null",
    ] {
        assert!(initializer.contains(setting), "{setting}");
    }
    assert_eq!(status_of(&app, "/docs/nothing.js").await, 404);
    assert_eq!(status_of(&app, "/docs/index.html").await, 404);
}

#[tokio::test]
async fn assets_revalidate_with_their_etag_and_come_gzip_compressed() {
    let app = spawn(builder(&[])).await;
    let url = format!("{}/docs/swagger-ui-bundle.js", app.address);
    let first = app
        .client
        .get(&url)
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-encoding"], "gzip");
    assert_eq!(first.headers()["vary"], "Accept-Encoding");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body = first.bytes().await.unwrap();
    assert_eq!(&body[..2], [0x1f, 0x8b], "gzip bytes");
    assert!(body.len() > 100_000, "the whole bundle: {}", body.len());
    let again = app
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    let stale = app
        .client
        .get(&url)
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    // A client that refuses gzip is told so rather than sent bytes it cannot read.
    for refusing in ["identity", "gzip;q=0, identity"] {
        let refused = app
            .client
            .get(&url)
            .header("accept-encoding", refusing)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 406, "{refusing}");
    }
    // The page itself and the initializer are plain.
    let page = app
        .client
        .get(format!("{}/docs", app.address))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("content-encoding").is_none());
    // `/docs/` leads to the page.
    let slash = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(slash.status(), 308);
    assert_eq!(slash.headers()["location"], "../docs");
}

/// While the page is on, it and `/openapi.json` need no key (a browser cannot send one to open
/// a page); the API still does.
#[tokio::test]
async fn with_the_page_on_only_the_page_and_the_document_are_open() {
    let app = spawn(builder(&[("AGENT_API_KEYS", KEY)])).await;
    for open in ["/docs", "/docs/docs.js", "/openapi.json"] {
        assert_eq!(status_of(&app, open).await, 200, "{open}");
    }
    for closed in ["/sessions", "/usage", "/tools", "/v1/models"] {
        assert_eq!(status_of(&app, closed).await, 401, "{closed}");
    }
}

/// The dev profile turns the page on, production off; `AGENT_API__DOCS_PAGE` switches either.
#[tokio::test(flavor = "multi_thread")]
async fn the_profile_decides_the_default_and_the_setting_switches_it() {
    let off = spawn(builder(&[
        ("AGENT_API_KEYS", KEY),
        ("AGENT_API__DOCS_PAGE", "false"),
    ]))
    .await;
    // Off, the paths are like any other: a key first, then nothing there.
    for path in ["/docs", "/docs/docs.js"] {
        assert_eq!(status_of(&off, path).await, 401, "{path}");
        assert_eq!(keyed_status(&off, path).await, 404, "{path}");
    }
    assert_eq!(status_of(&off, "/openapi.json").await, 401, "keyed again");

    let fake = FakeOpenAi::repeating(Scripted::text("hi")).await;
    let production = production(&fake, &[("AGENT_API_KEYS", KEY)]).await;
    assert_eq!(keyed_status(&production, "/docs").await, 404);
    assert_eq!(status_of(&production, "/openapi.json").await, 401);
    let switched_on = production_with_docs(&fake).await;
    assert_eq!(status_of(&switched_on, "/docs").await, 200);
    assert_eq!(status_of(&switched_on, "/openapi.json").await, 200);
    assert_eq!(status_of(&switched_on, "/sessions").await, 401);
}

async fn keyed_status(app: &TestApp, path: &str) -> StatusCode {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status()
}

async fn production(fake: &FakeOpenAi, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("AGENT_PROFILE", "production"),
        ("OPENAI_API_KEY", "sk-test"),
    ];
    vars.extend_from_slice(extra);
    spawn_replicas(fake, &vars, 1).await.remove(0)
}

async fn production_with_docs(fake: &FakeOpenAi) -> TestApp {
    production(
        fake,
        &[("AGENT_API_KEYS", KEY), ("AGENT_API__DOCS_PAGE", "true")],
    )
    .await
}
