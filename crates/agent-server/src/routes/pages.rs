//! The browser pages, served from files embedded in the binary: `GET /docs`, interactive API
//! documentation (Swagger UI, vendored under `assets/swagger-ui`) of `/openapi.json`. Every answer
//! carries strict headers (a Content-Security-Policy with no inline script and no other origin,
//! `nosniff`, no framing, no referrer) and an `ETag`, revalidated on each use. Off unless
//! `api.docs_page` (on by default in the `dev` profile); its paths are then open without a key
//! (see `access`), and the calls the page makes carry the key the person enters in it.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The policy of every page answer: scripts and styles from this origin only (Swagger UI sets
/// inline style attributes, hence `'unsafe-inline'` for styles, never for scripts), data: images
/// (its icons), API calls to this origin only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    /// Stored gzip-compressed (the vendored bundles).
    gzip: bool,
}

/// The page itself, then the files under `/docs/`, by name.
const ASSETS: &[(&str, Asset)] = &[
    (
        "index.html",
        Asset {
            content_type: "text/html; charset=utf-8",
            body: include_bytes!("../../assets/docs/index.html"),
            gzip: false,
        },
    ),
    (
        "docs.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../../assets/docs/docs.js"),
            gzip: false,
        },
    ),
    (
        "swagger-ui-bundle.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js.gz"),
            gzip: true,
        },
    ),
    (
        "swagger-ui.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../../assets/swagger-ui/swagger-ui.css.gz"),
            gzip: true,
        },
    ),
];

/// Registers the pages that `docs_page` turns on.
pub(crate) fn configure(config: &mut web::ServiceConfig, docs_page: bool) {
    if !docs_page {
        return;
    }
    config
        .service(super::get_only("/docs", docs_page_handler))
        .service(super::get_only("/docs/", to_docs))
        .service(super::get_only("/docs/{asset}", docs_asset));
}

/// Whether `path` is one of the pages (or their assets) that `docs_page` serves.
pub(crate) fn is_docs_path(path: &str) -> bool {
    path == "/docs" || path.starts_with("/docs/")
}

async fn docs_page_handler(request: HttpRequest) -> HttpResponse {
    serve(&request, "index.html").unwrap_or_else(|| HttpResponse::NotFound().finish())
}

/// `/docs/` → `/docs` (relative, so it holds behind a proxy's path prefix too): the page's own
/// links are relative to `/docs`.
async fn to_docs() -> HttpResponse {
    with_page_headers(HttpResponse::PermanentRedirect())
        .insert_header((header::LOCATION, "../docs"))
        .finish()
}

async fn docs_asset(
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // The page is `/docs`, not one of its assets.
    let served = (name.as_str() != "index.html")
        .then(|| serve(&request, &name))
        .flatten();
    served.ok_or_else(|| ApiError::NotFound {
        method: request.method().clone(),
        path: request.path().to_owned(),
    })
}

/// The asset `name` (None: no such asset), or `304` when the client's copy is current; a
/// compressed one only to a client that accepts gzip (any client that sends no
/// `Accept-Encoding` does, per RFC 9110).
fn serve(request: &HttpRequest, name: &str) -> Option<HttpResponse> {
    let (asset, etag) = find(name)?;
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
            with_page_headers(HttpResponse::NotModified())
                .insert_header((header::ETAG, etag))
                .finish(),
        );
    }
    if asset.gzip && !accepts_gzip(request) {
        return Some(
            with_page_headers(HttpResponse::NotAcceptable())
                .content_type("text/plain; charset=utf-8")
                .body("this file is served gzip-compressed: send Accept-Encoding: gzip\n"),
        );
    }
    let mut response = with_page_headers(HttpResponse::Ok());
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

/// The strict headers of every page answer; revalidated with the `ETag` at each use.
fn with_page_headers(
    mut response: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    response
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

/// The asset `name` and its strong `ETag` (of its bytes as sent, computed once).
fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
        ASSETS
            .iter()
            .map(|(_, asset)| {
                let digest = Sha256::digest(asset.body);
                let hex: String = digest[..12]
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                format!("\"{hex}\"")
            })
            .collect()
    });
    let index = ASSETS.iter().position(|(asset, _)| *asset == name)?;
    Some((&ASSETS[index].1, TAGS[index].as_str()))
}
