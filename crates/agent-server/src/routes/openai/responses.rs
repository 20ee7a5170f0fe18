//! `POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API (the one its Agents
//! SDK uses) over the agent's turns. A stored response (`store`, the default) is a turn of a
//! session: the first starts a session the server names, `previous_response_id` continues it
//! (from its latest response), and the response object is kept by the turn's own statement,
//! readable by its caller until the session is deleted. `store: false` runs the turn on the
//! given conversation (after the previous response's, if named) and keeps nothing but usage.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::{ContextStrategy, Message, Sampling, SessionId};
use agent_storage::{Ended, ResponseParameters, RunRecord, RunStatus};
use serde::Deserialize;
use utoipa::ToSchema;

use super::client_tools::{self, ResponseTool};
use super::request::{Content, TurnRefusals, as_bad_request, bad, first_refusal, turn_request};
use super::response_calls::{self, Entry, Planned};
use super::response_input::{ResponseInput, input_entry, last_messages};
use super::response_object::{Echo, ResponseEvents, ResponseObject};
use super::{OpenAiErrorBody, agent_of_model, unix_now};
use crate::access::caller_name;
use crate::agents::ServedAgent;
use crate::backends::Backends;
use crate::dto::format::TextFormat;
use crate::error::{ApiError, ErrorCode};
use crate::history_cache::first_kept;
use crate::idempotency;
use crate::routes::pipeline::{self, Incoming, TurnRoutes, TurnWire, Valid};
use crate::runs::queue::{queued_response, run_of_response};
use crate::turn::{ContextChoice, Conversation, Finished, KeepResponse, TurnInput, WaitMode};

turn_request! {
/// A response request, as far as the agent takes it. Fields this table does not list are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ResponseRequest {
    /// The agent's model id (`GET /v1/models`).
    model: String,
    /// The user's message, or a conversation ending with it: messages of any role, after the
    /// previous response's conversation when `previous_response_id` names one. With `store`
    /// (the default) its user and assistant messages are stored with the turn, so a later
    /// `previous_response_id` continues from all of it; system and developer messages apply to
    /// this response only.
    input: ResponseInput,
    /// A system message for this response only (not carried over by `previous_response_id`).
    #[serde(default)]
    #[schema(nullable)]
    instructions: Option<String>,
    /// Continue the conversation of this response of yours (its latest).
    #[serde(default)]
    #[schema(nullable)]
    previous_response_id: Option<String>,
    /// Keep the turn and the response (default true); false keeps nothing but the usage.
    #[serde(default)]
    #[schema(nullable)]
    store: Option<bool>,
    /// Answer as `response.*` server-sent events.
    #[serde(default)]
    #[schema(nullable)]
    stream: Option<bool>,
    /// Most tokens each model call of the turn may produce (at most `AGENT_MODEL__MAX_TOKENS`).
    #[serde(default)]
    #[schema(nullable, minimum = 1)]
    max_output_tokens: Option<u32>,
    /// Echoed in the response; not used.
    #[serde(default)]
    #[schema(nullable)]
    metadata: Option<BTreeMap<String, String>>,
    /// Echoed in the response; not used.
    #[serde(default)]
    #[schema(nullable)]
    user: Option<String>,
    /// The form of the final answer: `{"format": {"type": "text" | "json_object" |
    /// "json_schema", ...}}`. Sent to the model with every call of the turn; the agent's tool
    /// calls stay free-form. A model server that cannot do it: 400 `response_format_unsupported`.
    #[serde(default)]
    #[schema(nullable)]
    text: Option<TextConfig>,
    /// `auto`: a conversation over the agent's context budget (`AGENT_CONTEXT__MAX_INPUT_TOKENS`)
    /// is sent without its oldest turns (or compacted, when the agent compacts), and a model's
    /// context-length refusal is retried once with less; `disabled`: it fails with 400
    /// `context_length_exceeded`, as does the model's refusal. Unset: the agent's context policy.
    #[serde(default)]
    #[schema(nullable)]
    truncation: Option<Truncation>,
    /// `[{"type": "compaction", "compact_threshold": N}]`: past N tokens (unset: the agent's
    /// budget) the oldest turns of a stored conversation are summarised into one message that
    /// stands in for them from then on (see the docs' "The context window"); no compaction item
    /// is added to the output. A conversation that is not stored is truncated instead.
    #[serde(default)]
    #[schema(nullable, max_items = 1)]
    context_management: Option<Vec<ContextManagement>>,
    /// Run the response in the background: answered at once with `status` `queued`; poll
    /// `GET /v1/responses/{id}`, resume its events with `?stream=true&starting_after=N`, or
    /// cancel it. With `stream`, its events are streamed as it runs (going away cancels
    /// nothing). Must be stored.
    #[serde(default)]
    #[schema(nullable)]
    background: Option<bool>,
    /// Refused when not empty: no extra output is available.
    #[serde(default)]
    #[schema(nullable, max_items = 0)]
    include: Option<Vec<String>>,
    /// The client's own function tools, offered to the model beside the agent's: a call to one
    /// ends the response with a `function_call` output item; the client answers it with a
    /// `function_call_output` input item. At most 128; a name of the agent's own tools is
    /// refused.
    #[serde(default)]
    #[schema(nullable, max_items = 128)]
    tools: Option<Vec<ResponseTool>>,
    /// Only `auto` (the default) or `none` (the client's tools are not offered).
    #[serde(default)]
    #[schema(nullable, value_type = Option<String>, pattern = "^(auto|none)$")]
    tool_choice: Option<serde_json::Value>,
    /// Whether the model may call several tools in one step (passed to the model server; its
    /// default when unset).
    #[serde(default)]
    #[schema(nullable)]
    parallel_tool_calls: Option<bool>,
}
}

/// `text`: the answer's format (other fields, such as `verbosity`, are ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TextConfig {
    #[serde(default)]
    #[schema(nullable)]
    format: Option<TextFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Truncation {
    Disabled,
    Auto,
}

/// An entry of `context_management`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ContextManagement {
    Compaction {
        /// Tokens past which the conversation is compacted (unset: the agent's budget).
        #[serde(default)]
        #[schema(nullable, minimum = 256, maximum = 10000000)]
        compact_threshold: Option<u64>,
    },
}

impl ResponseRequest {
    /// The context policy the request chose over `agent`'s.
    fn context_choice(&self, agent: &ServedAgent) -> Result<ContextChoice, ApiError> {
        let compaction = match self.context_management.as_deref() {
            None | Some([]) => None,
            Some([ContextManagement::Compaction { compact_threshold }]) => {
                if let Some(threshold) = compact_threshold
                    && !(256..=10_000_000).contains(threshold)
                {
                    return Err(bad(
                        "context_management",
                        "compact_threshold must be from 256 to 10000000 tokens",
                    ));
                }
                Some(*compact_threshold)
            }
            Some(_) => {
                return Err(bad(
                    "context_management",
                    "context_management holds at most one entry, {\"type\": \"compaction\"}",
                ));
            }
        };
        let compacts = agent.context.strategy == "compact";
        Ok(match (self.truncation, compaction) {
            (Some(Truncation::Disabled), Some(_)) => {
                return Err(bad(
                    "truncation",
                    "truncation \"disabled\" refuses to leave any history out, which compaction \
                     does: send one or the other",
                ));
            }
            (Some(Truncation::Disabled), None) => ContextChoice {
                strategy: Some(ContextStrategy::Fail),
                max_input_tokens: None,
            },
            (_, Some(threshold)) => ContextChoice {
                strategy: Some(ContextStrategy::Compact),
                max_input_tokens: threshold,
            },
            (Some(Truncation::Auto), None) if !compacts => ContextChoice {
                strategy: Some(ContextStrategy::Truncate),
                max_input_tokens: None,
            },
            _ => ContextChoice::default(),
        })
    }

    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        first_refusal([
            (
                self.background == Some(true) && self.store == Some(false),
                "background",
                "a background response must be stored (store: true)",
            ),
            (
                self.include
                    .as_ref()
                    .is_some_and(|include| !include.is_empty()),
                "include",
                "no extra output is available",
            ),
        ])
    }

    /// The turn, with the previous response's session (already looked up, the caller's) when
    /// one was named.
    async fn checked(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        let settings = incoming.settings();
        let caller = incoming.caller.as_str();
        let backends = &incoming.routes.backends;
        let agent = agent_of_model(&self.model, caller, &incoming.routes.turns)?;
        self.refuse_unsupported()?;
        let context = self.context_choice(&agent)?;
        let text_format = self.text.as_ref().and_then(|text| text.format.clone());
        let shared = self
            .shared()
            .sampling(("max_output_tokens", self.max_output_tokens), settings)?;
        let sampling = Sampling {
            response_format: text_format
                .as_ref()
                .map(|format| format.checked("text.format"))
                .transpose()
                .map_err(as_bad_request)?
                .unwrap_or_default(),
            parallel_tool_calls: self.parallel_tool_calls,
            ..shared
        };
        let store = self.store.unwrap_or(true);
        let background = self.background == Some(true);
        let client_tools = client_tools::checked(
            client_tools::of_responses(self.tools.as_deref()),
            self.tool_choice.as_ref(),
            &agent.agent,
        )
        .map_err(as_bad_request)?;
        let mut entries: Vec<Entry> = Vec::new();
        match &self.input {
            ResponseInput::Text(text) => {
                let text = Content::Text(text).text("input", settings.api.max_message_chars)?;
                entries.push(Entry::Message(Message::user(text)));
            }
            ResponseInput::Items(list) => {
                let last = list.len().saturating_sub(1);
                for (index, item) in list.iter().enumerate() {
                    let limit = if index == last {
                        settings.api.max_message_chars
                    } else {
                        usize::MAX
                    };
                    entries.push(input_entry(index, item, limit, incoming).await?);
                }
            }
        }
        if entries.is_empty() {
            return Err(bad("input", "input must hold at least the user's message"));
        }
        let previous = match &self.previous_response_id {
            None => None,
            Some(id) => Some(stored_response(backends, id, caller, "previous_response_id").await?),
        };
        // The conversation before this request, when it is read here (a stateless response
        // takes it as its history; a stored one only needs the calls it ended with).
        let before = match &previous {
            Some(previous) if !store => Some(previous_history(backends, previous, settings).await?),
            Some(previous) => Some(last_messages(backends, previous).await?),
            None => None,
        };
        let dangling = before
            .as_deref()
            .map(response_calls::dangling)
            .unwrap_or_default();
        let planned = response_calls::plan(entries, &dangling)?;
        let Planned {
            messages: earlier,
            message,
            approvals,
        } = planned;
        // A conversation ending with answers goes on from them: no new user message.
        let resume = message.is_none().then(|| agent_core::Resume {
            produced: Vec::new(),
            answers: approvals,
            usage: agent_core::TokenUsage::default(),
            steps: 0,
        });
        let message = message.unwrap_or_default();
        let mut instructions: Vec<Message> =
            self.instructions.iter().map(Message::system).collect();
        let (conversation, earlier) = if store {
            // The earlier messages join the conversation (after the previous response's, if
            // named) and are stored with the turn, so a later previous_response_id continues
            // from all of it; system and developer messages apply to this turn only.
            let (system, earlier): (Vec<Message>, Vec<Message>) = earlier
                .into_iter()
                .partition(|message| message.role == agent_core::Role::System);
            instructions.extend(system);
            let session = match &previous {
                Some(previous) => Conversation::Session {
                    session: previous.session.clone(),
                    new_session: false,
                    continues_from: Some(previous.sequence),
                },
                None => Conversation::Session {
                    session: SessionId::parse(&uuid::Uuid::new_v4().to_string())
                        .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?
                        .owned_by(caller),
                    new_session: true,
                    continues_from: None,
                },
            };
            (session, earlier)
        } else {
            let mut history = before.unwrap_or_default();
            history.extend(earlier);
            let given = Conversation::Given {
                caller: caller.to_owned(),
                history,
            };
            (given, Vec::new())
        };
        let parameters = ResponseParameters {
            model: self.model,
            instructions: self.instructions,
            previous_response_id: self.previous_response_id,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            max_output_tokens: self.max_output_tokens,
            user: self.user,
            metadata: self.metadata.unwrap_or_default(),
            text_format: text_format
                .map(serde_json::to_value)
                .transpose()
                .map_err(|error| ApiError::Internal(error.into()))?,
        };
        let echo = Echo {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created_at: unix_now(),
            store,
            parameters: Arc::new(parameters),
            truncation: match self.truncation {
                Some(Truncation::Disabled) => "disabled",
                _ => "auto",
            },
        };
        let keep = echo.store.then(|| echo.kept());
        let answered = echo.clone();
        Ok(Valid {
            background,
            input: TurnInput {
                agent,
                // `model` is required.
                agent_named: true,
                conversation,
                message,
                sampling,
                instructions,
                earlier,
                // Calls for the client end the response as output items.
                wait_mode: WaitMode::Answer,
                resume,
                client_tools,
                context,
            },
            stream: self
                .stream
                .unwrap_or(false)
                .then(|| ResponseEvents::new(echo)),
            answer: Arc::new(move |finished: &Finished| answered.completed(finished)),
            keep,
            header: None,
        })
    }
}

/// The caller's stored response `id`, or 404 `response_not_found` (another caller's too)
/// naming `param`, the request parameter that held the id.
pub(super) async fn stored_response(
    backends: &Backends,
    id: &str,
    caller: &str,
    param: &str,
) -> Result<agent_storage::StoredResponse, ApiError> {
    let found = backends.conversations.response(id).await?;
    found
        .filter(|response| response.session.owner() == caller)
        .ok_or_else(|| {
            ApiError::invalid_param(
                StatusCode::NOT_FOUND,
                ErrorCode::ResponseNotFound,
                param,
                format!("no stored response of yours has the id {id}"),
            )
        })
}

/// The conversation up to `previous` (its session's history window), for a turn that stores
/// nothing.
async fn previous_history(
    backends: &Backends,
    previous: &agent_storage::StoredResponse,
    settings: &Settings,
) -> Result<Vec<Message>, ApiError> {
    let stored = backends
        .conversations
        .recent_messages(&previous.session, agent_storage::MAX_HISTORY_WINDOW)
        .await?;
    let mut history: Vec<Message> = stored
        .into_iter()
        .filter(|message| message.sequence < previous.sequence)
        .map(|message| message.message)
        .collect();
    let keep = history.len().min(settings.turn.history_window);
    history.drain(..history.len() - keep);
    let first_kept = first_kept(history.iter().map(|message| message.role));
    history.drain(..first_kept);
    Ok(history)
}

/// Create a response: a turn of the agent in OpenAI's Responses API.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "openai",
    request_body = ResponseRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Run at most once; a retry with the same key and body gets the stored response (not with `stream`)")),
    responses(
        (status = 200, description = "`application/json`: the response object; with `stream: true`, `text/event-stream` of `response.*` events (`event: <type>`, `data: <JSON with that type>`): `response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, `response.completed`; or `response.failed` and `error` (nothing stored) if the turn fails after the stream began.",
            content(
                (ResponseObject = "application/json"),
                (ResponseObject = "text/event-stream"),
            )),
        (status = 404, description = "No such model (`model_not_found`), or no stored response of yours with `previous_response_id` (`response_not_found`)", body = OpenAiErrorBody),
        (status = 409, description = "The conversation went on after `previous_response_id` (`response_not_latest`), or it is busy (`session_busy`, `session_conflict`, `idempotency_key_in_progress`)", body = OpenAiErrorBody),
        TurnRefusals,
    )
)]
pub(crate) async fn post_responses(
    request: HttpRequest,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    pipeline::serve::<ResponseRequest>(request, body, routes).await
}

impl TurnWire for ResponseRequest {
    type Answer = ResponseObject;
    type Events = ResponseEvents;
    const KEY_NAMESPACE: &'static str = "responses:";

    fn reshape(error: ApiError) -> ApiError {
        as_bad_request(error)
    }

    fn fingerprint(&self, incoming: &Incoming<'_>) -> String {
        idempotency::fingerprint(&[&String::from_utf8_lossy(incoming.body)])
    }

    /// A background response is answered at once, `queued`, as OpenAI answers it.
    fn queued(_run: RunRecord, keep: Option<&KeepResponse>) -> (StatusCode, serde_json::Value) {
        let object = keep.map(|keep| Echo::of_kept(keep.clone()).unanswered("queued", None));
        (
            StatusCode::OK,
            serde_json::to_value(object).unwrap_or_default(),
        )
    }

    async fn validate(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        self.checked(incoming).await
    }
}

/// `GET /v1/responses/{id}`'s query: a background response's events, resumed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RetrieveQuery {
    /// Stream the events of a background response (from its start, or after `starting_after`),
    /// live until it ends.
    stream: Option<bool>,
    /// With `stream`: the `sequence_number` of the last event received.
    starting_after: Option<u64>,
}

/// A response of yours: a stored one as it was answered; a background one as it is now
/// (`queued`, `in_progress`, `completed`, `failed` or `cancelled`), or its events.
#[utoipa::path(
    get,
    path = "/v1/responses/{response_id}",
    tag = "openai",
    params(("response_id" = String, Path, description = "A response's id (`resp_…`)"), RetrieveQuery),
    responses(
        (status = 200, description = "The response object; with `stream=true` (a background response), `text/event-stream` of its `response.*` events after `starting_after`, as `POST /v1/responses` streams them",
            content(
                (ResponseObject = "application/json"),
                (ResponseObject = "text/event-stream"),
            )),
        (status = 400, description = "An invalid query, or `stream` for a response that did not run in the background (`invalid_request_error`)", body = OpenAiErrorBody),
        (status = 404, description = "No stored response of yours has this id (`response_not_found`)", body = OpenAiErrorBody),
        (status = 410, description = "`stream`: its events are no longer kept (`run_events_expired`)", body = OpenAiErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = OpenAiErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = OpenAiErrorBody),
    )
)]
pub(crate) async fn get_response(
    request: HttpRequest,
    id: Path<String>,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    // Read here, so that a bad query is a 400 as OpenAI answers it (not the API's 422).
    let query = Query::<RetrieveQuery>::from_query(request.query_string())
        .map_err(|error| bad("query", format!("query: {error}")))?;
    let caller = caller_name(&request);
    let backends = &routes.backends;
    let stream = query.stream.unwrap_or(false);
    if !stream && let Some(stored) = owned_response(backends, &id, &caller).await? {
        let (echo, finished) = Echo::stored(stored);
        return Ok(HttpResponse::Ok().json(echo.completed(&finished)));
    }
    let Some((run, echo)) = background_response(backends, &id, &caller).await? else {
        if stream && owned_response(backends, &id, &caller).await?.is_some() {
            return Err(bad(
                "stream",
                "only a background response's events can be streamed again",
            ));
        }
        return Err(response_not_found(&id, "response_id"));
    };
    if stream {
        crate::routes::runs::check_events_kept(&run, &routes.settings)?;
        let events = ResponseEvents::resuming(echo, query.starting_after);
        return Ok(crate::routes::runs::stream_run(&routes, run, None, events));
    }
    Ok(HttpResponse::Ok().json(as_it_is(backends, &run, &echo, &caller).await?))
}

/// Cancel a background response: it stops at once and nothing of it is stored; one that has
/// already ended is answered as it is.
#[utoipa::path(
    post,
    path = "/v1/responses/{response_id}/cancel",
    tag = "openai",
    params(("response_id" = String, Path, description = "A background response's id (`resp_…`)")),
    responses(
        (status = 200, description = "The response: `cancelled`, or as it ended before", body = ResponseObject),
        (status = 400, description = "The response did not run in the background (`invalid_request_error`)", body = OpenAiErrorBody),
        (status = 404, description = "No response of yours has this id (`response_not_found`)", body = OpenAiErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = OpenAiErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = OpenAiErrorBody),
    )
)]
pub(crate) async fn cancel_response(
    request: HttpRequest,
    id: Path<String>,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_name(&request);
    let backends = &routes.backends;
    let Some((run, echo)) = background_response(backends, &id, &caller).await? else {
        if owned_response(backends, &id, &caller).await?.is_some() {
            return Err(bad(
                "response_id",
                "only a background response can be cancelled",
            ));
        }
        return Err(response_not_found(&id, "response_id"));
    };
    let run = match crate::routes::runs::cancel(backends, &routes.turns, &run.id).await? {
        Ended::Now(run) | Ended::Already(run) => run,
        Ended::Missing => return Err(response_not_found(&id, "response_id")),
    };
    Ok(HttpResponse::Ok().json(as_it_is(backends, &run, &echo, &caller).await?))
}

/// The caller's stored response `id`, if there is one.
async fn owned_response(
    backends: &Backends,
    id: &str,
    caller: &str,
) -> Result<Option<agent_storage::StoredResponse>, ApiError> {
    let found = backends.conversations.response(id).await?;
    Ok(found.filter(|response| response.session.owner() == caller))
}

/// The caller's background response `id`: its run, and what it echoes.
async fn background_response(
    backends: &Backends,
    id: &str,
    caller: &str,
) -> Result<Option<(RunRecord, Echo)>, ApiError> {
    let Some(run_id) = run_of_response(id) else {
        return Ok(None);
    };
    let Some(run) = backends.runs.run(&run_id).await? else {
        return Ok(None);
    };
    if run.owner != caller || !run.background {
        return Ok(None);
    }
    let input = backends.runs.run_input(&run_id).await?;
    let kept = input.as_deref().and_then(queued_response);
    Ok(kept.map(|kept| (run, Echo::of_kept(kept.into()))))
}

/// A background response as it is now.
async fn as_it_is(
    backends: &Backends,
    run: &RunRecord,
    echo: &Echo,
    caller: &str,
) -> Result<ResponseObject, ApiError> {
    let error = run
        .error
        .as_ref()
        .map(|error| (error.code.clone(), error.message.clone()));
    Ok(match run.status {
        RunStatus::Queued => echo.unanswered("queued", None),
        RunStatus::InProgress | RunStatus::RequiresAction => echo.unanswered("in_progress", None),
        RunStatus::Failed => echo.unanswered("failed", error),
        RunStatus::Cancelled => echo.unanswered("cancelled", error),
        // Its turn stored the response, by the statement that completed the run.
        RunStatus::Completed => match owned_response(backends, &echo.id, caller).await? {
            Some(stored) => {
                let (echo, finished) = Echo::stored(stored);
                echo.completed(&finished)
            }
            None => return Err(response_not_found(&echo.id, "response_id")),
        },
    })
}

fn response_not_found(id: &str, param: &str) -> ApiError {
    ApiError::invalid_param(
        StatusCode::NOT_FOUND,
        ErrorCode::ResponseNotFound,
        param,
        format!("no stored response of yours has the id {id}"),
    )
}
