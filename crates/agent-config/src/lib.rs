//! Typed, validated settings for agent-server, layered with figment: embedded defaults, then an
//! optional TOML file (`AGENT_CONFIG`), then the environment (tutorial names and `AGENT_*`).
//!
//! The crate reads environment variables and files, nothing else. Secrets stay
//! [`secrecy::SecretString`] from here to the driver that uses them and are never printed.

mod agents;
mod approval;
mod derived;
mod entry_keys;
mod env;
mod error;
mod http_tools;
pub mod keys;
mod load;
mod mcp_servers;
mod settings;
mod tables;
#[cfg(test)]
mod tests;
mod webhooks;

pub use agents::{AgentSettings, ModelEntry, is_agent_id};
pub use approval::RequireApproval;
pub use error::ConfigError;
pub use keys::{KEYS, Key, Kind, reference_table};
pub use load::{EffectiveValue, Loaded, load, load_from, load_server_address};
pub use settings::{
    ApiKey, ApiSettings, ApiValues, ContextSettings, CorsSettings, HealthSettings,
    HttpToolDefaults, HttpToolSettings, LogFormat, LogSettings, McpServerSettings, ModelProvider,
    ModelSettings, ModelValues, OpenAiApiSettings, OpenAiApiValues, Profile, RateLimitSettings,
    RunSettings, SamplerRoot, ServerSettings, Settings, StorageSettings, TokenQuotas, TraceSampler,
    TraceSettings, TurnSettings, WebhookDelivery, WebhookSettings,
};
/// The URL type of the settings (`HttpToolSettings::url`, `McpServerSettings::url`).
pub use url::Url;
pub use webhooks::{WEBHOOK_EVENTS, signing_key};
