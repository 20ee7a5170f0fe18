//! Logs and traces. Logs: `RUST_LOG` filtering, JSON lines in containers, readable text on a
//! terminal. Traces: the `tracing` spans of the request, the turn (agent-core's GenAI spans) and
//! storage, exported over OTLP/HTTP by the OpenTelemetry SDK when an endpoint is configured, with
//! W3C trace context continued from requests and carried on outbound calls (through
//! agent-core's [`agent_core::trace_context`] hook). Export never slows a request: spans wait in
//! a bounded queue for the batch processor's own thread, and what does not fit, or does not
//! reach the collector, is dropped and counted (`agent_trace_spans_dropped_total`).

use std::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use agent_config::{LogFormat, LogSettings, SamplerRoot, TraceSettings};
use futures_util::Stream;
use futures_util::future::Either;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
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
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::layer::{Context as FilterContext, Filter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::StartupError;

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

/// The target of a sampled request's server span: the exporter takes it and what runs inside.
pub(crate) const TRACED_TARGET: &str = "agent_server::traced";

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
) -> Result<Telemetry, StartupError> {
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
        .map_err(StartupError::TraceExporter)?;
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
        // The middleware samples each request before its span exists (an unsampled request
        // costs the exporter nothing); the SDK records every span it is given, even under an
        // unsampled caller when the sampler is not parent-based.
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource(traces))
        .build();
    let tracer = provider.tracer("agent-server");
    let installed = install(log, target, Some(tracer));
    if installed {
        let _ = SAMPLER.set(RequestSampler {
            parent_based: traces.sampler.parent_based,
            root: traces.sampler.root,
        });
        agent_core::trace_context::install(inject_current);
    }
    Telemetry {
        provider: Some(provider),
    }
}

/// How the middleware decides which requests are traced, from `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy)]
struct RequestSampler {
    parent_based: bool,
    root: SamplerRoot,
}

/// Set once traces are exported: the middleware samples requests (and continues incoming
/// trace context) only then.
static SAMPLER: OnceLock<RequestSampler> = OnceLock::new();

impl RequestSampler {
    /// Whether a request is traced: an incoming sampled flag decides under a parent-based
    /// sampler; otherwise the root rule (a ratio draws at random).
    fn traces(&self, parent: Option<&SpanContext>) -> bool {
        if self.parent_based
            && let Some(parent) = parent
        {
            return parent.is_sampled();
        }
        match self.root {
            SamplerRoot::AlwaysOn => true,
            SamplerRoot::AlwaysOff => false,
            SamplerRoot::Ratio(ratio) => rand::random::<f64>() < ratio,
        }
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
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
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
    // The process's subscriber: the logs under one global filter, the cheapest there is. An
    // unsampled request (and everything else) runs on it alone.
    let installed = tracing_subscriber::registry()
        .with(filter())
        .with(logs.clone().build())
        .try_init()
        .is_ok();
    // With traces, a sampled request runs on a subscriber of its own (the middleware makes it
    // the request's default dispatcher): the same logs, and the exporter's layer, each
    // filtering on its own (the exporter wants the debug-level spans of the agent and storage,
    // the logs keep their level). A request not sampled never meets the exporter's layer.
    if let (true, Some(tracer)) = (installed, tracer) {
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_target(false)
            .with_location(false)
            .with_level(false)
            .with_context_activation(false)
            .with_filter(InTracedRequest);
        let traced = tracing_subscriber::registry()
            .with(logs.build().with_filter(filter()))
            .with(spans);
        let _ = TRACED.set(tracing::Dispatch::new(traced));
    }
    installed
}

/// The subscriber a sampled request runs on (see [`install`]); set once traces are exported.
static TRACED: OnceLock<tracing::Dispatch> = OnceLock::new();

/// The dispatcher a sampled request runs on, for the middleware.
pub(crate) fn traced_dispatch() -> Option<&'static tracing::Dispatch> {
    TRACED.get()
}

/// `work` (a future or a stream) on the current request's subscriber, for what a request spawns
/// or what is polled after its handler returned: within a sampled request, its dispatcher goes
/// along (else the work's spans would leave the trace); otherwise the work as it is.
pub(crate) fn carry<T>(work: T) -> Either<OnDispatch<T>, T> {
    match current_traced() {
        Some(dispatch) => Either::Left(OnDispatch::new(dispatch, work)),
        None => Either::Right(work),
    }
}

/// The current dispatcher if it is a sampled request's (the exporter's filter is in it).
fn current_traced() -> Option<tracing::Dispatch> {
    tracing::dispatcher::get_default(|dispatch| {
        dispatch.is::<InTracedRequest>().then(|| dispatch.clone())
    })
}

/// A future or stream polled, and dropped, with `dispatch` as the default dispatcher. Dropped
/// matters: the registry closes a span's parent through the default dispatcher, so a span of
/// the sampled request's subscriber must also end on it.
pub(crate) struct OnDispatch<T> {
    dispatch: tracing::Dispatch,
    inner: Option<Pin<Box<T>>>,
}

impl<T> OnDispatch<T> {
    pub(crate) fn new(dispatch: tracing::Dispatch, inner: T) -> Self {
        Self {
            dispatch,
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for OnDispatch<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, context: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _default = tracing::dispatcher::set_default(&this.dispatch);
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Pending;
        };
        let output = inner.as_mut().poll(context);
        if output.is_ready() {
            this.inner = None;
        }
        output
    }
}

impl<S: Stream> Stream for OnDispatch<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let _default = tracing::dispatcher::set_default(&this.dispatch);
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = inner.as_mut().poll_next(context);
        if let Poll::Ready(None) = item {
            this.inner = None;
        }
        item
    }
}

impl<T> Drop for OnDispatch<T> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _default = tracing::dispatcher::set_default(&self.dispatch);
            self.inner = None;
        }
    }
}

/// How log lines are written; built for the subscriber it joins.
#[derive(Clone)]
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

/// What the exporter receives of a sampled request (it runs on the subscriber this filter is
/// in: see [`install`]): its server span ([`TRACED_TARGET`]), the spans of this workspace's
/// crates within it, and the warnings and model-call retries among their events.
struct InTracedRequest;

impl InTracedRequest {
    fn wants(metadata: &tracing::Metadata<'_>) -> bool {
        let target = metadata.target();
        if metadata.is_span() {
            target.starts_with("agent_") && !target.starts_with(PROBE_TARGET)
        } else {
            target.starts_with("agent_")
                && (*metadata.level() <= tracing::Level::WARN
                    || target.starts_with("agent_core::openai::retry"))
        }
    }
}

impl<S> Filter<S> for InTracedRequest {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: &FilterContext<'_, S>) -> bool {
        Self::wants(metadata)
    }

    /// Without a hint the process's level would be unbounded, and every `trace!` of every
    /// library (hyper, h2, actix) would be looked at instead of skipped by its level: measured
    /// as a tenth more CPU per turn with nothing exported.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }

    fn callsite_enabled(&self, metadata: &'static tracing::Metadata<'static>) -> Interest {
        if Self::wants(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
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

/// Whether this request is traced, and if so the context it continues: the incoming
/// `traceparent` (and `tracestate`) when it has a valid one, else a new trace. `None`: not
/// traced (traces off, or not sampled).
pub(crate) fn traced_request(headers: &actix_web::http::header::HeaderMap) -> Option<Context> {
    struct Headers<'a>(&'a actix_web::http::header::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|name| name.as_str()).collect()
        }
    }
    let sampler = SAMPLER.get()?;
    let parent = headers
        .contains_key("traceparent")
        .then(|| TraceContextPropagator::new().extract(&Headers(headers)))
        .filter(|parent| parent.span().span_context().is_valid());
    let sampled = sampler.traces(
        parent
            .as_ref()
            .map(|parent| parent.span().span_context().clone())
            .as_ref(),
    );
    sampled.then(|| parent.unwrap_or_default())
}

/// Whether `span` belongs to a sampled request (lets a caller skip building an attribute).
pub(crate) fn is_traced(span: &tracing::Span) -> bool {
    span.with_subscriber(|(_, dispatch)| dispatch.is::<InTracedRequest>())
        .unwrap_or(false)
}

/// Gives a span of a sampled request an attribute for the exporter alone (not a `tracing` field:
/// the log lines do not repeat it); nothing for any other span.
pub(crate) fn set_attribute(span: &tracing::Span, key: &'static str, value: Value) {
    span.set_attribute(key, value);
}

/// Sets a span's error status, with its description (the error code).
pub(crate) fn set_error(span: &tracing::Span, description: String) {
    span.set_status(opentelemetry::trace::Status::error(description));
}

/// Puts `span` under `parent` and answers its trace id, for the logs.
pub(crate) fn continue_trace(span: &tracing::Span, parent: Context) -> Option<String> {
    let _ = span.set_parent(parent);
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

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::{RequestSampler, SamplerRoot};

    fn parent(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from(7_u128),
            SpanId::from(9_u64),
            flags,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn parent_based_samplers_follow_the_callers_flag_and_the_root_rule_decides_the_rest() {
        let ratio = |parent_based, ratio| RequestSampler {
            parent_based,
            root: SamplerRoot::Ratio(ratio),
        };
        let (on, off) = (parent(true), parent(false));
        assert!(ratio(true, 0.0).traces(Some(&on)));
        assert!(!ratio(true, 1.0).traces(Some(&off)));
        assert!(!ratio(false, 0.0).traces(Some(&on)), "not parent-based");
        assert!(ratio(false, 1.0).traces(Some(&off)), "not parent-based");
        let drawn = (0..10_000)
            .filter(|_| ratio(true, 0.1).traces(None))
            .count();
        assert!((700..1300).contains(&drawn), "{drawn} of 10 000 at 10 %");
        let always = |root| RequestSampler {
            parent_based: true,
            root,
        };
        assert!(always(SamplerRoot::AlwaysOn).traces(None));
        assert!(!always(SamplerRoot::AlwaysOff).traces(None));
    }
}
