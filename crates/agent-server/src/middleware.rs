//! Request context: the `x-request-id` (accepted from the client or generated), a tracing span
//! carrying it around the whole request, access control (`crate::access`), metrics, and one
//! completion line per request.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use actix_web::ResponseError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tracing::Instrument;

use crate::failure_log::{Failure, FailureLog};
use crate::metrics::WorkerMetrics;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Paths that probes and scrapers hit every few seconds; their completion lines are debug-level,
/// and admission control never refuses them.
pub(crate) const QUIET_PATHS: &[&str] = &["/health", "/ready", "/startup", "/metrics"];

/// Wraps every request: one request id, one span, one completion line, the id echoed back.
/// With traces exported and this request sampled, the request runs on the traced subscriber
/// (`crate::telemetry`): its span is also the trace's server span (the HTTP conventions'
/// attributes, an incoming `traceparent` continued) and its log lines carry the trace id; an
/// unsampled request gets the plain span and never meets the exporter.
pub(crate) async fn request_context(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    // Probe paths are their own route label: no pattern lookup for them.
    let quiet = QUIET_PATHS
        .iter()
        .find(|path| **path == request.path())
        .copied();
    let traced = quiet
        .is_none()
        .then(|| crate::telemetry::traced_request(request.headers()))
        .flatten()
        .zip(crate::telemetry::traced_dispatch());
    match traced {
        Some((parent, dispatch)) => {
            let within = within(request, next, quiet, Some(parent));
            crate::telemetry::OnDispatch::new(dispatch.clone(), within).await
        }
        None => within(request, next, quiet, None).await,
    }
}

/// [`request_context`] on the request's subscriber; `traced_from`: the sampled request's parent.
async fn within(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    quiet: Option<&'static str>,
    traced_from: Option<opentelemetry::Context>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| value.to_str().is_ok_and(is_acceptable_request_id))
        .cloned()
        .unwrap_or_else(new_request_id);
    // Probe requests log nothing at info, so their span is debug-level: with the default filter
    // it costs nothing, and with RUST_LOG=debug their lines carry the request id too.
    // Span fields are only evaluated when the span is enabled.
    let traced = traced_from.is_some();
    let span = if quiet.is_some() {
        tracing::debug_span!(target: crate::telemetry::PROBE_TARGET, "request", request_id = request_id.to_str().unwrap_or_default(), method = %request.method(), path = %request.path())
    } else if let Some(parent) = traced_from {
        server_span(&request, &request_id, parent)
    } else {
        tracing::info_span!("request", request_id = request_id.to_str().unwrap_or_default(), method = %request.method(), path = %request.path(), caller = tracing::field::Empty)
    };
    let method = request.method().clone();
    let started = Instant::now();
    let metrics = request.app_data::<Rc<WorkerMetrics>>().cloned();
    let in_flight = metrics.as_ref().map(WorkerMetrics::in_flight);
    // Admission (a connection accepted beyond the served limit gets `503 overloaded` and is
    // closed; the probes and /metrics always answer) and access control run here rather than as
    // middleware of their own: one layer less per request. Their refusals are JSON errors.
    let refused = match quiet {
        None => crate::admission::refusal(&request),
        Some(_) => None,
    };
    let mut response = async {
        let admitted = match refused {
            Some(refusal) => Err((refusal, true)),
            // With CORS on, authorization runs inside the CORS layer (`access::layer`).
            None if crate::access::cors_is_on(&request) => crate::access::admit_preflight(&request)
                .map(|_| ())
                .map_err(|error| (error, false)),
            None => crate::access::admit(&request)
                .await
                .map_err(|error| (error, false)),
        };
        match admitted {
            Ok(()) => next
                .call(request)
                .await
                .map(ServiceResponse::map_into_left_body),
            Err((error, close)) => {
                let mut response = error.error_response();
                if close {
                    response
                        .head_mut()
                        .set_connection_type(ConnectionType::Close);
                }
                Ok(request.into_response(response).map_into_right_body())
            }
        }
    }
    .instrument(span.clone())
    .await?;
    drop(in_flight);
    let status = response.status().as_u16();
    let code = response
        .response()
        .extensions()
        .get::<crate::error::ErrorFacts>()
        .map(|facts| facts.code);
    if let Some(metrics) = metrics {
        match quiet {
            Some(path) => metrics.record_request(path, &method, status, code, started),
            None => {
                let route = response.request().match_pattern();
                let route = route.as_deref().unwrap_or("unmatched");
                metrics.record_request(route, &method, status, code, started);
            }
        }
    }
    if traced {
        record_response(&span, status, code);
    }
    response.headers_mut().insert(REQUEST_ID, request_id);
    let _entered = span.enter();
    if let (Some(failure), Some(log)) = (
        response.response().extensions().get::<Failure>(),
        response.request().app_data::<web::Data<FailureLog>>(),
    ) {
        log.log(failure);
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if quiet.is_some() {
        tracing::debug!(status, latency_ms, "request completed");
    } else {
        tracing::info!(status, latency_ms, "request completed");
    }
    // The OpenAI-compatible routes answer their errors (refusals here included) in OpenAI's shape.
    if response
        .request()
        .path()
        .starts_with(crate::routes::openai::PREFIX)
    {
        Ok(crate::routes::openai::reshape(response))
    } else {
        Ok(response.map_into_left_body())
    }
}

/// A sampled request's span as the trace's server span: the HTTP semantic conventions'
/// attributes, named by method and route, under `parent` (the caller's span, or none).
fn server_span(
    request: &ServiceRequest,
    request_id: &HeaderValue,
    parent: opentelemetry::Context,
) -> tracing::Span {
    let empty = tracing::field::Empty;
    // The route template comes from the application's resource map, before routing: a span's
    // name cannot change once its children exist.
    let route = request.match_pattern();
    let name = match &route {
        Some(route) => format!("{} {route}", request.method()),
        None => request.method().to_string(),
    };
    // The log lines show what the plain span has, and the trace id; the HTTP conventions'
    // attributes go to the exporter alone (each field would be formatted into every line).
    let span = tracing::info_span!(
        target: crate::telemetry::TRACED_TARGET,
        "request",
        request_id = request_id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = %request.path(),
        caller = empty,
        trace_id = empty,
        otel.name = name,
        otel.kind = "server",
    );
    if let Some(trace_id) = crate::telemetry::continue_trace(&span, parent) {
        span.record("trace_id", trace_id);
    }
    let attribute = |key, value| crate::telemetry::set_attribute(&span, key, value);
    attribute("http.request.method", request.method().to_string().into());
    attribute("url.path", request.path().to_owned().into());
    if let Some(route) = route {
        attribute("http.route", route.into());
    }
    if let Some(agent) = request
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
    {
        attribute("user_agent.original", agent.to_owned().into());
    }
    span
}

/// Completes the server span: its status, and for an error its code (a 5xx also sets the
/// span's error status: a client's mistake is not the server's failure).
fn record_response(span: &tracing::Span, status: u16, code: Option<crate::error::ErrorCode>) {
    let attribute = |key, value| crate::telemetry::set_attribute(span, key, value);
    attribute("http.response.status_code", i64::from(status).into());
    if status >= 400 {
        let kind = code.map_or_else(|| status.to_string(), |code| code.to_string());
        if status >= 500 {
            crate::telemetry::set_error(span, kind.clone());
        }
        attribute("error.type", kind.into());
    }
}

/// A random UUID v4 from a per-thread generator seeded by the OS (ids must be unique, not
/// secret), formatted without an intermediate `String`. The hex digits come from a table:
/// `uuid`'s own formatting loop was the largest user-space item of a `/health` request in `perf`
/// (about 2 % of its CPU at the release profile's `opt-level = "s"`).
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    thread_local! {
        static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
    }
    let random: [u8; 16] = RNG.with(|rng| rng.borrow_mut().random());
    let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut text = [0_u8; 36];
    let mut at = 0;
    for (index, byte) in uuid.as_bytes().iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// A client's id is kept if it is short printable ASCII, so it cannot forge log lines.
fn is_acceptable_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/+=".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::{is_acceptable_request_id, new_request_id};

    #[test]
    fn request_ids_are_kept_only_when_short_and_printable() {
        let cases = [
            ("3f2c9a1e-5b7d-4c1a-9e8f-0a1b2c3d4e5f", true),
            ("trace:abc/def+1=2", true),
            ("", false),
            ("has space", false),
            ("line\nbreak", false),
            ("quote\"", false),
            (&"a".repeat(129), false),
            (&"a".repeat(128), true),
        ];
        for (value, expected) in cases {
            assert_eq!(is_acceptable_request_id(value), expected, "{value:?}");
        }
    }

    #[test]
    fn generated_request_ids_are_distinct_uuid_v4s() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| new_request_id().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.hyphenated().to_string(), id);
        }
    }
}
