//! The agents this deployment serves: one per `[[agents]]` entry (its instructions, model chain,
//! tools, limits and callers), or one made of the global settings when there is none, with the
//! id `AGENT_OPENAI_API__MODEL_ID`. A request names its agent (`agent` on `/agent`, `model` on
//! `/v1`) or gets the default one; an agent a caller may not use is, to that caller, no agent
//! at all (404). Choosing is a lookup: every agent is built at startup, per worker.

use std::sync::Arc;

use agent_config::AgentSettings;
use agent_core::{Agent, ModelChain, ToolRegistry};

use crate::error::{ApiError, ErrorCode};

/// One agent as it is served: its settings (`id`, `name`, `description`, `callers`, … through
/// `Deref`), its model chain and the agent that runs its turns.
#[derive(Debug)]
pub(crate) struct ServedAgent {
    settings: AgentSettings,
    /// Its model chain (the agent calls it; readiness checks each model).
    pub(crate) chain: Arc<ModelChain>,
    pub(crate) agent: Agent,
}

impl ServedAgent {
    pub(crate) fn new(settings: AgentSettings, chain: Arc<ModelChain>, agent: Agent) -> Self {
        Self {
            settings,
            chain,
            agent,
        }
    }

    /// The names of its model chain, first to last.
    pub(crate) fn models(&self) -> impl Iterator<Item = &str> {
        self.chain.names()
    }
}

impl std::ops::Deref for ServedAgent {
    type Target = AgentSettings;

    fn deref(&self) -> &AgentSettings {
        &self.settings
    }
}

/// Every agent served, and which one a request that names none gets. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Agents {
    list: Arc<[Arc<ServedAgent>]>,
    default: usize,
    /// Every tool of the deployment, whichever agent has it (`GET /tools`).
    all_tools: Arc<ToolRegistry>,
}

/// Why no agent was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoSuchAgent {
    /// The id asked for (none: the default one, which the caller may not use).
    pub(crate) requested: Option<String>,
}

impl NoSuchAgent {
    /// The API's error: 404 with `code` (`agent_not_found`, or `model_not_found` on `/v1`)
    /// naming the field the id came from.
    pub(crate) fn into_error(self, code: ErrorCode, field: &str) -> ApiError {
        let message = match &self.requested {
            Some(id) => format!("there is no agent `{id}` (GET /agents lists yours)"),
            None => format!(
                "the default agent is not available to you: name one in `{field}` (GET /agents \
                 lists yours)"
            ),
        };
        ApiError::invalid_param(actix_web::http::StatusCode::NOT_FOUND, code, field, message)
    }
}

impl Agents {
    /// `list` has at least one agent; `default` indexes it.
    pub(crate) fn new(
        list: Vec<Arc<ServedAgent>>,
        default: usize,
        all_tools: Arc<ToolRegistry>,
    ) -> Self {
        assert!(default < list.len(), "the default agent is one of the list");
        Self {
            list: list.into(),
            default,
            all_tools,
        }
    }

    /// The agent a request that names none gets.
    pub(crate) fn default_agent(&self) -> &Arc<ServedAgent> {
        &self.list[self.default]
    }

    /// The agent of this id, whoever may use it (a stored run's, chosen when it was asked for).
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<ServedAgent>> {
        self.list.iter().find(|agent| agent.id == id)
    }

    /// The agent a stored run was asked of (none: stored before agents were named, the default
    /// one); a run of an agent no longer served cannot go on.
    pub(crate) fn of_run(&self, id: Option<&str>) -> Result<Arc<ServedAgent>, String> {
        match id {
            None => Ok(Arc::clone(self.default_agent())),
            Some(id) => self
                .get(id)
                .cloned()
                .ok_or_else(|| format!("the run's agent `{id}` is no longer served")),
        }
    }

    /// The agent `requested` (or the default one) if `caller` may use it.
    pub(crate) fn choose(
        &self,
        requested: Option<&str>,
        caller: &str,
    ) -> Result<Arc<ServedAgent>, NoSuchAgent> {
        let found = match requested {
            Some(id) => self.get(id),
            None => Some(self.default_agent()),
        };
        found
            .filter(|agent| agent.allows(caller))
            .cloned()
            .ok_or_else(|| NoSuchAgent {
                requested: requested.map(str::to_owned),
            })
    }

    /// The agent of a turn on a session that belongs to `session_agent` (none: no turn yet, or
    /// stored before agents were named): the chosen one when the request `named` it (`409
    /// session_agent_mismatch` if the session is another's), else the session's own.
    pub(crate) fn for_session(
        &self,
        chosen: Arc<ServedAgent>,
        named: bool,
        session_agent: Option<&str>,
        caller: &str,
    ) -> Result<Arc<ServedAgent>, ApiError> {
        match session_agent {
            None => Ok(chosen),
            Some(own) if own == chosen.id => Ok(chosen),
            Some(own) if named => Err(ApiError::Conflict {
                code: ErrorCode::SessionAgentMismatch,
                message: format!(
                    "this session belongs to the agent `{own}`, not `{}`: a session keeps the \
                     agent of its first turn (name `{own}`, or none, or start a new session)",
                    chosen.id
                ),
            }),
            Some(own) => self
                .choose(Some(own), caller)
                .map_err(|missing| missing.into_error(ErrorCode::AgentNotFound, "agent")),
        }
    }

    /// Every agent, in configuration order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<ServedAgent>> {
        self.list.iter()
    }

    /// The agents `caller` may use, in configuration order.
    pub(crate) fn visible<'a>(
        &'a self,
        caller: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ServedAgent>> + 'a {
        self.list.iter().filter(move |agent| agent.allows(caller))
    }

    /// Every tool of the deployment.
    pub(crate) fn all_tools(&self) -> &ToolRegistry {
        &self.all_tools
    }
}
