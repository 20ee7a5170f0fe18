//! `GET /agents` and `GET /agents/{id}`: the agents a caller may use, each with what it says it
//! does, its tools now and the names of its model chain (never a model's address, headers or
//! key). An agent the caller may not use is not listed, and is 404 by its id.

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::access::caller_name;
use crate::agents::ServedAgent;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::turn::Turns;

/// The agents a caller may use.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentList {
    /// In configuration order.
    agents: Vec<AgentView>,
}

/// An agent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentView {
    /// How requests name it: `agent` on `/agent`, `model` on `/v1`.
    id: String,
    name: String,
    /// What it does (shown to MCP and A2A clients).
    description: String,
    /// Whether a request that names no agent gets it.
    default: bool,
    /// The tools it has now (an MCP server's tools only while the server offers them).
    tools: Vec<String>,
    /// Its model chain, by the configuration's names: the first answers, the next ones when the
    /// one before fails (a timeout, a connection failure, 408, 429, 5xx).
    models: Vec<String>,
}

impl AgentView {
    fn of(agent: &ServedAgent, default: bool) -> Self {
        Self {
            id: agent.id.clone(),
            name: agent.name.clone(),
            description: agent.description.clone(),
            default,
            tools: agent
                .agent
                .tools()
                .current()
                .specs()
                .iter()
                .map(|spec| spec.name.clone())
                .collect(),
            models: agent.models().map(str::to_owned).collect(),
        }
    }
}

/// The agents the caller may use.
#[utoipa::path(
    get,
    path = "/agents",
    tag = "agent",
    responses((status = 200, body = AgentList))
)]
pub(crate) async fn list_agents(request: HttpRequest, turns: Data<Turns>) -> HttpResponse {
    let caller = caller_name(&request);
    let default = &turns.agents.default_agent().id;
    HttpResponse::Ok().json(AgentList {
        agents: turns
            .agents
            .visible(&caller)
            .map(|agent| AgentView::of(agent, &agent.id == default))
            .collect(),
    })
}

/// One agent the caller may use.
#[utoipa::path(
    get,
    path = "/agents/{id}",
    tag = "agent",
    params(("id" = String, Path, description = "The agent's id")),
    responses(
        (status = 200, body = AgentView),
        (status = 404, description = "No agent of this id is available to the caller (`agent_not_found`)", body = ErrorBody),
    )
)]
pub(crate) async fn get_agent(
    request: HttpRequest,
    id: Path<String>,
    turns: Data<Turns>,
) -> Result<HttpResponse, ApiError> {
    let agent = turns
        .agents
        .choose(Some(&id), &caller_name(&request))
        .map_err(|missing| missing.into_error(ErrorCode::AgentNotFound, "id"))?;
    let default = turns.agents.default_agent().id == agent.id;
    Ok(HttpResponse::Ok().json(AgentView::of(&agent, default)))
}
