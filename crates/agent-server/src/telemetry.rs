//! Logs and traces. Logs: `RUST_LOG` filtering, JSON lines in containers, readable text on a
//! terminal. Traces: the `tracing` spans of the request, the turn (agent-core's GenAI spans) and
//! storage, exported over OTLP/HTTP by the OpenTelemetry SDK when an endpoint is configured, with
//! W3C trace context continued from requests and carried on outbound calls (through
//! agent-core's [`agent_core::trace_context`] hook). Export never slows a request: spans wait in
//! a bounded queue for the batch processor's own thread, and what does not fit, or does not
//! reach the collector, is dropped and counted (`agent_trace_spans_dropped_total`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use agent_config::{LogFormat, LogSettings, SamplerRoot, TraceSettings};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use secrecy::ExposeSecret;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where log lines go: standard output for the server (the container log stream), standard
/// error for one-shot commands whose standard output is their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// The target of the probes' request spans: never exported (a scrape every few seconds is not
/// a trace anyone wants).
pub(crate) const PROBE_TARGET: &str = "agent_server::probe";

/// Whether this process exports traces: the request middleware continues incoming trace
/// context and records the HTTP attributes only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What became of the spans handed to the exporter, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ExportCounts {
    /// Spans waiting for export (in the queue or the batch being sent).
    queued: AtomicUsize,
    exported: AtomicU64,
    /// Dropped because the queue was full.
    dropped_full: AtomicU64,
    /// Dropped because their export failed (collector down, refused, timed out).
    dropped_failed: AtomicU64,
}

static COUNTS: ExportCounts = ExportCounts {
    queued: AtomicUsize::new(0),
    exported: AtomicU64::new(0),
    dropped_full: AtomicU64::new(0),
    dropped_failed: AtomicU64::new(0),
};

/// The process's span export figures: exported, dropped for a full queue, dropped for a failed
/// export (process-wide, like the exporter).
pub(crate) fn export_counts() -> (u64, u64, u64) {
    (
        COUNTS.exported.load(Ordering::Relaxed),
        COUNTS.dropped_full.load(Ordering::Relaxed),
        COUNTS.dropped_failed.load(Ordering::Relaxed),
    )
}

/// Whether traces are exported.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How long the spans still queued at shutdown may take to reach the collector, after the
/// drain: a quarter of the drain timeout, at most 2 s (the grace period an orchestrator gives
/// covers the delay, the drain and this).
pub fn flush_window(drain_timeout: Duration) -> Duration {
    (drain_timeout / 4).min(Duration::from_secs(2))
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes the spans still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span ended so far (blocking, up to the export timeout).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Flushes the queued spans and stops the exporter, waiting at most `within`: a dead
    /// collector cannot hold the process past its drain window.
    pub async fn shutdown(self, within: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within)).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "traces were not all flushed at shutdown");
        }
    }
}

/// Installs the global subscriber: the log layer, and with `traces` the OTLP exporter. `RUST_LOG`
/// wins over the logs' default filter: `info`, and with `ENABLE_TRACING=true` also the
/// debug-level spans of the agent's steps and storage operations.
pub fn init(
    log: &LogSettings,
    traces: Option<&TraceSettings>,
    target: LogTarget,
) -> Result<Telemetry, String> {
    let Some(traces) = traces else {
        install(log, target, None);
        return Ok(Telemetry::default());
    };
    let mut headers = HashMap::new();
    for (name, value) in &traces.headers {
        headers.insert(name.clone(), value.expose_secret().to_owned());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces.endpoint.as_str())
        .with_timeout(traces.timeout)
        .with_headers(headers)
        .build()
        .map_err(|error| format!("cannot build the OTLP trace exporter: {error}"))?;
    Ok(init_with_exporter(log, traces, exporter, target))
}

/// [`init`] with the given exporter in place of OTLP's (the tests' in-memory one).
pub fn init_with_exporter<E: SpanExporter + 'static>(
    log: &LogSettings,
    traces: &TraceSettings,
    exporter: E,
    target: LogTarget,
) -> Telemetry {
    let queue = traces.max_queue_size;
    let batch = BatchSpanProcessor::builder(CountingExporter { inner: exporter })
        .with_batch_config(
            BatchConfigBuilder::default()
                // The processor's own queue never fills: the counting one in front bounds it.
                .with_max_queue_size(queue + 1)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(CountingProcessor {
            inner: batch,
            limit: queue,
        })
        .with_sampler(sampler(traces))
        .with_resource(resource(traces))
        .build();
    let tracer = provider.tracer("agent-server");
    let installed = install(log, target, Some(tracer));
    if installed {
        EXPORTING.store(true, Ordering::Relaxed);
        agent_core::trace_context::install(inject_current);
    }
    Telemetry {
        provider: Some(provider),
    }
}

fn sampler(traces: &TraceSettings) -> Sampler {
    let root = match traces.sampler.root {
        SamplerRoot::AlwaysOn => Sampler::AlwaysOn,
        SamplerRoot::AlwaysOff => Sampler::AlwaysOff,
        SamplerRoot::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    if traces.sampler.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

fn resource(traces: &TraceSettings) -> Resource {
    let mut attributes = vec![KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION").to_owned(),
    )];
    attributes.extend(
        traces
            .resource_attributes
            .iter()
            .filter(|(key, _)| key != "service.name")
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    Resource::builder_empty()
        .with_detector(Box::new(
            opentelemetry_sdk::resource::TelemetryResourceDetector,
        ))
        .with_service_name(traces.service_name.clone())
        .with_attributes(attributes)
        .build()
}

/// Installs the subscriber; `false` if one was installed already (several applications in one
/// test process keep the first).
fn install(
    log: &LogSettings,
    target: LogTarget,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> bool {
    // The per-operation spans are debug-level: formatting their fields costs every request a few
    // microseconds, worth paying only when their timings are wanted.
    let default = if log.enable_tracing {
        "info,agent_core=debug,agent_storage=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    // ENABLE_TRACING adds a line when each span closes, with its busy and idle time.
    let span_events = if log.enable_tracing {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let logs = LogLayer {
        target,
        json,
        terminal,
        span_events,
    };
    match tracer {
        // Without traces, one global filter: the cheapest subscriber.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(logs.build())
            .try_init()
            .is_ok(),
        // With traces, each layer filters on its own: the exporter wants the debug-level spans
        // of the agent and storage, the logs keep their level.
        Some(tracer) => {
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_target(false)
                .with_location(false)
                .with_level(false)
                .with_context_activation(false)
                .with_filter(filter_fn(exported));
            tracing_subscriber::registry()
                .with(logs.build().with_filter(filter))
                .with(spans)
                .try_init()
                .is_ok()
        }
    }
}

/// How log lines are written; built for the subscriber it joins.
struct LogLayer {
    target: LogTarget,
    json: bool,
    terminal: bool,
    span_events: FmtSpan,
}

impl LogLayer {
    fn build<S>(self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let target = self.target;
        let writer = move || -> Box<dyn std::io::Write> {
            match target {
                LogTarget::Stdout => Box::new(std::io::stdout()),
                LogTarget::Stderr => Box::new(std::io::stderr()),
            }
        };
        if self.json {
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_span_events(self.span_events)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(self.terminal)
                .with_span_events(self.span_events)
                .boxed()
        }
    }
}

/// What the exporter receives: the spans of this workspace's crates (not the probes'), and of
/// the events within them the warnings and the model call's retries.
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    let ours = target.starts_with("agent_");
    if metadata.is_span() {
        ours && !target.starts_with(PROBE_TARGET) && *metadata.level() <= tracing::Level::DEBUG
    } else {
        ours && (*metadata.level() <= tracing::Level::WARN
            || target.starts_with("agent_core::openai::retry"))
    }
}

/// The hook agent-core calls on outbound requests: the current span's W3C trace context.
fn inject_current(put: &mut dyn FnMut(&str, String)) {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    struct Put<'a>(&'a mut dyn FnMut(&str, String));
    impl Injector for Put<'_> {
        fn set(&mut self, key: &str, value: String) {
            (self.0)(key, value);
        }
    }
    TraceContextPropagator::new().inject_context(&context, &mut Put(put));
}

/// Continues the trace of an incoming request's `traceparent` (and `tracestate`) in `span`, and
/// returns the trace id for the logs.
pub(crate) fn continue_trace(
    span: &tracing::Span,
    headers: &actix_web::http::header::HeaderMap,
) -> Option<String> {
    struct Headers<'a>(&'a actix_web::http::header::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|name| name.as_str()).collect()
        }
    }
    if headers.contains_key("traceparent") {
        let parent: Context = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The processor the provider calls: counts a span into the bounded queue, or drops and counts
/// it when the queue is full, before the batch processor sees it.
#[derive(Debug)]
struct CountingProcessor {
    inner: BatchSpanProcessor,
    limit: usize,
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, context: &Context) {
        self.inner.on_start(span, context);
    }

    fn on_end(&self, span: SpanData) {
        if COUNTS.queued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            COUNTS.queued.fetch_sub(1, Ordering::Relaxed);
            COUNTS.dropped_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter the batch processor calls: counts what each export did, and writes the
/// attributes agent-core can only record as text in their conventional types.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
}

/// Attributes the conventions type as string arrays, recorded as comma-separated text.
const LIST_ATTRIBUTES: &[&str] = &["gen_ai.response.finish_reasons"];

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        for span in &mut batch {
            for attribute in &mut span.attributes {
                if LIST_ATTRIBUTES.contains(&attribute.key.as_str())
                    && let Value::String(text) = &attribute.value
                {
                    let items: Vec<StringValue> = text
                        .as_str()
                        .split(',')
                        .map(|item| StringValue::from(item.trim().to_owned()))
                        .collect();
                    attribute.value = Value::Array(items.into());
                }
            }
        }
        let result = self.inner.export(batch).await;
        COUNTS.queued.fetch_sub(spans, Ordering::Relaxed);
        let counter = match result {
            Ok(()) => &COUNTS.exported,
            Err(_) => &COUNTS.dropped_failed,
        };
        counter.fetch_add(spans as u64, Ordering::Relaxed);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
