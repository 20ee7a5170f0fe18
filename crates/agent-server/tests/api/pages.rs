//! The browser pages: `GET /docs` (Swagger UI served from the binary) and `GET /playground` (the
//! chat page), on by default in the dev profile and off in production, each switchable; strict
//! headers, `ETag` revalidation, gzip assets; the pages (and `/openapi.json` with the docs) open
//! without a key while on, nothing else.

use fake_openai::{FakeOpenAi, Scripted};
use reqwest::StatusCode;

use crate::helpers::{TestApp, builder, spawn, spawn_replicas};

const KEY: &str = "docs-key-0123456789";

/// Each page and its own files, as the page links them (relative to the page).
const PAGES: [(&str, &[&str]); 2] = [
    (
        "docs",
        &[
            "docs/swagger-ui.css",
            "docs/swagger-ui-bundle.js",
            "docs/docs.js",
        ],
    ),
    (
        "playground",
        &[
            "playground/icon.svg",
            "playground/playground.css",
            "playground/playground.js",
        ],
    ),
];

async fn status_of(app: &TestApp, path: &str) -> StatusCode {
    app.get(path).await.status()
}

#[tokio::test]
async fn the_pages_are_served_from_the_binary_with_strict_headers() {
    let app = spawn(builder(&[("AGENT_API_KEYS", KEY)])).await;
    for (page, assets) in PAGES {
        let answer = app.get(&format!("/{page}")).await;
        assert_eq!(answer.status(), 200, "{page}");
        let headers = answer.headers().clone();
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
        assert_eq!(directive("form-action"), "form-action 'none'");
        assert!(!policy.contains("http"), "no other origin: {policy}");
        if page == "playground" {
            // The playground sets no inline style either.
            assert_eq!(directive("style-src"), "style-src 'self'");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-cache");
        let html = answer.text().await.unwrap();
        // Every script and style the page loads is one of its own files, and none is inline.
        let mut linked: Vec<&str> = html
            .split(['"', '\''])
            .filter(|piece| piece.starts_with(&format!("{page}/")))
            .collect();
        linked.sort_unstable();
        let mut expected = assets.to_vec();
        expected.sort_unstable();
        assert_eq!(linked, expected, "{html}");
        assert!(
            !html.contains("<script>") && !html.contains("<style") && !html.contains("style="),
            "{html}"
        );
        for asset in assets {
            let answer = app.get(&format!("/{asset}")).await;
            assert_eq!(answer.status(), 200, "{asset}");
            assert!(answer.headers()["etag"].to_str().unwrap().starts_with('"'));
            assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
            assert_eq!(
                answer.headers()["content-security-policy"],
                headers["content-security-policy"]
            );
            let expected = match asset.rsplit('.').next() {
                Some("css") => "text/css",
                Some("svg") => "image/svg+xml",
                _ => "text/javascript",
            };
            assert!(
                answer.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(expected),
                "{asset}"
            );
        }
        assert_eq!(status_of(&app, &format!("/{page}/nothing.js")).await, 404);
        assert_eq!(status_of(&app, &format!("/{page}/index.html")).await, 404);
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
    // `/docs/` leads to the page, and so does `/playground/`.
    let unredirected = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (page, _) in PAGES {
        let slash = unredirected
            .get(format!("{}/{page}/", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(slash.status(), 308);
        assert_eq!(slash.headers()["location"], format!("../{page}").as_str());
    }
    // `/` leads to the playground, temporarily (the setting may change), without a key.
    let root = unredirected
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "playground");
    assert_eq!(root.headers()["x-content-type-options"], "nosniff");
    // The playground's own files are small and sent as they are.
    let script = app.get("/playground/playground.js").await;
    let etag = script.headers()["etag"].to_str().unwrap().to_owned();
    assert!(script.headers().get("content-encoding").is_none());
    let revalidated = app
        .client
        .get(format!("{}/playground/playground.js", app.address))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
}

/// While the pages are on, they and `/openapi.json` need no key (a browser cannot send one to
/// open a page); the API still does.
#[tokio::test]
async fn with_the_pages_on_only_the_pages_and_the_document_are_open() {
    let app = spawn(builder(&[("AGENT_API_KEYS", KEY)])).await;
    for open in [
        "/docs",
        "/docs/docs.js",
        "/openapi.json",
        "/playground",
        "/playground/playground.js",
    ] {
        assert_eq!(status_of(&app, open).await, 200, "{open}");
    }
    for closed in ["/sessions", "/usage", "/tools", "/v1/models"] {
        assert_eq!(status_of(&app, closed).await, 401, "{closed}");
    }
}

/// The dev profile turns the pages on, production off; `AGENT_API__DOCS_PAGE` and
/// `AGENT_API__PLAYGROUND_PAGE` switch each on its own.
#[tokio::test(flavor = "multi_thread")]
async fn the_profile_decides_the_default_and_the_settings_switch_each_page() {
    let off = spawn(builder(&[
        ("AGENT_API_KEYS", KEY),
        ("AGENT_API__DOCS_PAGE", "false"),
        ("AGENT_API__PLAYGROUND_PAGE", "false"),
    ]))
    .await;
    // Off, the paths are like any other: a key first, then nothing there.
    for path in [
        "/docs",
        "/docs/docs.js",
        "/playground",
        "/playground/playground.js",
    ] {
        assert_eq!(status_of(&off, path).await, 401, "{path}");
        assert_eq!(keyed_status(&off, path).await, 404, "{path}");
    }
    assert_eq!(status_of(&off, "/openapi.json").await, 401, "keyed again");
    assert_eq!(
        status_of(&off, "/").await,
        401,
        "no redirect to a page that is off"
    );
    assert_eq!(keyed_status(&off, "/").await, 404);

    let fake = FakeOpenAi::repeating(Scripted::text("hi")).await;
    let defaults = production(&fake, &[("AGENT_API_KEYS", KEY)]).await;
    assert_eq!(keyed_status(&defaults, "/docs").await, 404);
    assert_eq!(keyed_status(&defaults, "/playground").await, 404);
    assert_eq!(status_of(&defaults, "/openapi.json").await, 401);
    let switched_on = production_with_docs(&fake).await;
    assert_eq!(status_of(&switched_on, "/docs").await, 200);
    assert_eq!(status_of(&switched_on, "/openapi.json").await, 200);
    assert_eq!(status_of(&switched_on, "/sessions").await, 401);
    assert_eq!(keyed_status(&switched_on, "/playground").await, 404);
    let playground_only = production(
        &fake,
        &[
            ("AGENT_API_KEYS", KEY),
            ("AGENT_API__PLAYGROUND_PAGE", "true"),
        ],
    )
    .await;
    assert_eq!(status_of(&playground_only, "/playground").await, 200);
    assert_eq!(
        status_of(&playground_only, "/").await,
        200,
        "led to the playground"
    );
    assert_eq!(keyed_status(&playground_only, "/docs").await, 404);
    // The document is the docs page's, not the playground's: keyed as before.
    assert_eq!(status_of(&playground_only, "/openapi.json").await, 401);
    assert_eq!(status_of(&playground_only, "/sessions").await, 401);
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
