//! The browser pages, served from files embedded in the binary: `GET /docs`, interactive API
//! documentation (Swagger UI, vendored under `assets/swagger-ui`) of `/openapi.json`, and
//! `GET /playground`, a chat page (`assets/playground`: plain HTML, CSS and script, no build
//! step). Every answer carries strict headers (a Content-Security-Policy with no inline script
//! and no other origin, `nosniff`, no framing, no referrer) and an `ETag`, revalidated on each
//! use. Each is off unless `api.docs_page` / `api.playground_page` (on by default in the `dev`
//! profile); its paths are then open without a key (see `access`), and the calls the page makes
//! carry the key the person enters in it.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use agent_config::ApiSettings;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One page: its path, its policy, and its files (`index.html` is the page itself, the others
/// are served under `<path>/`).
struct Page {
    path: &'static str,
    policy: &'static str,
    assets: &'static [(&'static str, Asset)],
    /// The strong `ETag` of each file (of its bytes as sent), computed at first use.
    tags: LazyLock<Vec<String>>,
}

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    /// Stored gzip-compressed (the vendored bundles).
    gzip: bool,
}

const HTML: &str = "text/html; charset=utf-8";
const SCRIPT: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";

/// Swagger UI. Scripts and styles from this origin only (it sets inline style attributes, hence
/// `'unsafe-inline'` for styles, never for scripts), data: images (its icons), API calls to this
/// origin only.
static DOCS: Page = Page {
    path: "/docs",
    policy: "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
    assets: DOCS_ASSETS,
    tags: LazyLock::new(|| tags(DOCS_ASSETS)),
};

const DOCS_ASSETS: &[(&str, Asset)] = &[
    (
        "index.html",
        Asset {
            content_type: HTML,
            body: include_bytes!("../../assets/docs/index.html"),
            gzip: false,
        },
    ),
    (
        "docs.js",
        Asset {
            content_type: SCRIPT,
            body: include_bytes!("../../assets/docs/docs.js"),
            gzip: false,
        },
    ),
    (
        "swagger-ui-bundle.js",
        Asset {
            content_type: SCRIPT,
            body: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js.gz"),
            gzip: true,
        },
    ),
    (
        "swagger-ui.css",
        Asset {
            content_type: STYLE,
            body: include_bytes!("../../assets/swagger-ui/swagger-ui.css.gz"),
            gzip: true,
        },
    ),
];

/// The chat playground: everything from this origin, nothing inline at all.
static PLAYGROUND: Page = Page {
    path: "/playground",
    policy: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    assets: PLAYGROUND_ASSETS,
    tags: LazyLock::new(|| tags(PLAYGROUND_ASSETS)),
};

const PLAYGROUND_ASSETS: &[(&str, Asset)] = &[
    (
        "index.html",
        Asset {
            content_type: HTML,
            body: include_bytes!("../../assets/playground/index.html"),
            gzip: false,
        },
    ),
    (
        "playground.js",
        Asset {
            content_type: SCRIPT,
            body: include_bytes!("../../assets/playground/playground.js"),
            gzip: false,
        },
    ),
    (
        "playground.css",
        Asset {
            content_type: STYLE,
            body: include_bytes!("../../assets/playground/playground.css"),
            gzip: false,
        },
    ),
    (
        "icon.svg",
        Asset {
            content_type: "image/svg+xml",
            body: include_bytes!("../../assets/playground/icon.svg"),
            gzip: false,
        },
    ),
];

/// Registers the pages the settings turn on; with the playground on, `GET /` leads to it (a
/// temporary redirect: the setting may change).
pub(crate) fn configure(config: &mut web::ServiceConfig, api: &ApiSettings) {
    for (on, page) in [(api.docs_page, &DOCS), (api.playground_page, &PLAYGROUND)] {
        if on {
            page.register(config);
        }
    }
    if api.playground_page {
        config.service(super::get_only("/", || async {
            PLAYGROUND
                .headers(HttpResponse::TemporaryRedirect())
                .insert_header((header::LOCATION, "playground"))
                .finish()
        }));
    }
}

/// Whether `path` is the docs page or one of its files.
pub(crate) fn is_docs_path(path: &str) -> bool {
    DOCS.holds(path)
}

/// Whether `path` is the playground, one of its files, or `/` (which leads to it).
pub(crate) fn is_playground_path(path: &str) -> bool {
    path == "/" || PLAYGROUND.holds(path)
}

impl Page {
    fn holds(&self, path: &str) -> bool {
        path.strip_prefix(self.path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn register(&'static self, config: &mut web::ServiceConfig) {
        config
            .service(super::get_only(
                self.path,
                move |request: HttpRequest| async move {
                    self.serve(&request, "index.html")
                        .unwrap_or_else(|| HttpResponse::NotFound().finish())
                },
            ))
            .service(super::get_only(&format!("{}/", self.path), move || {
                // `/docs/` → `/docs` (relative, so it holds behind a proxy's path prefix too):
                // the page's own links are relative to it.
                let name = self.path.trim_start_matches('/');
                async move {
                    self.headers(HttpResponse::PermanentRedirect())
                        .insert_header((header::LOCATION, format!("../{name}")))
                        .finish()
                }
            }))
            .service(super::get_only(
                &format!("{}/{{asset}}", self.path),
                move |request: HttpRequest, name: web::Path<String>| async move {
                    // The page is `<path>`, not one of its files.
                    let served = (name.as_str() != "index.html")
                        .then(|| self.serve(&request, &name))
                        .flatten();
                    served.ok_or_else(|| ApiError::NotFound {
                        method: request.method().clone(),
                        path: request.path().to_owned(),
                    })
                },
            ));
    }

    /// The asset `name` (None: no such asset), or `304` when the client's copy is current; a
    /// compressed one only to a client that accepts gzip (any client that sends no
    /// `Accept-Encoding` does, per RFC 9110).
    fn serve(&self, request: &HttpRequest, name: &str) -> Option<HttpResponse> {
        let (asset, etag) = self.find(name)?;
        let current = request
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == etag || tag.trim() == "*")
            });
        if current {
            return Some(
                self.headers(HttpResponse::NotModified())
                    .insert_header((header::ETAG, etag))
                    .finish(),
            );
        }
        if asset.gzip && !accepts_gzip(request) {
            return Some(
                self.headers(HttpResponse::NotAcceptable())
                    .content_type("text/plain; charset=utf-8")
                    .body("this file is served gzip-compressed: send Accept-Encoding: gzip\n"),
            );
        }
        let mut response = self.headers(HttpResponse::Ok());
        response
            .content_type(asset.content_type)
            .insert_header((header::ETAG, etag));
        if asset.gzip {
            response
                .insert_header((header::CONTENT_ENCODING, "gzip"))
                .insert_header((header::VARY, "Accept-Encoding"));
        }
        Some(response.body(asset.body))
    }

    /// The strict headers of every answer of the page; revalidated with the `ETag` at each use.
    fn headers(
        &self,
        mut response: actix_web::HttpResponseBuilder,
    ) -> actix_web::HttpResponseBuilder {
        response
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(self.policy),
            ))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .insert_header((header::CACHE_CONTROL, "no-cache"));
        response
    }

    /// The file `name` and its `ETag`.
    fn find(&self, name: &str) -> Option<(&'static Asset, &str)> {
        let index = self.assets.iter().position(|(asset, _)| *asset == name)?;
        Some((&self.assets[index].1, self.tags[index].as_str()))
    }
}

/// The strong `ETag` of each file, in order.
fn tags(assets: &[(&str, Asset)]) -> Vec<String> {
    assets
        .iter()
        .map(|(_, asset)| {
            let digest = Sha256::digest(asset.body);
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
        .collect()
}

fn accepts_gzip(request: &HttpRequest) -> bool {
    let Some(accepted) = request.headers().get(header::ACCEPT_ENCODING) else {
        return true;
    };
    accepted.to_str().is_ok_and(|codings| {
        codings.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}
