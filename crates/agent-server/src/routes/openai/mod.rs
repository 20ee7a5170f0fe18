//! The OpenAI-compatible API (`/v1/*`): the agent presented as a model to every OpenAI client
//! (the SDKs, LangChain's `ChatOpenAI`, chat UIs). OpenAI's shapes are a second public contract
//! beside `/agent`'s, so they have wire types of their own here, and errors on `/v1/*` take
//! OpenAI's error shape ([`reshape`]); turns run on the same runner as `/agent`.

mod chat;
mod chat_answer;
pub(crate) mod client_tools;
mod docs;
mod request;
mod response_calls;
mod response_input;
mod response_object;
mod responses;

use std::sync::{Arc, LazyLock};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::caller_name;
use crate::agents::ServedAgent;
use crate::error::{ApiError, ErrorCode, ErrorFacts};
use crate::turn::Turns;
pub(crate) use crate::turn::unix_now;

pub(crate) use chat::{__path_post_chat_completions, post_chat_completions};
pub(crate) use chat_answer::ChatCompletionChunk;
pub(crate) use docs::fit;
pub(crate) use responses::{
    __path_cancel_response, __path_get_response, __path_post_responses, cancel_response,
    get_response, post_responses,
};

/// The prefix of every route of this API.
pub(crate) const PREFIX: &str = "/v1/";

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    object: String,
    /// The agents the caller may use, each as a model.
    data: Vec<ModelObject>,
}

/// An agent as a model.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelObject {
    /// The agent's id (without `[[agents]]`: `AGENT_OPENAI_API__MODEL_ID`).
    id: String,
    /// Always `model`.
    object: String,
    /// When this server started, in seconds since the Unix epoch.
    created: u64,
    owned_by: String,
}

/// When this process first answered a `/v1/models` request: the models' `created`.
static STARTED: LazyLock<u64> = LazyLock::new(unix_now);

fn model_object(agent: &ServedAgent) -> ModelObject {
    ModelObject {
        id: agent.id.clone(),
        object: "model".into(),
        created: *STARTED,
        owned_by: "agent-server".into(),
    }
}

/// The models this server offers: the agents the caller may use.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses((status = 200, body = ModelList))
)]
pub(crate) async fn list_models(request: HttpRequest, turns: Data<Turns>) -> HttpResponse {
    let caller = caller_name(&request);
    HttpResponse::Ok().json(ModelList {
        object: "list".into(),
        data: turns
            .agents
            .visible(&caller)
            .map(|agent| model_object(agent))
            .collect(),
    })
}

/// One model: an agent, by its id.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "The agent's id (`GET /v1/models` lists them)")),
    responses(
        (status = 200, body = ModelObject),
        (status = 404, description = "No such model among the caller's agents (`model_not_found`)", body = OpenAiErrorBody),
    )
)]
pub(crate) async fn get_model(
    request: HttpRequest,
    model: Path<String>,
    turns: Data<Turns>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_of_model(&model, &caller_name(&request), &turns)?;
    Ok(HttpResponse::Ok().json(model_object(&agent)))
}

/// The agent `model` names, if `caller` may use it; else 404 `model_not_found`.
pub(crate) fn agent_of_model(
    model: &str,
    caller: &str,
    turns: &Turns,
) -> Result<Arc<ServedAgent>, ApiError> {
    turns
        .agents
        .choose(Some(model), caller)
        .map_err(|missing| missing.into_error(ErrorCode::ModelNotFound, "model"))
}

/// OpenAI's error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OpenAiErrorBody {
    pub(crate) error: OpenAiError,
}

/// OpenAI's error: what went wrong, its kind, the parameter at fault and a code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OpenAiError {
    pub(crate) message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error`,
    /// `insufficient_quota` or `server_error`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The request parameter at fault, if one is.
    pub(crate) param: Option<String>,
    /// OpenAI's code where it has one (`invalid_api_key`, `rate_limit_exceeded`,
    /// `insufficient_quota`, `model_not_found`, `context_length_exceeded`), else this server's
    /// error code (see `/agent`'s errors).
    pub(crate) code: Option<String>,
}

impl OpenAiError {
    /// An error of ours, in OpenAI's terms.
    pub(crate) fn of(status: StatusCode, facts: &ErrorFacts) -> Self {
        let kind = match (status.as_u16(), facts.code) {
            (_, ErrorCode::QuotaExceeded) => "insufficient_quota",
            (401, _) => "authentication_error",
            (403, _) => "permission_error",
            (429, _) => "rate_limit_error",
            (status, _) if status >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let code = match facts.code {
            ErrorCode::Unauthorized => "invalid_api_key".to_owned(),
            ErrorCode::RateLimited => "rate_limit_exceeded".to_owned(),
            ErrorCode::QuotaExceeded => "insufficient_quota".to_owned(),
            other => other.to_string(),
        };
        Self {
            message: facts.message.clone(),
            kind: kind.to_owned(),
            param: facts.param.clone(),
            code: Some(code),
        }
    }

    /// `error` as OpenAI's error.
    pub(crate) fn from_api(error: &ApiError) -> Self {
        let facts = ErrorFacts {
            code: error.code(),
            message: error.message(),
            param: error.param().map(str::to_owned),
        };
        Self::of(error.status_code(), &facts)
    }
}

/// A `/v1/*` error response in OpenAI's shape, with the same status and headers; any other
/// response unchanged. A quota refusal says `x-should-retry: false`: the OpenAI SDKs would
/// otherwise retry a 429 at once, however far away its `Retry-After` is.
pub(crate) fn reshape<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> ServiceResponse<EitherBody<B, BoxBody>> {
    let facts = response
        .response()
        .extensions()
        .get::<ErrorFacts>()
        .cloned();
    let Some(facts) = facts else {
        return response.map_into_left_body();
    };
    let status = response.status();
    let (request, old) = response.into_parts();
    let error = OpenAiError::of(status, &facts);
    let mut replacement = HttpResponse::build(status);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement.append_header((name.clone(), value.clone()));
        }
    }
    if facts.code == ErrorCode::QuotaExceeded {
        replacement.insert_header(("x-should-retry", "false"));
    }
    let replacement = replacement.json(OpenAiErrorBody { error });
    ServiceResponse::new(request, replacement).map_into_right_body()
}
