//! A turn as a stream of server-sent events, for every route that streams one: the agent's
//! events as they happen, keep-alive comments while it is quiet (tools running), the store at
//! the end, and the end of the drain window on shutdown. Each route renders these in its own
//! event format ([`EventFormat`]); the driving is written once, here. Dropping the stream (the
//! client went away) cancels the turn: nothing is stored.

use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::web::Bytes;
use agent_core::ToolCall;
use futures_util::Stream;

use crate::dto::{RunEvent, ToolResultEvent};
use crate::error::ApiError;
use crate::failure_log::FailureLog;
use crate::routes::pipeline::TurnRoutes;
use crate::runs::executor::Execution;
use crate::runs::live::{CancelReason, LiveEvent, StepEvent};
use crate::turn::Finished;

/// What a stream says when the drain window ends before its turn did.
pub(crate) const SHUTDOWN_MESSAGE: &str =
    "the server is shutting down; this turn was cancelled and nothing was stored";

/// How a route writes a turn's events. Each method answers the bytes to send (whole events).
pub(crate) trait EventFormat: Send + 'static {
    /// Whether the stream shows the tool calls and their results (`/agent/stream`). The
    /// OpenAI-shaped streams do not (the client would try to run them): they get text only, a
    /// step's text set apart from the next one's (see [`StepText`]).
    const SHOWS_TOOLS: bool;

    /// Before anything else happens: the run the stream is of.
    fn start(&mut self, _run: &RunEvent) -> Option<Bytes> {
        None
    }
    fn delta(&mut self, text: String) -> Option<Bytes>;
    /// Called only when [`Self::SHOWS_TOOLS`].
    fn tool_call(&mut self, _call: ToolCall) -> Option<Bytes> {
        None
    }
    /// Called only when [`Self::SHOWS_TOOLS`].
    fn tool_result(&mut self, _result: ToolResultEvent) -> Option<Bytes> {
        None
    }
    /// The turn is stored.
    fn done(&mut self, finished: &Finished) -> Vec<Bytes>;
    /// The turn failed (nothing stored).
    fn error(&mut self, error: &ApiError) -> Bytes;
    /// The drain window is ending: the turn is cancelled (nothing stored); see
    /// [`SHUTDOWN_MESSAGE`].
    fn shutdown(&mut self) -> Bytes;
    /// The next event written is the run's event `seq` (a resumed stream skips the earlier).
    fn at_run_event(&mut self, _seq: u64) {}
}

/// Text as a stream that does not show tools writes it: a step's text, and after a step that
/// wrote text and then called tools, the next step's text set apart by a blank line.
#[derive(Debug, Default)]
struct StepText {
    /// The current step has written text.
    wrote: bool,
    /// A step that wrote text ended in tool calls: the next text starts after a blank line.
    separate: bool,
}

impl StepText {
    /// The text to send for a delta, if any.
    fn delta(&mut self, text: String) -> Option<String> {
        if text.is_empty() {
            return None;
        }
        self.wrote = true;
        Some(if std::mem::take(&mut self.separate) {
            format!("\n\n{text}")
        } else {
            text
        })
    }

    /// A tool call began: the step's text, if any, is over.
    fn tool_call(&mut self) {
        if std::mem::take(&mut self.wrote) {
            self.separate = true;
        }
    }
}

/// One server-sent event with a JSON payload; `event: None` writes a `data:`-only event.
pub(crate) fn sse(event: Option<&str>, data: &impl serde::Serialize) -> Bytes {
    sse_numbered(None, event, data)
}

/// [`sse`] with an `id:` line when `id` is given (a client resumes after the last id it saw).
/// Every event of every stream is written here.
pub(crate) fn sse_numbered(
    id: Option<u64>,
    event: Option<&str>,
    data: &impl serde::Serialize,
) -> Bytes {
    use std::fmt::Write;
    // Serialising our own event types cannot fail; were it to, the event says so.
    let data = serde_json::to_string(data)
        .unwrap_or_else(|error| format!(r#"{{"error":"unserialisable event: {error}"}}"#));
    let mut text = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        let _ = writeln!(text, "id: {id}");
    }
    if let Some(event) = event {
        let _ = writeln!(text, "event: {event}");
    }
    let _ = write!(text, "data: {data}\n\n");
    Bytes::from(text)
}

/// The response streaming the run `execution` in `format`: its events as the executor publishes
/// them, keep-alives while it is quiet, and the end of the drain window. Dropping the response
/// (the client went away) drops `execution`, which cancels the run.
pub(crate) fn respond<F: EventFormat>(
    routes: &TurnRoutes,
    execution: Execution,
    format: F,
) -> HttpResponse {
    let mut drain = routes.drain.clone();
    let keepalive = routes.settings.api.sse_keepalive;
    let mut render = Render::new(format, Arc::clone(&routes.failures));
    let run = RunEvent {
        run_id: execution.live.id.clone(),
        session_id: execution.live.session.clone(),
    };
    let events = async_stream::stream! {
        let execution = execution;
        if let Some(start) = render.format.start(&run) {
            yield Ok::<_, actix_web::Error>(start);
        }
        let mut watcher = execution.live.watch();
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        'watching: loop {
            tokio::select! {
                events = watcher.next() => {
                    if events.is_empty() {
                        break;
                    }
                    for event in events {
                        let (bytes, ended) = render.event(event);
                        for bytes in bytes {
                            yield Ok(bytes);
                        }
                        if ended {
                            break 'watching;
                        }
                    }
                }
                _ = ticker.tick() => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
                changed = drain.changed() => {
                    if changed.is_ok() && *drain.borrow() {
                        tracing::info!("closing a stream: the drain window is ending");
                        execution.live.cancel(CancelReason::Shutdown);
                        yield Ok(render.format.shutdown());
                        break;
                    }
                }
            }
        }
    };
    stream_response(events)
}

/// A `text/event-stream` answer that proxies pass on unbuffered. The body is polled after the
/// handler returned, outside the request's span (and a sampled request's subscriber): both are
/// entered again around each poll, so the turn it runs, its store and its log lines stay in the
/// request's trace.
pub(crate) fn stream_response(
    events: impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    let events = InSpan {
        span: tracing::Span::current(),
        inner: Box::pin(events),
    };
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(crate::telemetry::carry(events))
}

/// A stream polled inside a span.
struct InSpan<S> {
    span: tracing::Span,
    inner: std::pin::Pin<Box<S>>,
}

impl<S: Stream> Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.as_mut().poll_next(context)
    }
}

/// A run's events written in a stream's format: the steps it shows (text only, steps set apart,
/// for a format that does not show tools), then the terminal event.
pub(crate) struct Render<F> {
    pub(crate) format: F,
    step_text: Option<StepText>,
    failures: Arc<FailureLog>,
}

impl<F: EventFormat> Render<F> {
    pub(crate) fn new(format: F, failures: Arc<FailureLog>) -> Self {
        Self {
            format,
            step_text: (!F::SHOWS_TOOLS).then(StepText::default),
            failures,
        }
    }

    /// The bytes of `event`, and whether it was the run's last.
    pub(crate) fn event(&mut self, event: LiveEvent) -> (Vec<Bytes>, bool) {
        let format = &mut self.format;
        match event {
            LiveEvent::Step(StepEvent::Delta { text }) => {
                let text = match &mut self.step_text {
                    Some(step_text) => step_text.delta(text),
                    None => Some(text),
                };
                (
                    text.and_then(|text| format.delta(text))
                        .into_iter()
                        .collect(),
                    false,
                )
            }
            LiveEvent::Step(StepEvent::ToolCall { call }) => match &mut self.step_text {
                Some(step_text) => {
                    step_text.tool_call();
                    (Vec::new(), false)
                }
                None => (format.tool_call(call.into()).into_iter().collect(), false),
            },
            LiveEvent::Step(StepEvent::ToolResult { result }) => {
                let shown = self.step_text.is_none();
                let bytes = shown.then(|| format.tool_result(result)).flatten();
                (bytes.into_iter().collect(), false)
            }
            LiveEvent::Done(finished) => (format.done(&finished), true),
            LiveEvent::Failed(error) => {
                // An event stream's edge: its failures are logged here, as the middleware logs
                // the others.
                if let Some(failure) = error.failure() {
                    self.failures.log(&failure);
                }
                (vec![format.error(&error)], true)
            }
        }
    }
}
