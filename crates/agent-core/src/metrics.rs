//! The metrics agent-core records, as handles registered with the recorder its embedder passes
//! in. There is no process-wide recorder: each application (and each test) counts its own.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};

use crate::error::ModelError;

pub(crate) const METADATA: Metadata<'static> =
    Metadata::new("agent_core", Level::INFO, Some(module_path!()));

/// Registers `name{labels}` with `recorder`; shared with the server's own metrics.
pub fn counter(
    recorder: &dyn Recorder,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
) -> Counter {
    recorder.register_counter(&key(name, labels), &METADATA)
}

/// Registers the gauge `name{labels}` with `recorder`.
pub fn gauge(
    recorder: &dyn Recorder,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
) -> Gauge {
    recorder.register_gauge(&key(name, labels), &METADATA)
}

/// Registers the histogram `name{labels}` with `recorder`.
pub fn histogram(
    recorder: &dyn Recorder,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
) -> Histogram {
    recorder.register_histogram(&key(name, labels), &METADATA)
}

/// The key `name{labels}` with label values known only at run time (MCP servers and tools).
pub(crate) fn owned(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(label, value)| Label::from_static_parts(label, value))
        .collect();
    Key::from_parts(name, labels)
}

/// The model client's metrics: call latency by mode, errors by kind, retries.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    complete_duration: Histogram,
    stream_duration: Histogram,
    /// In the order of [`ERROR_KINDS`].
    errors: [Counter; ERROR_KINDS.len()],
    pub(crate) retries: Counter,
}

/// The `kind` label of `model_call_errors_total`, one per [`ModelError`] variant.
const ERROR_KINDS: [&str; 6] = [
    "rate_limited",
    "upstream",
    "timeout",
    "authentication",
    "unusable",
    "rejected",
];

/// How a model call was made: the `mode` label of `model_call_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallMode {
    Complete,
    Stream,
}

impl ModelMetrics {
    /// Every label set registered up front: recording allocates nothing.
    pub fn register(recorder: &dyn Recorder) -> Self {
        Self {
            complete_duration: histogram(
                recorder,
                "model_call_duration_seconds",
                &[("mode", "complete")],
            ),
            stream_duration: histogram(
                recorder,
                "model_call_duration_seconds",
                &[("mode", "stream")],
            ),
            errors: ERROR_KINDS
                .map(|kind| counter(recorder, "model_call_errors_total", &[("kind", kind)])),
            retries: counter(recorder, "model_call_retries_total", &[]),
        }
    }

    /// Metrics that record nothing (benchmarks, embedders without a recorder).
    pub fn disabled() -> Self {
        Self {
            complete_duration: Histogram::noop(),
            stream_duration: Histogram::noop(),
            errors: [const { Counter::noop() }; ERROR_KINDS.len()],
            retries: Counter::noop(),
        }
    }

    /// Records one call: its latency (for a stream, until it starts) and its failure, if any.
    pub(crate) fn record_call(
        &self,
        mode: CallMode,
        started: std::time::Instant,
        error: Option<&ModelError>,
    ) {
        let duration = match mode {
            CallMode::Complete => &self.complete_duration,
            CallMode::Stream => &self.stream_duration,
        };
        duration.record(started.elapsed().as_secs_f64());
        if let Some(error) = error {
            let index = match error {
                ModelError::RateLimited { .. } => 0,
                ModelError::Upstream { .. } => 1,
                ModelError::Timeout(_) => 2,
                ModelError::Authentication(_) => 3,
                ModelError::Unusable(_) => 4,
                ModelError::Rejected(_)
                | ModelError::ContextLength(_)
                | ModelError::FormatRefused(_) => 5,
            };
            self.errors[index].increment(1);
        }
    }
}
