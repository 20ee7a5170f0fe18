//! Request context: the `x-request-id` (accepted from the client or generated), a tracing span
//! carrying it around the whole request, and one completion line per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Paths that probes and scrapers hit every few seconds; their completion lines are debug-level.
const QUIET_PATHS: &[&str] = &["/health", "/ready", "/startup", "/metrics"];

/// Wraps every request: one request id, one span, one completion line, the id echoed back.
pub(crate) async fn request_context(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_acceptable_request_id(value))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let quiet = QUIET_PATHS.contains(&request.path());
    // Probe requests log nothing at info, so their span is debug-level: with the default filter
    // it costs nothing, and with RUST_LOG=debug their lines carry the request id too.
    let span = if quiet {
        tracing::debug_span!("request", request_id = %request_id, method = %request.method(), path = %request.path())
    } else {
        tracing::info_span!("request", request_id = %request_id, method = %request.method(), path = %request.path())
    };
    let method = request.method().to_string();
    let started = Instant::now();
    let in_flight = crate::metrics::InFlight::start();
    let mut response = next.call(request).instrument(span.clone()).await?;
    drop(in_flight);
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    crate::metrics::record_request(route, &method, response.status().as_u16(), started);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let _entered = span.enter();
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if quiet {
        tracing::debug!(status, latency_ms, "request completed");
    } else {
        tracing::info!(status, latency_ms, "request completed");
    }
    Ok(response)
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
    use super::is_acceptable_request_id;

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
}
