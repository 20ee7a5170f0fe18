//! Liveness (`/health`), readiness (`/ready`) and startup (`/startup`) probes.

use std::collections::BTreeMap;

use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpResponse, web};
use agent_health::{CheckOutcome, Criticality, Health, NotReadyReason, ReadinessStatus};
use serde::Serialize;

/// Liveness: answers while the process can serve HTTP; touches no dependency.
#[utoipa::path(get, path = "/health", tag = "probes", responses((status = 200, description = "`{\"status\":\"healthy\"}`", body = ProbeStatus)))]
pub(super) async fn health() -> HttpResponse {
    // A constant body: probes hit this every few seconds, from every orchestrator and balancer.
    no_store(&mut HttpResponse::Ok())
        .content_type(actix_web::http::header::ContentType::json())
        .body(r#"{"status":"healthy"}"#)
}

/// Startup: 503 until configuration, migrations and pools are done, then 200 forever.
#[utoipa::path(get, path = "/startup", tag = "probes", responses(
    (status = 200, description = "`{\"status\":\"started\"}`", body = ProbeStatus),
    (status = 503, description = "`{\"status\":\"starting\"}`", body = ProbeStatus),
))]
pub(super) async fn startup(health: web::Data<Health>) -> HttpResponse {
    if health.is_started() {
        no_store(&mut HttpResponse::Ok()).json(serde_json::json!({ "status": "started" }))
    } else {
        no_store(&mut HttpResponse::ServiceUnavailable())
            .json(serde_json::json!({ "status": "starting" }))
    }
}

/// Readiness: every dependency check with its result and latency; 503 when not ready.
#[utoipa::path(get, path = "/ready", tag = "probes", responses(
    (status = 200, description = "Ready or degraded, with every check's status, criticality, latency and error", body = ReadinessBody),
    (status = 503, description = "Not ready: starting, draining, or a critical check failed", body = ReadinessBody),
))]
pub(super) async fn ready(
    health: web::Data<Health>,
    metrics: web::Data<crate::metrics::AppMetrics>,
) -> HttpResponse {
    let readiness = health.readiness().await;
    metrics.record_readiness(&readiness);
    let (mut response, status, reason) = match readiness.status {
        ReadinessStatus::Ready => (HttpResponse::Ok(), "ready", None),
        ReadinessStatus::Degraded => (HttpResponse::Ok(), "degraded", None),
        ReadinessStatus::NotReady(reason) => {
            let reason = match reason {
                NotReadyReason::Starting => "starting",
                NotReadyReason::Draining => "draining",
                NotReadyReason::CheckFailed => "critical_check_failed",
            };
            (
                HttpResponse::ServiceUnavailable(),
                "not ready",
                Some(reason),
            )
        }
    };
    let body = ReadinessBody {
        status,
        reason,
        checks: readiness
            .checks
            .iter()
            .map(|check| (check.name.clone(), check.into()))
            .collect(),
        checked_ms_ago: readiness.checked_at.elapsed().as_millis() as u64,
    };
    no_store(&mut response).json(body)
}

fn no_store(response: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    response.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// The body of `/health` and `/startup`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProbeStatus {
    /// `healthy` (liveness), `started` or `starting` (startup).
    status: String,
}

/// The body of `/ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReadinessBody {
    /// "ready", "degraded" or "not ready".
    status: &'static str,
    /// Why not ready: "starting", "draining" or "critical_check_failed".
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    checks: BTreeMap<String, CheckBody>,
    /// How old the check results are (they are cached briefly).
    checked_ms_ago: u64,
}

/// One readiness check's result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CheckBody {
    /// "up" or "down".
    status: &'static str,
    /// "critical" or "optional".
    criticality: &'static str,
    latency_ms: f64,
    /// Why the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<&CheckOutcome> for CheckBody {
    fn from(outcome: &CheckOutcome) -> Self {
        Self {
            status: if outcome.result.is_ok() { "up" } else { "down" },
            criticality: match outcome.criticality {
                Criticality::Critical => "critical",
                Criticality::Optional => "optional",
            },
            latency_ms: (outcome.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            error: outcome.result.as_ref().err().map(ToString::to_string),
        }
    }
}
