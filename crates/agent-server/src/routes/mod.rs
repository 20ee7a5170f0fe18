//! The route table. Handlers are thin: extract, call, map errors.

mod probes;

use actix_web::http::Method;
use actix_web::{HttpRequest, web};

use crate::error::ApiError;

/// Registers every route.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(get_only("/health", probes::health))
        .service(get_only("/ready", probes::ready))
        .service(get_only("/startup", probes::startup));
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
