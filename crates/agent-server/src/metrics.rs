//! Prometheus metrics: the process-wide recorder, and per-request counters, latency histograms
//! and the in-flight gauge, labelled by route pattern (never by raw path).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

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
        handle
    })
}

/// Counts a request in flight until dropped (also when the client goes away).
pub(crate) struct InFlight(metrics::Gauge);

impl InFlight {
    pub(crate) fn start() -> Self {
        thread_local! {
            static GAUGE: metrics::Gauge = metrics::gauge!("http_requests_in_flight");
        }
        let gauge = GAUGE.with(Clone::clone);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// (route pattern, method, status).
type RequestLabels = (String, String, u16);

thread_local! {
    /// Metric handles per label set, so the hot path does not rebuild and hash label sets.
    static REQUEST_METRICS: RefCell<HashMap<RequestLabels, (Counter, Histogram)>> = RefCell::new(HashMap::new());
}

pub(crate) fn record_request(route: String, method: &str, status: u16, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    REQUEST_METRICS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (route, method.to_owned(), status);
        let (counter, histogram) =
            cache
                .entry(key)
                .or_insert_with_key(|(route, method, status)| {
                    let labels = [
                        ("route", route.clone()),
                        ("method", method.clone()),
                        ("status", status.to_string()),
                    ];
                    let counter = metrics::counter!("http_requests_total", &labels);
                    let histogram = metrics::histogram!(
                        "http_request_duration_seconds",
                        "route" => route.clone(),
                        "method" => method.clone()
                    );
                    (counter, histogram)
                });
        counter.increment(1);
        histogram.record(elapsed);
    });
}
