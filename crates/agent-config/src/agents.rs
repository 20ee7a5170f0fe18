//! Several agents in one deployment: `[[agents]]` tables (each its instructions, model chain,
//! tools, limits and callers) and the `[[models]]` entries their chains name, validated into
//! [`AgentSettings`] and [`ModelEntry`]. A chain's name that is no `[[models]]` entry is that
//! model on the default model server. With no `[[agents]]`, the server makes one agent of the
//! global settings (as before agents existed).

use std::collections::BTreeMap;
use std::time::Duration;

use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::error::ConfigError;
use crate::keys;
use crate::settings::{ApiKey, ContextSettings};
use crate::tables::{RawHeader, bounded, duration, headers, http_url, invalid, read};

/// The key of the agent tables in the file.
pub(crate) const AGENTS_KEY: &str = "agents";
/// The key of the model tables in the file.
pub(crate) const MODELS_KEY: &str = "models";

/// A model a chain may name: where it is served and how it is called.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// What chains call it: 1 to 64 of `A-Z a-z 0-9 . _ : / -`.
    pub name: String,
    /// The OpenAI-compatible server (with its `/v1`).
    pub base_url: Url,
    /// The model's id on that server.
    pub model: String,
    /// Never printed.
    pub api_key: Option<SecretString>,
    /// The key was written in the file itself (warned about in production).
    pub inline_key: bool,
    /// Sent with every call; values from files are secrets.
    pub headers: Vec<(String, SecretString)>,
    /// Bound on one call; the global `model.request_timeout` when unset.
    pub request_timeout: Option<Duration>,
    /// Attempts of one call (retries included); the global `model.max_attempts` when unset.
    pub max_attempts: Option<u32>,
}

/// An agent: what it is called, what it says it does, and how it answers.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// 1 to 64 of `a-z 0-9 _ -`: how requests and OpenAI clients (`model`) name it.
    pub id: String,
    pub name: String,
    /// Shown to MCP and A2A clients.
    pub description: String,
    /// Its system prompt; the global `turn.system_prompt` when unset.
    pub instructions: Option<String>,
    /// The first model of its chain; the global model when unset.
    pub model: Option<String>,
    /// Tried in order when the one before fails (a timeout, a connection failure, 408, 429, 5xx).
    pub fallbacks: Vec<String>,
    /// Its tools (names or globs over built-in, HTTP and MCP tools); every tool when unset.
    pub tools: Option<Vec<String>>,
    /// Turn limits; the global ones when unset.
    pub max_steps: Option<usize>,
    pub turn_token_budget: Option<u64>,
    pub turn_deadline: Option<Duration>,
    pub temperature: Option<f32>,
    /// Who may use it; every caller when unset.
    pub callers: Option<Vec<String>>,
    /// Its context policy: its own `context` table over the global `context.*` keys.
    pub context: ContextSettings,
}

impl AgentSettings {
    /// The names of its model chain, first to last (the default model when it names none).
    pub fn chain<'a>(&'a self, default_model: &'a str) -> impl Iterator<Item = &'a str> {
        std::iter::once(self.model.as_deref().unwrap_or(default_model))
            .chain(self.fallbacks.iter().map(String::as_str))
    }

    /// Whether `caller` may use it.
    pub fn allows(&self, caller: &str) -> bool {
        self.callers
            .as_ref()
            .is_none_or(|callers| callers.iter().any(|allowed| allowed == caller))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    base_url: String,
    model: String,
    #[serde(default)]
    api_key: Option<RawText>,
    #[serde(default)]
    headers: BTreeMap<String, RawHeader>,
    #[serde(default)]
    request_timeout: Option<String>,
    #[serde(default)]
    max_attempts: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    instructions: Option<RawText>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    fallbacks: Vec<String>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    max_steps: Option<u64>,
    #[serde(default)]
    turn_token_budget: Option<u64>,
    #[serde(default)]
    turn_deadline: Option<String>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    callers: Option<Vec<String>>,
    #[serde(default)]
    context: Option<RawContext>,
}

/// An agent's `context` table: each key it sets replaces the global one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContext {
    #[serde(default)]
    max_input_tokens: Option<u64>,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    keep_recent_turns: Option<u64>,
    #[serde(default)]
    max_tool_result_tokens: Option<u64>,
    #[serde(default)]
    summarizer: Option<String>,
}

impl RawContext {
    /// `global` with this table's keys, each checked as its global key is.
    fn over(self, global: &ContextSettings, origin: &str) -> Result<ContextSettings, ConfigError> {
        let strategy = match self.strategy.as_deref() {
            None => global.strategy,
            Some(text) => ["truncate", "compact", "fail"]
                .into_iter()
                .find(|known| known.eq_ignore_ascii_case(text.trim()))
                .ok_or_else(|| {
                    invalid(
                        origin,
                        format!("context.strategy: '{text}' is none of truncate, compact, fail"),
                    )
                })?,
        };
        let whole = |key: &crate::Key, value: Option<u64>, default: u64| {
            bounded(origin, key, value, default)
        };
        Ok(ContextSettings {
            max_input_tokens: whole(
                &keys::CONTEXT_MAX_INPUT_TOKENS,
                self.max_input_tokens,
                global.max_input_tokens,
            )?,
            strategy,
            keep_recent_turns: usize::try_from(whole(
                &keys::CONTEXT_KEEP_RECENT_TURNS,
                self.keep_recent_turns,
                global.keep_recent_turns as u64,
            )?)
            .unwrap_or(usize::MAX),
            max_tool_result_tokens: whole(
                &keys::CONTEXT_MAX_TOOL_RESULT_TOKENS,
                self.max_tool_result_tokens,
                global.max_tool_result_tokens,
            )?,
            summarizer: self
                .summarizer
                .filter(|name| !name.trim().is_empty())
                .or_else(|| global.summarizer.clone()),
        })
    }
}

/// Text inline, or `{ file = "/path" }` (read at startup).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawText {
    Inline(String),
    File { file: String },
}

impl RawText {
    /// The text, and whether it was written inline.
    fn read(self, origin: &str, field: &str) -> Result<(String, bool), ConfigError> {
        match self {
            Self::Inline(text) => Ok((text, true)),
            Self::File { file } => std::fs::read_to_string(&file)
                .map(|text| (text, false))
                .map_err(|error| invalid(origin, format!("{field}: cannot read {file}: {error}"))),
        }
    }
}

/// An agent's id: 1 to 64 of `a-z 0-9 _ -`.
pub fn is_agent_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte))
}

/// A model entry's name: 1 to 128 of `A-Z a-z 0-9 . _ : / -`.
fn is_model_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._:/-".contains(&byte))
}

pub(crate) fn load_models(figment: &Figment, file: &str) -> Result<Vec<ModelEntry>, ConfigError> {
    let raw: Vec<RawModel> = read(figment, MODELS_KEY, file)?;
    let mut models: Vec<ModelEntry> = Vec::with_capacity(raw.len());
    for (index, model) in raw.into_iter().enumerate() {
        let origin = format!("{MODELS_KEY}[{index}] ({}) in {file}", model.name);
        if !is_model_name(&model.name) {
            return Err(invalid(
                &origin,
                "name must be 1 to 128 of A-Z, a-z, 0-9, '.', '_', ':', '/' and '-'",
            ));
        }
        if models.iter().any(|other| other.name == model.name) {
            return Err(invalid(&origin, "another model has the same name"));
        }
        if model.model.trim().is_empty() {
            return Err(invalid(&origin, "model must name the model on its server"));
        }
        let (api_key, inline_key) = match model.api_key {
            None => (None, false),
            Some(raw) => {
                let (key, inline) = raw.read(&origin, "api_key")?;
                (Some(SecretString::from(key.trim().to_owned())), inline)
            }
        };
        let request_timeout = model
            .request_timeout
            .map(|text| duration(&origin, &keys::MODELS_REQUEST_TIMEOUT, Some(text), None))
            .transpose()?;
        let max_attempts = model
            .max_attempts
            .map(|attempts| bounded(&origin, &keys::MODELS_MAX_ATTEMPTS, Some(attempts), 1))
            .transpose()?
            .map(|attempts| u32::try_from(attempts).unwrap_or(u32::MAX));
        models.push(ModelEntry {
            base_url: http_url(&origin, &model.base_url)?,
            model: model.model,
            api_key,
            inline_key,
            headers: headers(&origin, model.headers)?,
            request_timeout,
            max_attempts,
            name: model.name,
        });
    }
    Ok(models)
}

pub(crate) fn load_agents(
    figment: &Figment,
    file: &str,
    context: &ContextSettings,
) -> Result<Vec<AgentSettings>, ConfigError> {
    let raw: Vec<RawAgent> = read(figment, AGENTS_KEY, file)?;
    let mut agents: Vec<AgentSettings> = Vec::with_capacity(raw.len());
    for (index, agent) in raw.into_iter().enumerate() {
        let origin = format!("{AGENTS_KEY}[{index}] ({}) in {file}", agent.id);
        if !is_agent_id(&agent.id) {
            return Err(invalid(
                &origin,
                "id must be 1 to 64 of a-z, 0-9, '_' and '-'",
            ));
        }
        if agents.iter().any(|other| other.id == agent.id) {
            return Err(invalid(&origin, "another agent has the same id"));
        }
        let chain = agent.model.iter().chain(agent.fallbacks.iter());
        let mut seen: Vec<&String> = Vec::new();
        for name in chain {
            if !is_model_name(name) {
                return Err(invalid(
                    &origin,
                    format!("model chain: '{name}' is not a model name"),
                ));
            }
            if seen.contains(&name) {
                return Err(invalid(
                    &origin,
                    format!("model chain: '{name}' is named twice"),
                ));
            }
            seen.push(name);
        }
        if let Some(tools) = &agent.tools
            && let Some(empty) = tools.iter().position(|tool| tool.trim().is_empty())
        {
            return Err(invalid(&origin, format!("tools[{empty}] is empty")));
        }
        if let Some(callers) = &agent.callers
            && let Some(bad) = callers
                .iter()
                .find(|caller| !ApiKey::is_caller_name(caller))
        {
            return Err(invalid(
                &origin,
                format!("callers: '{bad}' is not a caller name (1 to 64 of A-Z a-z 0-9 . _ -)"),
            ));
        }
        if let Some(temperature) = agent.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err(invalid(&origin, "temperature must be 0 to 2"));
        }
        let instructions = agent
            .instructions
            .map(|raw| raw.read(&origin, "instructions").map(|(text, _)| text))
            .transpose()?;
        let max_steps = agent
            .max_steps
            .map(|steps| bounded(&origin, &keys::AGENTS_MAX_STEPS, Some(steps), 1))
            .transpose()?
            .map(|steps| usize::try_from(steps).unwrap_or(usize::MAX));
        let turn_token_budget = agent
            .turn_token_budget
            .map(|budget| bounded(&origin, &keys::AGENTS_TURN_TOKEN_BUDGET, Some(budget), 1))
            .transpose()?;
        let turn_deadline = agent
            .turn_deadline
            .map(|text| duration(&origin, &keys::AGENTS_TURN_DEADLINE, Some(text), None))
            .transpose()?;
        let context = match agent.context {
            None => context.clone(),
            Some(own) => own.over(context, &origin)?,
        };
        agents.push(AgentSettings {
            context,
            name: agent.name.unwrap_or_else(|| agent.id.clone()),
            description: agent.description.unwrap_or_default(),
            instructions,
            model: agent.model,
            fallbacks: agent.fallbacks,
            tools: agent.tools,
            max_steps,
            turn_token_budget,
            turn_deadline,
            temperature: agent.temperature,
            callers: agent.callers,
            id: agent.id,
        });
    }
    Ok(agents)
}

/// `default_agent` names one of `agents` (or is unset).
pub(crate) fn check_default(
    default_agent: Option<&str>,
    agents: &[AgentSettings],
) -> Result<(), ConfigError> {
    match default_agent {
        Some(_) if agents.is_empty() => Err(invalid(
            "default_agent",
            "names an agent, but the file declares no [[agents]]",
        )),
        Some(id) if !agents.iter().any(|agent| agent.id == id) => Err(invalid(
            "default_agent",
            format!(
                "'{id}' is no [[agents]] entry ({})",
                agents
                    .iter()
                    .map(|agent| agent.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}
