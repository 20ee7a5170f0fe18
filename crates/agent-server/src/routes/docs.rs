//! `GET /metrics` (Prometheus text format) and `GET /openapi.json` (OpenAPI 3, generated from the
//! handlers' annotations).

use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto::{AgentRequest, AgentResponse, SessionView};
use crate::error::ErrorBody;
use crate::metrics::AppMetrics;

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(metrics: web::Data<AppMetrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3 document")), security(("bearer" = [])))]
pub(crate) async fn openapi_json() -> HttpResponse {
    // The document never changes while the process runs: serialise it once.
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.as_str())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "agent-server", description = "An LLM agent over any OpenAI-compatible model, with durable sessions."),
    paths(
        super::agent::post_agent,
        super::agent::post_agent_stream,
        super::sessions::get_session,
        super::sessions::delete_session,
        super::probes::health,
        super::probes::ready,
        super::probes::startup,
        metrics,
        openapi_json,
    ),
    components(schemas(AgentRequest, AgentResponse, SessionView, ErrorBody)),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
