//! Access control for every route but the probes: bearer API keys (compared in constant time,
//! never logged), each naming its caller, and rate limits per caller, or per client address
//! without keys, counted in the shared rate limiter (Redis across replicas).

use std::sync::Arc;
use std::time::Duration;

use actix_web::ResponseError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use agent_config::Settings;
use agent_storage::{RateDecision, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorCode};

/// Who is calling. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The key's caller name, `key-<digest prefix>` for a key without one, `anonymous` without
    /// keys: what logs see.
    pub(crate) name: String,
    /// What rate limits and idempotency keys are counted by: `caller:<name>` with keys, the
    /// client's address without.
    pub(crate) scope: String,
}

/// The caller of every request when no keys are configured.
pub(crate) const ANONYMOUS: &str = agent_core::SessionId::ANONYMOUS;

/// The name of the caller `admit` recorded for `request` (anonymous for a route it left open).
pub(crate) fn caller_name(request: &actix_web::HttpRequest) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_owned(), |caller| caller.name.clone())
}

/// The caller name of `key`: its own name, or `key-<digest prefix>` for a plain key.
fn key_caller(key: &agent_config::ApiKey) -> String {
    key.caller.clone().unwrap_or_else(|| {
        let digest = Sha256::digest(key.secret.expose_secret().as_bytes());
        format!("key-{}", hex::encode(&digest[..8]))
    })
}

/// Every caller name the configuration allows: the keys' (each once), and `anonymous`.
pub(crate) fn caller_names(settings: &Settings) -> Vec<String> {
    let mut names: Vec<String> = settings.api_keys.iter().map(key_caller).collect();
    names.push(ANONYMOUS.to_owned());
    names.sort();
    names.dedup();
    names
}

impl Caller {
    fn named(name: String) -> Self {
        Self {
            scope: format!("caller:{name}"),
            name,
        }
    }
}

/// The paths served without a key: the probes, `/metrics` unless `api.metrics_require_auth`,
/// while the docs page is on the page, its files and `/openapi.json`, while the playground is on
/// the playground, its files and `/` (a redirect to it). The one rule: access control applies it
/// and `/openapi.json` documents it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenPaths {
    metrics: bool,
    docs: bool,
    playground: bool,
}

impl OpenPaths {
    pub(crate) fn new(api: &agent_config::ApiSettings) -> Self {
        Self {
            metrics: !api.metrics_require_auth,
            docs: api.docs_page,
            playground: api.playground_page,
        }
    }

    pub(crate) fn contains(self, path: &str) -> bool {
        use crate::routes::pages::{is_docs_path, is_playground_path};
        matches!(path, "/health" | "/ready" | "/startup")
            || (self.metrics && path == "/metrics")
            || (self.docs && (path == "/openapi.json" || is_docs_path(path)))
            || (self.playground && is_playground_path(path))
    }
}

#[derive(Debug)]
pub(crate) struct AccessPolicy {
    /// Each key with its caller, computed once.
    keys: Vec<(SecretString, Caller)>,
    open: OpenPaths,
    trust_forwarded_for: bool,
    limiter: Arc<dyn RateLimiter>,
    requests: u32,
    window: Duration,
    cors: Option<agent_config::CorsSettings>,
}

impl AccessPolicy {
    pub(crate) fn new(settings: &Settings, limiter: Arc<dyn RateLimiter>) -> Self {
        Self {
            keys: settings
                .api_keys
                .iter()
                .map(|key| (key.secret.clone(), Caller::named(key_caller(key))))
                .collect(),
            open: OpenPaths::new(&settings.api),
            trust_forwarded_for: settings.api.trust_forwarded_for,
            limiter,
            requests: settings.rate_limit.requests,
            window: settings.rate_limit.window,
            cors: settings.api.cors.clone(),
        }
    }

    fn is_open(&self, path: &str) -> bool {
        self.open.contains(path)
    }

    /// The caller, or `Unauthorized` when keys are configured and none matches.
    fn caller(&self, request: &ServiceRequest) -> Result<Caller, ApiError> {
        if self.keys.is_empty() {
            let info = request.connection_info();
            let address = if self.trust_forwarded_for {
                info.realip_remote_addr()
            } else {
                info.peer_addr()
            };
            // The port changes per connection; the client is the address.
            let address = address.unwrap_or("unknown");
            let host = address
                .parse::<std::net::SocketAddr>()
                .map_or_else(|_| address.to_owned(), |socket| socket.ip().to_string());
            return Ok(Caller {
                name: ANONYMOUS.to_owned(),
                scope: format!("addr:{host}"),
            });
        }
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        // Every key is compared, whatever matches, so timing says nothing about which one did.
        let mut matched: Option<&Caller> = None;
        for (key, caller) in &self.keys {
            if bool::from(key.expose_secret().as_bytes().ct_eq(presented.as_bytes())) {
                matched = Some(caller);
            }
        }
        matched.cloned().ok_or(ApiError::Unauthorized)
    }

    async fn check_rate(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.requests == 0 {
            return Ok(());
        }
        match self
            .limiter
            .check(&caller.scope, self.requests, self.window)
            .await
        {
            Ok(RateDecision::Allowed { .. }) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => Err(ApiError::RateLimited { retry_after }),
            // Fail closed: without the shared counter, limits cannot be enforced.
            Err(error) => Err(ApiError::Unavailable {
                code: ErrorCode::RateLimiterUnavailable,
                message: format!("cannot check rate limits: {error}; retry later"),
                retry_after: Some(Duration::from_secs(1)),
                cause: Some(Box::new(error)),
            }),
        }
    }
}

/// The `Origin` of a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
fn preflight_origin(request: &ServiceRequest) -> Option<&str> {
    if request.method() != actix_web::http::Method::OPTIONS
        || !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| origin.to_str().ok())
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1): some clients send `bearer`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Admits a request: refuses a CORS preflight from an origin that may not call, authenticates
/// anything else and counts it against its caller's rate limit ([`authorize`]). Called by the
/// request middleware, inside the request's span. With CORS on, the middleware calls only
/// [`admit_preflight`] and [`layer`] authorizes inside the CORS layer, so that refusals (401,
/// 429, 503) carry CORS headers a browser can read.
pub(crate) async fn admit(request: &ServiceRequest) -> Result<(), ApiError> {
    if admit_preflight(request)? {
        return Ok(());
    }
    authorize(request).await
}

/// Whether CORS is on (then [`layer`] authorizes, inside the CORS layer).
pub(crate) fn cors_is_on(request: &ServiceRequest) -> bool {
    request
        .app_data::<web::Data<AccessPolicy>>()
        .is_some_and(|policy| policy.cors.is_some())
}

/// A browser's CORS preflight carries no credentials and counts against no rate limit: answers
/// true for one from an allowed origin (the CORS layer answers it), refuses one from any other
/// origin (or any, with CORS off), and answers false for anything that is not a preflight.
pub(crate) fn admit_preflight(request: &ServiceRequest) -> Result<bool, ApiError> {
    let Some(origin) = preflight_origin(request) else {
        return Ok(false);
    };
    let cors = request
        .app_data::<web::Data<AccessPolicy>>()
        .and_then(|policy| policy.cors.as_ref());
    match cors {
        Some(cors) if cors.allows(origin) => Ok(true),
        Some(_) => Err(ApiError::invalid(
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            format!("origin {origin} may not call this API (AGENT_API__CORS_ALLOWED_ORIGINS)"),
        )),
        None => Err(ApiError::invalid(
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            "CORS is off on this server: no browser origin may call it (AGENT_API__CORS_ALLOWED_ORIGINS)",
        )),
    }
}

/// Authenticates a request and counts it against its caller's rate limit, then records the
/// caller for the handlers (and its name in the request's span, so every log line of the request
/// carries it). Probes (and `/metrics` unless configured) are always admitted.
async fn authorize(request: &ServiceRequest) -> Result<(), ApiError> {
    let Some(policy) = request
        .app_data::<web::Data<AccessPolicy>>()
        .filter(|policy| !policy.is_open(request.path()))
    else {
        return Ok(());
    };
    let caller = policy.caller(request)?;
    tracing::Span::current().record("caller", caller.name.as_str());
    policy.check_rate(&caller).await?;
    request.extensions_mut().insert(caller);
    Ok(())
}

/// [`authorize`] as a middleware inside the CORS layer (used only with CORS on).
pub(crate) async fn layer(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    match authorize(&request).await {
        Ok(()) => next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(error) => Ok(request
            .into_response(error.error_response())
            .map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_trimmed() {
        let cases = [
            ("Bearer k1", Some("k1")),
            ("bearer k1", Some("k1")),
            ("BEARER  k1 ", Some("k1")),
            ("Basic k1", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerk1", None),
        ];
        for (value, expected) in cases {
            assert_eq!(bearer_token(value), expected, "{value:?}");
        }
    }
}
