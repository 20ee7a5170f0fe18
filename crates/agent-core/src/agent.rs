//! The agent loop: history plus the new user message go to the model; tool calls run
//! concurrently up to a bound and their results are appended in call order; repeat until the
//! model answers. Bounded by a step limit, token budgets per turn and per session, and a
//! whole-turn deadline. Dropping the turn's future (or its event stream) cancels everything it
//! started: tool calls run inside it, never in spawned tasks. A turn can stop before tool calls
//! the client must answer (see [`Waits`]) and be resumed with its answers ([`Resume`]) by any
//! process: everything it needs is in what it returned.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use tracing::Instrument;

use crate::compaction::{self, Compaction};
use crate::context::{ContextPolicy, Fixed, Window};
use crate::conversation::{Message, TokenUsage, ToolCall, Turn};
use crate::error::{AgentError, ModelError};
use crate::model::{
    ChatModel, ChatRequest, ModelDelta, ModelIdentity, ModelReply, ReplyAssembler, Sampling,
    ToolSpec,
};
use crate::spans;
use crate::tokens::TokenCounter;
use crate::tools::{ToolRegistry, ToolSet};

mod turn;

pub use turn::{
    AgentEvent, Answer, ApprovalPolicy, Resume, TurnContext, TurnRequest, TurnResult, Wait,
    WaitingCall, Waits, rejection,
};

/// The bounds of every turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Model calls per turn.
    pub max_steps: usize,
    /// Tool calls running at once.
    pub max_parallel_tools: usize,
    /// Tokens one turn may use, over all its model calls.
    pub turn_token_budget: u64,
    /// Tokens a whole session may use.
    pub session_token_budget: u64,
    /// Wall time for the whole turn.
    pub turn_deadline: Duration,
}

/// What an agent is called, for the spans of its turns (`gen_ai.agent.id`, `gen_ai.agent.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentName {
    pub id: String,
    pub name: String,
}

/// A model, its tools, and limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    name: Option<Arc<AgentName>>,
    model: Arc<dyn ChatModel>,
    /// The model's identity, read once for the spans of every call.
    identity: Arc<ModelIdentity>,
    tools: Arc<ToolRegistry>,
    limits: AgentLimits,
    system_prompt: Option<Arc<str>>,
    /// Whether spans record message and tool contents.
    capture_content: bool,
    context: ContextPolicy,
    /// The model that writes summaries (none: the agent's).
    summarizer: Option<Arc<dyn ChatModel>>,
    fixed_tokens: Arc<Mutex<Option<CountedTools>>>,
}

/// The tokens of the system prompt and the tools, with the tool set they were counted for (held,
/// so that its address is never another set's).
type CountedTools = (Arc<ToolSet>, u64);

impl Agent {
    pub fn new(
        model: Arc<dyn ChatModel>,
        tools: Arc<ToolRegistry>,
        limits: AgentLimits,
        system_prompt: Option<String>,
    ) -> Self {
        let system_prompt = system_prompt
            .filter(|prompt| !prompt.trim().is_empty())
            .map(Arc::from);
        Self {
            name: None,
            identity: Arc::new(model.identity()),
            model,
            tools,
            limits,
            system_prompt,
            capture_content: false,
            context: ContextPolicy::default(),
            summarizer: None,
            fixed_tokens: Arc::default(),
        }
    }

    /// Summaries (`compact`) are written by `model` instead of the agent's own.
    pub fn with_summarizer(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.summarizer = Some(model);
        self
    }

    /// Keeps every request within `policy` (by default: no budget; an overflow still heals).
    pub fn with_context(mut self, policy: ContextPolicy) -> Self {
        self.context = policy;
        self
    }

    /// Records message and tool contents in the turn's spans (off by default: they may hold
    /// personal data).
    pub fn with_content_capture(mut self, capture: bool) -> Self {
        self.capture_content = capture;
        self
    }

    /// Names the agent in its turns' spans.
    pub fn with_name(mut self, name: AgentName) -> Self {
        self.name = Some(Arc::new(name));
        self
    }

    /// The model its turns call.
    pub fn model(&self) -> &Arc<dyn ChatModel> {
        &self.model
    }

    pub fn limits(&self) -> AgentLimits {
        self.limits
    }

    /// The agent's tools.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// Runs a turn to its end.
    pub async fn run_turn(&self, request: TurnRequest) -> Result<TurnResult, AgentError> {
        let span = spans::turn(&self.identity, self.name.as_deref(), request.history.len());
        self.run(request, None, &span)
            .instrument(span.clone())
            .await
    }

    /// Runs a turn, reporting text deltas and tool calls as they happen. The turn runs while the
    /// stream is polled; dropping the stream cancels it.
    pub fn run_turn_streaming(&self, request: TurnRequest) -> TurnEvents {
        let queue = EventQueue::default();
        let sender = queue.clone();
        let agent = self.clone();
        // The span is made here, in the caller's context: the stream is polled outside it.
        let span = spans::turn(&self.identity, self.name.as_deref(), request.history.len());
        let span_of_driver = span.clone();
        let driver = Box::pin(
            async move { agent.run(request, Some(&sender), &span).await }
                .instrument(span_of_driver),
        );
        TurnEvents {
            driver: Some(driver),
            queue,
            outcome: None,
        }
    }

    /// Runs inside the turn's `span`, which it completes with the usage or the failure.
    async fn run(
        &self,
        request: TurnRequest,
        events: Option<&EventQueue>,
        span: &tracing::Span,
    ) -> Result<TurnResult, AgentError> {
        let budget = self.limits.session_token_budget;
        let result = if request.session_tokens_used >= budget {
            Err(AgentError::SessionBudgetExceeded {
                used: request.session_tokens_used,
                budget,
            })
        } else {
            let deadline = self.limits.turn_deadline;
            match tokio::time::timeout(deadline, self.steps(request, events)).await {
                Ok(result) => result,
                Err(_) => Err(AgentError::DeadlineExceeded(deadline)),
            }
        };
        match &result {
            Ok(finished) => {
                spans::record_usage(span, finished.turn.usage);
                span.record("steps", spans::count(finished.steps));
                // The model chain's entry that answered (the chat spans have the server's id).
                if let Some(model) = &finished.model {
                    span.record("gen_ai.response.model", model.as_str());
                }
            }
            Err(error) => spans::record_error(span, error.kind(), error),
        }
        result
    }

    async fn steps(
        &self,
        request: TurnRequest,
        events: Option<&EventQueue>,
    ) -> Result<TurnResult, AgentError> {
        let mut context = Vec::with_capacity(request.history.len() + 8);
        if let Some(prompt) = &self.system_prompt {
            context.push(Message::system(prompt.as_ref()));
        }
        let pinned = request.context.pinned.min(request.history.len());
        let mut history = request.history;
        context.extend(history.drain(..pinned));
        let summary_at = request.context.summary.as_deref().map(|summary| {
            context.push(compaction::summary_message(summary));
            context.len() - 1
        });
        // The request's own choices over the agent's policy.
        let policy = ContextPolicy {
            strategy: request.context.strategy.unwrap_or(self.context.strategy),
            max_input_tokens: (request.context.max_input_tokens)
                .unwrap_or(self.context.max_input_tokens),
            ..self.context
        };
        let prompt_len = usize::from(self.system_prompt.is_some());
        let mut window = Window::new(
            &self.identity.model,
            policy,
            prompt_len,
            context.len(),
            history.len(),
            summary_at,
        );
        let known = request
            .context
            .history_tokens
            .get(pinned..)
            .unwrap_or_default();
        context.extend(history);
        // The tools of the turn's start: an MCP server's list changing does not change them.
        let tools = self.tools.current();
        let (mut produced, mut usage, first_step) = match request.resume {
            None => {
                let user = Message::user(request.user_message);
                context.push(user.clone());
                (vec![user], TokenUsage::default(), 1)
            }
            Some(resume) => {
                context.extend(resume.produced.iter().cloned());
                let mut produced = resume.produced;
                let answered = self
                    .answer(&tools, resume.answers, &mut window, events)
                    .await;
                context.extend(answered.iter().cloned());
                produced.extend(answered);
                (produced, resume.usage, resume.steps + 1)
            }
        };
        // The client's tools are offered beside the agent's (a name in both is refused before).
        let offered: std::borrow::Cow<'_, [ToolSpec]> = if request.waits.client_tools.is_empty() {
            std::borrow::Cow::Borrowed(tools.specs())
        } else {
            let mut all = tools.specs().to_vec();
            all.extend(request.waits.client_tools.iter().cloned());
            std::borrow::Cow::Owned(all)
        };

        let client_tools = &request.waits.client_tools;
        let fixed = |counter: TokenCounter| {
            self.fixed_tokens(counter, &tools) + counter.tools(client_tools)
        };
        let compaction = self
            .compact(&mut window, &mut context, known, &fixed, &request.context)
            .await;
        if let Some(Ok(compaction)) = &compaction {
            usage += compaction.usage;
        }
        for step in first_step..=self.limits.max_steps {
            window.fit(&mut context, known, &fixed)?;
            let reply = loop {
                match self
                    .call_model(&context, &offered, &request.sampling, events)
                    .await
                {
                    Err(ModelError::ContextLength(refusal)) => {
                        if !window.heal(&mut context, known, &fixed) {
                            return Err(ModelError::ContextLength(refusal).into());
                        }
                        tracing::info!(
                            left_out = window.left_out(),
                            tokens = window.tokens(),
                            "the model refused the request as too long: retrying with less history"
                        );
                    }
                    other => break other?,
                }
            };
            usage += reply.usage;
            self.check_budgets(usage, request.session_tokens_used)?;
            let calls = reply.message.tool_calls.clone();
            window.pushed(&reply.message);
            context.push(reply.message.clone());
            produced.push(reply.message.clone());
            let finished = calls.is_empty();
            let (mut now, mut waiting) = (Vec::new(), Vec::new());
            let mut rejected = false;
            for call in calls {
                send(events, AgentEvent::ToolCallStarted(call.clone()));
                let unapprovable = request.waits.unapprovable.as_ref();
                match (request.waits.wait_for(&call), unapprovable) {
                    (Some(Wait::Approval), Some(reason)) => {
                        rejected = true;
                        let reason = Some(reason.clone());
                        now.push((call, Answer::Rejected { reason }));
                    }
                    (Some(wait), _) => waiting.push(WaitingCall { call, wait }),
                    (None, _) => now.push((call, Answer::Approved)),
                }
            }
            if !now.is_empty() {
                let results = if rejected {
                    let answers = now.into_iter().map(|(call, answer)| {
                        let wait = Wait::Approval;
                        (WaitingCall { call, wait }, answer)
                    });
                    self.answer(&tools, answers.collect(), &mut window, events)
                        .await
                } else {
                    let now: Vec<ToolCall> = now.into_iter().map(|(call, _)| call).collect();
                    self.run_calls(&tools, &now, &mut window, events).await
                };
                context.extend(results.iter().cloned());
                produced.extend(results);
            }
            if finished || !waiting.is_empty() {
                tracing::debug!(
                    step,
                    tokens = usage.total(),
                    waiting = waiting.len(),
                    "turn ended"
                );
                return Ok(TurnResult {
                    response: reply.message.content,
                    turn: Turn {
                        context_tokens: window.turn_counts(),
                        messages: produced,
                        usage,
                    },
                    steps: step,
                    waiting,
                    model: reply.meta.chain_model,
                    left_out: window.left_out(),
                    compaction,
                });
            }
        }
        Err(AgentError::StepLimit(self.limits.max_steps))
    }

    /// Summarises the oldest turns when the request is over the budget and the policy compacts
    /// (see [`Window::turns_to_compact`]); a failed summary is reported and the turn truncates
    /// instead.
    async fn compact(
        &self,
        window: &mut Window<'_>,
        context: &mut Vec<Message>,
        known: &[Option<u64>],
        fixed: Fixed<'_>,
        turn: &TurnContext,
    ) -> Option<Result<Compaction, String>> {
        let (covered, turns) = window.turns_to_compact(context, known, fixed, turn.compactable)?;
        let counter = window.counter();
        let overhead = counter.text(compaction::SUMMARY_PROMPT) + 2 * crate::MESSAGE_OVERHEAD;
        let room = window
            .budget()
            .saturating_sub(overhead + crate::REPLY_PRIMING);
        let transcript = compaction::transcript(
            &counter,
            turn.summary.as_deref(),
            window.history(context, covered),
            room,
        );
        let summarizer = self.summarizer.as_ref().unwrap_or(&self.model);
        match compaction::summarise(summarizer.as_ref(), transcript, turns).await {
            Ok((summary, usage)) => {
                let message = compaction::summary_message(&summary);
                let tokens = counter.message(&message);
                window.compacted(context, message, covered);
                tracing::info!(turns, covered, tokens, "compacted the history");
                Some(Ok(Compaction {
                    summary,
                    tokens,
                    covered,
                    turns,
                    usage,
                }))
            }
            Err(error) => {
                let error = crate::error_chain(&error);
                tracing::warn!(turns, %error, "compaction failed: truncating instead");
                Some(Err(error))
            }
        }
    }

    /// The tokens of the system prompt and of `tools` (the agent's own), counted once per tool
    /// set: an MCP server's new list is a new set.
    fn fixed_tokens(&self, counter: TokenCounter, tools: &Arc<ToolSet>) -> u64 {
        let mut cached = self
            .fixed_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((counted, tokens)) = cached.as_ref()
            && Arc::ptr_eq(counted, tools)
        {
            return *tokens;
        }
        let prompt = self.system_prompt.as_ref().map_or(0, |prompt| {
            counter.message(&Message::system(prompt.as_ref()))
        });
        let tokens = prompt + counter.tools(tools.specs());
        *cached = Some((Arc::clone(tools), tokens));
        tokens
    }

    /// One model call with `context`, streamed when `events` are reported, in its span.
    async fn call_model(
        &self,
        context: &[Message],
        offered: &[ToolSpec],
        sampling: &Sampling,
        events: Option<&EventQueue>,
    ) -> Result<ModelReply, ModelError> {
        let model_request = ChatRequest {
            messages: context,
            tools: offered,
            sampling,
        };
        let span = spans::chat(&self.identity, sampling);
        spans::record_input(&span, context, self.capture_content);
        let reply = match events {
            None => {
                self.model
                    .complete(model_request)
                    .instrument(span.clone())
                    .await
            }
            Some(events) => {
                self.streamed_step(model_request, events)
                    .instrument(span.clone())
                    .await
            }
        };
        match &reply {
            Ok(reply) => spans::record_reply(&span, reply, self.capture_content),
            Err(error) => spans::record_error(&span, error.kind(), error),
        }
        reply
    }

    /// Runs `calls` (up to the bound at once) and answers their tool messages in call order,
    /// each as `window` keeps it.
    async fn run_calls(
        &self,
        tools: &ToolSet,
        calls: &[ToolCall],
        window: &mut Window<'_>,
        events: Option<&EventQueue>,
    ) -> Vec<Message> {
        // `buffered` runs up to the bound at once and yields results in call order.
        let pending: Vec<_> = calls
            .iter()
            .map(|call| {
                let capture = self.capture_content;
                // The span starts when the call does, not while it waits for its turn.
                async move {
                    let span = spans::tool(call, || tools.source_of(&call.name));
                    let outcome = tools.call(call).instrument(span.clone()).await;
                    spans::record_tool(&span, call, &outcome.content, outcome.is_error, capture);
                    outcome
                }
            })
            .collect();
        let outcomes: Vec<_> = futures_util::stream::iter(pending)
            .buffered(self.limits.max_parallel_tools.max(1))
            .collect()
            .await;
        calls
            .iter()
            .zip(outcomes)
            .map(|(call, outcome)| {
                let content = window.tool_result(outcome.content);
                tool_message(events, window, call, content, outcome.is_error)
            })
            .collect()
    }

    /// The tool messages of a resumed turn's answered calls, in their order: approved calls run
    /// now, rejected ones say so, a client's tool gives its output.
    async fn answer(
        &self,
        tools: &ToolSet,
        answers: Vec<(WaitingCall, Answer)>,
        window: &mut Window<'_>,
        events: Option<&EventQueue>,
    ) -> Vec<Message> {
        let approved: Vec<ToolCall> = answers
            .iter()
            .filter(|(_, answer)| *answer == Answer::Approved)
            .map(|(waiting, _)| waiting.call.clone())
            .collect();
        let mut ran = self
            .run_calls(tools, &approved, window, events)
            .await
            .into_iter();
        answers
            .into_iter()
            .filter_map(|(waiting, answer)| {
                let content = match answer {
                    Answer::Approved => return ran.next(),
                    Answer::Rejected { reason } => rejection(reason.as_deref()),
                    Answer::Output(output) => window.tool_result(output),
                };
                Some(tool_message(events, window, &waiting.call, content, false))
            })
            .collect()
    }

    async fn streamed_step(
        &self,
        request: ChatRequest<'_>,
        events: &EventQueue,
    ) -> Result<ModelReply, ModelError> {
        let mut deltas = self.model.stream(request).await?;
        let mut assembler = ReplyAssembler::default();
        while let Some(delta) = deltas.next().await {
            let delta = delta?;
            if let ModelDelta::Text(text) = &delta {
                send(Some(events), AgentEvent::TextDelta(text.clone()));
            }
            assembler.push(delta);
        }
        assembler.finish()
    }

    fn check_budgets(&self, usage: TokenUsage, session_before: u64) -> Result<(), AgentError> {
        let (turn_budget, session_budget) = (
            self.limits.turn_token_budget,
            self.limits.session_token_budget,
        );
        if usage.total() > turn_budget {
            return Err(AgentError::TurnBudgetExceeded {
                used: usage.total(),
                budget: turn_budget,
            });
        }
        let session_used = session_before + usage.total();
        if session_used > session_budget {
            return Err(AgentError::SessionBudgetExceeded {
                used: session_used,
                budget: session_budget,
            });
        }
        Ok(())
    }
}

/// The tool message of `call`'s result, reported as its event first and counted in `window`.
fn tool_message(
    events: Option<&EventQueue>,
    window: &mut Window<'_>,
    call: &ToolCall,
    content: String,
    is_error: bool,
) -> Message {
    send(
        events,
        AgentEvent::ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: content.clone(),
            is_error,
        },
    );
    let message = Message::tool_result(call.id.clone(), content);
    window.pushed(&message);
    message
}

fn send(events: Option<&EventQueue>, event: AgentEvent) {
    if let Some(events) = events {
        events.push(event);
    }
}

/// Where a streaming turn puts its events until [`TurnEvents`] hands them out. The turn runs
/// inside `TurnEvents::poll_next`, which takes from this queue right after polling it, so nothing
/// needs waking: a plain queue instead of a channel, whose first block alone took 2.6 KiB per open
/// stream (issue 20). Dropping `TurnEvents` drops the turn, the only other holder.
#[derive(Debug, Default, Clone)]
struct EventQueue(Arc<Mutex<VecDeque<AgentEvent>>>);

impl EventQueue {
    fn push(&self, event: AgentEvent) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(event);
    }

    fn pop(&self) -> Option<AgentEvent> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

/// The events of a streaming turn. Polling it runs the turn.
pub struct TurnEvents {
    driver: Option<BoxFuture<'static, Result<TurnResult, AgentError>>>,
    queue: EventQueue,
    outcome: Option<AgentEvent>,
}

impl std::fmt::Debug for TurnEvents {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TurnEvents")
            .field("running", &self.driver.is_some())
            .finish()
    }
}

impl Stream for TurnEvents {
    type Item = AgentEvent;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        let this = self.get_mut();
        if let Some(driver) = this.driver.as_mut()
            && let Poll::Ready(result) = driver.as_mut().poll(context)
        {
            // The turn has ended: what it queued comes first, then its outcome.
            this.driver = None;
            this.outcome = Some(match result {
                Ok(result) => AgentEvent::Done(result),
                Err(error) => AgentEvent::Failed(error),
            });
        }
        if let Some(event) = this.queue.pop() {
            return Poll::Ready(Some(event));
        }
        if this.driver.is_none() {
            return Poll::Ready(this.outcome.take());
        }
        Poll::Pending
    }
}
