//! Prometheus metrics: the process-wide recorder, and per-request counters, latency histograms
//! and the in-flight gauge, labelled by route pattern (never by raw path).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::http::Method;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder's handle; installed on first use, once per process.
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        // Histograms keep every sample until upkeep folds them into their buckets; without it
        // memory grows with each request until /metrics is scraped (found by `cargo xtask soak`).
        let upkept = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkept.run_upkeep();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the metrics upkeep thread; memory grows until /metrics is scraped");
        }
        handle
    })
}

thread_local! {
    /// The in-flight gauge's handle, per thread: using it in place (no clone) spares two atomic
    /// reference-count updates per request on a line the workers share.
    static IN_FLIGHT: metrics::Gauge = metrics::gauge!("http_requests_in_flight");
}

/// Counts a request in flight until dropped (also when the client goes away).
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> Self {
        IN_FLIGHT.with(|gauge| gauge.increment(1.0));
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.with(|gauge| gauge.decrement(1.0));
    }
}

/// The handles of one route: per (method, status), its counter and latency histogram.
type RouteMetrics = Vec<((Method, u16), (Counter, Histogram))>;

thread_local! {
    /// Metric handles per label set, so the hot path neither rebuilds nor hashes label sets, and
    /// allocates nothing once a route, method and status have been seen.
    static REQUEST_METRICS: RefCell<HashMap<String, RouteMetrics>> = RefCell::new(HashMap::new());
}

pub(crate) fn record_request(route: &str, method: &Method, status: u16, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    REQUEST_METRICS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(route) {
            cache.insert(route.to_owned(), Vec::new());
        }
        let Some(handles) = cache.get_mut(route) else {
            return;
        };
        let index = match handles
            .iter()
            .position(|((known_method, known_status), _)| {
                known_method == method && *known_status == status
            }) {
            Some(index) => index,
            None => {
                let labels = [
                    ("route", route.to_owned()),
                    ("method", method.as_str().to_owned()),
                    ("status", status.to_string()),
                ];
                let counter = metrics::counter!("http_requests_total", &labels);
                let histogram = metrics::histogram!(
                    "http_request_duration_seconds",
                    "route" => route.to_owned(),
                    "method" => method.as_str().to_owned()
                );
                handles.push(((method.clone(), status), (counter, histogram)));
                handles.len() - 1
            }
        };
        let (_, (counter, histogram)) = &handles[index];
        counter.increment(1);
        histogram.record(elapsed);
    });
}
