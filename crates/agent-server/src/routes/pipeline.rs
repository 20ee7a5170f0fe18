//! One pipeline for every route that runs a turn (`/agent`, `/agent/stream`,
//! `/v1/chat/completions`, `/v1/responses`): parse the body → read the `Idempotency-Key` →
//! validate (the route's [`TurnWire`]) → refuse a stream with a key → admit → stream the turn, or
//! run it (at most once per key) → answer, with `Idempotent-Replayed` and the route's header.
//! The routes differ in their wire types and rendering only; everything else is here.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::access::caller_name;
use crate::admission::TurnSlot;
use crate::backends::Backends;
use crate::dto::parse_json;
use crate::dto::runs::RunView;
use crate::error::{ApiError, ErrorCode};
use crate::failure_log::FailureLog;
use crate::idempotency::{self, Once};
use crate::routes::turn_stream::{self, EventFormat};
use crate::runs::executor::{Mode, execute};
use crate::turn::{ClaimToComplete, Extras, Finished, KeepResponse, TurnInput, Turns, render_as};
use agent_storage::RunRecord;

/// What the turn routes run on: one extractor for all of them. One per worker.
#[derive(Debug, Clone)]
pub(crate) struct TurnRoutes {
    pub(crate) turns: Arc<Turns>,
    pub(crate) backends: Backends,
    pub(crate) settings: Arc<Settings>,
    /// Turns true when the drain window ends: open streams are closed.
    pub(crate) drain: watch::Receiver<bool>,
    /// Where a stream's failures are logged (the middleware logs the others).
    pub(crate) failures: Arc<FailureLog>,
}

/// A request while its wire type reads it.
pub(crate) struct Incoming<'a> {
    pub(crate) request: &'a HttpRequest,
    pub(crate) body: &'a [u8],
    /// Who sent it (see [`crate::access`]).
    pub(crate) caller: String,
    pub(crate) routes: &'a TurnRoutes,
}

impl Incoming<'_> {
    pub(crate) fn settings(&self) -> &Settings {
        &self.routes.settings
    }
}

/// A route's request type: how it is checked into a turn, and how the turn's answer is written.
pub(crate) trait TurnWire: DeserializeOwned + Sized {
    /// The answer of a stored turn (also what a retry with the same `Idempotency-Key` replays).
    type Answer: Serialize + 'static;
    /// How the route streams a turn.
    type Events: EventFormat;
    /// Keeps this route's idempotency keys apart from the other routes' (their answers differ).
    const KEY_NAMESPACE: &'static str;

    /// Refuses the request before its body is read (a route turned off).
    fn available(_settings: &Settings) -> Result<(), ApiError> {
        Ok(())
    }

    /// This API's form of a refusal of the body (the OpenAI-compatible routes answer 400 where
    /// `/agent` answers 422).
    fn reshape(error: ApiError) -> ApiError {
        error
    }

    /// What makes two requests with one `Idempotency-Key` the same request.
    fn fingerprint(&self, incoming: &Incoming<'_>) -> String;

    /// The answer to a request whose run was queued (`background`): `202` with the run (its
    /// `Location` added), as `/agent` answers.
    fn queued(run: RunRecord, _keep: Option<&KeepResponse>) -> (StatusCode, serde_json::Value) {
        let view = serde_json::to_value(RunView::from(run)).unwrap_or_default();
        (StatusCode::ACCEPTED, view)
    }

    /// The turn to run and how to answer it, or the first refusal.
    fn validate(
        self,
        incoming: &Incoming<'_>,
    ) -> impl Future<Output = Result<Valid<Self>, ApiError>>;
}

/// A checked request: the turn, and how to answer it.
pub(crate) struct Valid<W: TurnWire> {
    pub(crate) input: TurnInput,
    /// Some: answer as server-sent events in this format.
    pub(crate) stream: Option<W::Events>,
    /// The answer of the stored turn.
    pub(crate) answer: Answer<W::Answer>,
    /// A response object the turn's store keeps (the Responses API).
    pub(crate) keep: Option<KeepResponse>,
    /// A header every answer carries (the chat completions' `X-Session-Id`).
    pub(crate) header: Option<(HeaderName, HeaderValue)>,
    /// Queue the run (see [`crate::runs::queue`]): answer `202` with it, or stream its events.
    pub(crate) background: bool,
}

/// How a route answers a stored turn.
pub(crate) type Answer<R> = Arc<dyn Fn(&Finished) -> R + Send + Sync>;

/// Serves one turn request of the route `W` (see the module doc).
pub(crate) async fn serve<W: TurnWire>(
    request: HttpRequest,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    W::available(&routes.settings)?;
    let parsed: W = parse_json(&request, &body).map_err(W::reshape)?;
    let key = idempotency::key_of(&request)?;
    let incoming = Incoming {
        request: &request,
        body: &body,
        caller: caller_name(&request),
        routes: &routes,
    };
    let fingerprint = key.as_ref().map(|_| parsed.fingerprint(&incoming));
    let valid = parsed.validate(&incoming).await?;
    if valid.stream.is_some() && key.is_some() {
        return Err(ApiError::invalid_param(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "Idempotency-Key",
            "Idempotency-Key is not supported with a streamed answer (a stream cannot be replayed)",
        ));
    }
    let Valid {
        input,
        stream,
        answer,
        keep,
        header,
        background,
    } = valid;
    if background {
        let mut response =
            queue::<W>(&routes, &request, input, stream, keep, key.zip(fingerprint)).await?;
        if let Some((name, value)) = header {
            response.headers_mut().insert(name, value);
        }
        return Ok(response);
    }
    let slot = routes.turns.admit()?;
    let extras = Extras {
        claim: None,
        response: keep,
    };
    let mut response = match (stream, key.zip(fingerprint)) {
        (Some(events), _) => {
            // Refusals up to here are plain answers; from here on they are events.
            let prepared = routes.turns.prepare(input, slot).await?;
            let execution = execute(&routes.turns, prepared, extras, Mode::Streaming);
            turn_stream::respond(&routes, execution, events)
        }
        (None, None) => {
            let (finished, _) = run(&routes, input, slot, extras).await?;
            let mut response = HttpResponse::Ok();
            if let Some(model) = model_header(&finished) {
                response.insert_header(model);
            }
            response.json(answer(&finished))
        }
        (None, Some((key, fingerprint))) => {
            let key = idempotency::scoped(&request, W::KEY_NAMESPACE, &key);
            let settings = &routes.settings;
            // A retry may wait for the first request's lock and turn.
            let lease = settings.turn.turn_deadline + routes.turns.lock_wait() + LEASE_MARGIN;
            let retention = settings.api.idempotency_retention;
            let rendered = Arc::clone(&answer);
            let extras = Extras {
                claim: Some(ClaimToComplete {
                    key: key.clone(),
                    retention,
                    render: render_as(move |finished: &Finished| rendered(finished)),
                }),
                ..extras
            };
            let answered_by = std::sync::OnceLock::new();
            let once = idempotency::run_once(
                &routes.backends,
                &key,
                &fingerprint,
                lease,
                retention,
                || async {
                    let (finished, completed) = run(&routes, input, slot, extras).await?;
                    if let Some(model) = model_header(&finished) {
                        let _ = answered_by.set(model);
                    }
                    Ok((answer(&finished), completed))
                },
            )
            .await?;
            match once {
                Once::Ran(answer) => {
                    let mut response = HttpResponse::Ok();
                    if let Some(model) = answered_by.into_inner() {
                        response.insert_header(model);
                    }
                    response.json(answer)
                }
                Once::Replayed(stored) => HttpResponse::Ok()
                    .insert_header(("Idempotent-Replayed", "true"))
                    .content_type("application/json")
                    .body(stored),
            }
        }
    };
    if let Some((name, value)) = header {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// `x-agent-model`: the model of the agent's chain that answered the turn's last call.
pub(crate) const MODEL_HEADER: &str = "x-agent-model";

fn model_header(finished: &Finished) -> Option<(HeaderName, HeaderValue)> {
    let value = HeaderValue::from_str(finished.model.as_deref()?).ok()?;
    Some((HeaderName::from_static(MODEL_HEADER), value))
}

/// Queues a background run: answers the route's answer to a queued run ([`TurnWire::queued`];
/// once per `Idempotency-Key`, a retry getting the same run), or streams its events.
async fn queue<W: TurnWire>(
    routes: &TurnRoutes,
    request: &HttpRequest,
    input: TurnInput,
    stream: Option<W::Events>,
    keep: Option<KeepResponse>,
    key: Option<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_name(request);
    if let Some(events) = stream {
        let queued = routes.turns.enqueue(input, &caller, keep).await?;
        return Ok(crate::routes::runs::stream_run(
            routes, queued, None, events,
        ));
    }
    let answer = |run: RunRecord| {
        let (status, body) = W::queued(run, keep.as_ref());
        (status.as_u16(), body)
    };
    let Some((key, fingerprint)) = key else {
        let queued = routes.turns.enqueue(input, &caller, keep.clone()).await?;
        return Ok(queued_response(answer(queued), false));
    };
    let namespace = format!("{}{BACKGROUND_KEYS}", W::KEY_NAMESPACE);
    let key = idempotency::scoped(request, &namespace, &key);
    let once = idempotency::run_once(
        &routes.backends,
        &key,
        &fingerprint,
        routes.turns.lock_wait() + LEASE_MARGIN,
        routes.settings.api.idempotency_retention,
        || async {
            let queued = routes.turns.enqueue(input, &caller, keep.clone()).await?;
            Ok((answer(queued), false))
        },
    )
    .await?;
    Ok(match once {
        Once::Ran(answer) => queued_response(answer, false),
        // The run as it was queued (its state now is at its `Location`).
        Once::Replayed(stored) => {
            let answer: (u16, serde_json::Value) =
                serde_json::from_str(&stored).map_err(|error| ApiError::Internal(error.into()))?;
            queued_response(answer, true)
        }
    })
}

/// The answer to a queued run (status, body): a `202` points at it (`Location: /runs/{id}`).
fn queued_response((status, body): (u16, serde_json::Value), replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = HttpResponse::build(status);
    if status == StatusCode::ACCEPTED
        && let Some(id) = body["run_id"].as_str()
    {
        response.insert_header((actix_web::http::header::LOCATION, format!("/runs/{id}")));
    }
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.json(body)
}

/// Keeps background requests' idempotency keys apart from the same route's blocking ones (their
/// answers differ: a run, not a turn's answer).
const BACKGROUND_KEYS: &str = "background";

/// A whole blocking run: prepared here, executed apart from this request (which waits for it;
/// its going away cancels the run).
async fn run(
    routes: &TurnRoutes,
    input: TurnInput,
    slot: TurnSlot,
    extras: Extras,
) -> Result<(Finished, bool), ApiError> {
    let prepared = routes.turns.prepare(input, slot).await?;
    execute(&routes.turns, prepared, extras, Mode::Blocking)
        .outcome()
        .await
}

/// How much longer than a turn (and its wait for the lock) a claim is held.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
