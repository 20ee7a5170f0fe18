//! The route table. Handlers are thin: extract, call, map errors.

mod actions;
pub(crate) mod agent;
mod agents;
mod docs;
pub(crate) mod openai;
pub(crate) mod pages;
pub(crate) mod pipeline;
mod probes;
mod runs;
mod sessions;
mod tools;
pub(crate) mod turn_stream;
mod usage;

use actix_web::http::Method;
use actix_web::{HttpRequest, web};

use crate::error::{ApiError, ErrorCode};

pub(crate) use docs::{Document, document};

/// Registers every route; `/v1/*` bodies are bounded by `openai_body_limit`.
pub(crate) fn configure(config: &mut web::ServiceConfig, openai_body_limit: usize) {
    // A query string that does not fit its handler is an invalid field, as in a body: 422.
    config.app_data(web::QueryConfig::default().error_handler(|error, _| {
        ApiError::invalid(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            format!("query: {error}"),
        )
        .into()
    }));
    // Probes first: they are the most frequent requests, and routes are tried in order (a
    // pattern with a parameter runs a regex on every path it is tried against).
    config
        .service(get_only("/health", probes::health))
        .service(get_only("/ready", probes::ready))
        .service(get_only("/startup", probes::startup))
        .service(get_only("/metrics", docs::metrics))
        .service(post_only("/agent", agent::post_agent))
        .service(post_only("/agent/stream", agent::post_agent_stream))
        .service(get_only("/openapi.json", docs::openapi_json))
        .service(get_only("/sessions", sessions::list_sessions))
        .service(get_only("/usage", usage::get_usage))
        .service(get_only("/tools", tools::list_tools))
        .service(get_only("/agents", agents::list_agents))
        .service(get_only("/agents/{id}", agents::get_agent))
        .service(get_only("/runs/{id}", runs::get_run))
        .service(get_only("/runs/{id}/events", runs::run_events))
        .service(post_only("/runs/{id}/cancel", runs::cancel_run))
        .service(post_only("/runs/{id}/actions", actions::post_run_actions))
        .service(get_only("/sessions/{id}/runs", runs::list_session_runs))
        .service(get_only("/v1/models", openai::list_models))
        .service(get_only("/v1/models/{model}", openai::get_model))
        .service(
            post_only("/v1/chat/completions", openai::post_chat_completions)
                .app_data(web::PayloadConfig::new(openai_body_limit)),
        )
        .service(
            post_only("/v1/responses", openai::post_responses)
                .app_data(web::PayloadConfig::new(openai_body_limit)),
        )
        .service(get_only(
            "/v1/responses/{response_id}",
            openai::get_response,
        ))
        .service(post_only(
            "/v1/responses/{response_id}/cancel",
            openai::cancel_response,
        ))
        .service(
            web::resource("/sessions/{id}")
                .route(web::get().to(sessions::get_session))
                .route(web::delete().to(sessions::delete_session))
                .default_service(web::to(|request: HttpRequest| async move {
                    Err::<&str, _>(method_not_allowed(request.method(), "GET, DELETE"))
                })),
        );
}

/// A resource answering POST with `handler` and any other method with a JSON 405 and `Allow`.
fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|request: HttpRequest| async move {
            Err::<&str, _>(method_not_allowed(request.method(), "POST"))
        }))
}

/// A resource answering GET with `handler` and any other method with a JSON 405 and `Allow`.
fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(|request: HttpRequest| async move {
            Err::<&str, _>(method_not_allowed(request.method(), "GET"))
        }))
}

fn method_not_allowed(method: &Method, allow: &'static str) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.clone(),
        allow,
    }
}

/// The answer for any path without a route.
pub(crate) async fn not_found(request: HttpRequest) -> Result<&'static str, ApiError> {
    Err(ApiError::NotFound {
        method: request.method().clone(),
        path: request.path().to_owned(),
    })
}
