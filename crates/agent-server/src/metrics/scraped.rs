//! The metrics read when `/metrics` is scraped: the span exporter's, admission's and the
//! background work's figures, kept elsewhere as plain counts and copied into their series then.

use std::sync::Arc;

use agent_core::metrics::{counter, gauge};
use agent_storage::BackgroundWork;
use metrics::{Counter, Gauge, Recorder};

use crate::admission::Admission;

/// The span exporter's figures (process-wide), read when `/metrics` is scraped.
pub(super) struct TraceMetrics {
    exported: Counter,
    dropped_full: Counter,
    dropped_failed: Counter,
}

impl TraceMetrics {
    pub(super) fn register(recorder: &dyn Recorder) -> Self {
        let dropped = |reason| {
            counter(
                recorder,
                "agent_trace_spans_dropped_total",
                &[("reason", reason)],
            )
        };
        Self {
            exported: counter(recorder, "agent_trace_spans_exported_total", &[]),
            dropped_full: dropped("queue_full"),
            dropped_failed: dropped("export_failed"),
        }
    }

    pub(super) fn refresh(&self) {
        let (exported, dropped_full, dropped_failed) = crate::telemetry::export_counts();
        self.exported.absolute(exported);
        self.dropped_full.absolute(dropped_full);
        self.dropped_failed.absolute(dropped_failed);
    }
}

/// Connections and turns against their limits, read when `/metrics` is scraped.
pub(super) struct AdmissionMetrics {
    admission: Arc<Admission>,
    connections: Gauge,
    turns: Gauge,
    refused_connections: Counter,
    refused_turns: Counter,
}

impl AdmissionMetrics {
    pub(super) fn register(recorder: &dyn Recorder, admission: Arc<Admission>) -> Self {
        let limits = *admission.limits();
        gauge(recorder, "agent_connections_limit", &[]).set(limits.connections as f64);
        gauge(recorder, "agent_turns_in_flight_limit", &[]).set(limits.turns as f64);
        let refused = |reason| {
            counter(
                recorder,
                "agent_overload_refusals_total",
                &[("reason", reason)],
            )
        };
        Self {
            connections: gauge(recorder, "agent_connections_open", &[]),
            turns: gauge(recorder, "agent_turns_in_flight", &[]),
            refused_connections: refused("connections"),
            refused_turns: refused("turns"),
            admission,
        }
    }

    pub(super) fn refresh(&self) {
        let (connections, turns, refused_connections, refused_turns) = self.admission.figures();
        self.connections.set(connections as f64);
        self.turns.set(turns as f64);
        self.refused_connections.absolute(refused_connections);
        self.refused_turns.absolute(refused_turns);
    }
}

/// The process's background work, read when `/metrics` is scraped.
pub(super) struct BackgroundMetrics {
    work: Arc<BackgroundWork>,
    pending: Gauge,
    started: Counter,
    dropped: Counter,
}

impl BackgroundMetrics {
    pub(super) fn register(recorder: &dyn Recorder, work: Arc<BackgroundWork>) -> Self {
        let limit = gauge(recorder, "agent_background_tasks_limit", &[]);
        limit.set(work.limit() as f64);
        Self {
            work,
            pending: gauge(recorder, "agent_background_tasks", &[]),
            started: counter(recorder, "agent_background_tasks_started_total", &[]),
            dropped: counter(recorder, "agent_background_tasks_dropped_total", &[]),
        }
    }

    pub(super) fn refresh(&self) {
        self.pending.set(self.work.pending() as f64);
        self.started.absolute(self.work.started());
        self.dropped.absolute(self.work.dropped());
    }
}
