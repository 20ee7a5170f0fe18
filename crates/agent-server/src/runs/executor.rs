//! The executor: drives a prepared run to its end in a task of its own, apart from the request
//! that started it. It publishes the run's events to its [`LiveRun`] (and its steps to the shared
//! event log), stores the turn or ends the run, and tells the requester the outcome. A request
//! observes the run: it waits for the outcome, or renders the events as they come; dropping its
//! [`Execution`] before the run ended cancels the run (the client went away).

use std::sync::Arc;

use agent_core::{AgentEvent, TurnResult};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::live::{CancelReason, LiveEvent, LiveRun, LogWriter, StepEvent};
use crate::dto::ToolResultEvent;
use crate::error::ApiError;
use crate::turn::{Extras, Finished, Prepared, Turns};

/// How a run's model calls are made, and where its steps go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One answer per model call; no step events (the request waits for the outcome).
    Blocking,
    /// Streamed model calls; every step is an event of the live run (its request streams them;
    /// its going away cancels the run, so nothing is left to resume elsewhere).
    Streaming,
    /// Streamed, and every step copied to the shared event log too: a background run outlives
    /// its request, so its events are read and resumed from any replica.
    Background,
}

/// A run being executed, as its requester holds it.
#[derive(Debug)]
pub(crate) struct Execution {
    pub(crate) live: Arc<LiveRun>,
    outcome: Option<oneshot::Receiver<Outcome>>,
    /// Nobody waits for it (a background run): dropping it cancels nothing.
    detached: bool,
}

/// A run's outcome for its requester: the stored turn and whether the idempotency claim was
/// completed with it, or the error to answer.
type Outcome = Result<(Finished, bool), ApiError>;

impl Execution {
    /// Waits for the run's outcome.
    pub(crate) async fn outcome(mut self) -> Outcome {
        let receiver = self.outcome.take();
        match receiver {
            Some(receiver) => receiver.await.unwrap_or_else(|_| {
                Err(ApiError::Internal(anyhow::anyhow!(
                    "the run's executor stopped without an outcome"
                )))
            }),
            None => Err(ApiError::Internal(anyhow::anyhow!("the outcome was taken"))),
        }
    }
}

impl Execution {
    /// Lets the run go on with nobody waiting for it (a background run).
    pub(crate) fn detach(self) {
        drop(self.detached());
    }

    /// The execution, its run going on if it is dropped (a background run's stream: going
    /// away cancels nothing).
    pub(crate) fn detached(mut self) -> Self {
        self.detached = true;
        self
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        // Cancels nothing once the run has ended.
        if !self.detached {
            self.live.cancel(CancelReason::Disconnected);
        }
    }
}

/// Starts executing `prepared` (see the module doc).
pub(crate) fn execute(
    turns: &Arc<Turns>,
    prepared: Prepared,
    extras: Extras,
    mode: Mode,
) -> Execution {
    let live = Arc::clone(prepared.held.run.live());
    let (sender, outcome) = oneshot::channel();
    let writer = (mode == Mode::Background).then(|| turns.log_writer(&live.id));
    let turns = Arc::clone(turns);
    let published = Arc::clone(&live);
    let work = async move {
        let outcome = drive(&turns, prepared, extras, mode, writer).await;
        let terminal = match &outcome {
            Ok((finished, _)) => LiveEvent::Done(finished.clone()),
            Err(error) => LiveEvent::Failed(Arc::new(error.reported())),
        };
        published.push(terminal);
        // The requester may be gone; the run has ended either way.
        let _ = sender.send(outcome);
    };
    // The request's span (and a sampled request's subscriber) go along.
    tokio::spawn(crate::telemetry::carry(
        work.instrument(tracing::Span::current()),
    ));
    Execution {
        live,
        outcome: Some(outcome),
        detached: false,
    }
}

async fn drive(
    turns: &Turns,
    prepared: Prepared,
    extras: Extras,
    mode: Mode,
    writer: Option<LogWriter>,
) -> Outcome {
    let Prepared {
        agent,
        request,
        held,
    } = prepared;
    let live = Arc::clone(held.run.live());
    let cancelled = live.cancellation();
    let result: Option<Result<TurnResult, agent_core::AgentError>> = match (mode, writer) {
        (Mode::Blocking, _) => tokio::select! {
            result = agent.agent.run_turn(request) => Some(result),
            () = cancelled.cancelled() => None,
        },
        (Mode::Streaming | Mode::Background, mut writer) => {
            let mut events = agent.agent.run_turn_streaming(request);
            let result = loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    () = cancelled.cancelled() => break None,
                };
                let step = match event {
                    Some(AgentEvent::TextDelta(text)) => StepEvent::Delta { text },
                    Some(AgentEvent::ToolCallStarted(call)) => {
                        StepEvent::ToolCall { call: call.into() }
                    }
                    Some(AgentEvent::ToolResult {
                        call_id,
                        name,
                        content,
                        is_error,
                    }) => StepEvent::ToolResult {
                        result: ToolResultEvent {
                            id: call_id,
                            name,
                            content,
                            is_error,
                        },
                    },
                    Some(AgentEvent::Done(result)) => break Some(Ok(result)),
                    Some(AgentEvent::Failed(error)) => break Some(Err(error)),
                    None => break None,
                };
                if let Some(writer) = &mut writer {
                    writer.push(&step);
                }
                live.push(LiveEvent::Step(step));
            };
            // Every step is in the log before the run's terminal state is written.
            if let Some(writer) = writer {
                writer.finish().await;
            }
            result
        }
    };
    match result {
        Some(Ok(result)) if !result.waiting.is_empty() && held.can_wait() => {
            turns.suspend(held, &agent, result, extras).await
        }
        Some(Ok(result)) => turns.store(held, &agent, result, extras).await,
        Some(Err(error)) => Err(turns.fail(held, &agent, error).await),
        None => Err(turns.stopped(held).await),
    }
}
