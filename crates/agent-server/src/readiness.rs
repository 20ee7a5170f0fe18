//! The readiness checks of the agents' dependencies besides storage: each MCP server, and each
//! model of the agents' chains.

use std::sync::Arc;
use std::time::Duration;

use agent_config::Settings;
use agent_core::McpTools;
use agent_health::{Criticality, HealthCheck};

/// One readiness check per MCP server, `mcp:<name>`: connected, answering a ping within its
/// connect timeout, every listed tool offered. Critical for a `required` server; otherwise a
/// failure reports the service degraded.
pub(crate) fn mcp_checks(settings: &Settings, mcp: &Arc<McpTools>) -> Vec<HealthCheck> {
    settings
        .mcp_servers
        .iter()
        .map(|server| {
            let mcp = Arc::clone(mcp);
            let name = server.name.clone();
            HealthCheck::new(
                format!("mcp:{}", server.name),
                if server.required {
                    Criticality::Critical
                } else {
                    Criticality::Optional
                },
                server.connect_timeout,
                move || {
                    let mcp = Arc::clone(&mcp);
                    let name = name.clone();
                    async move { mcp.check(&name).await }
                },
            )
        })
        .collect()
}

/// One readiness check per model of the agents' chains that a server serves, `model:<name>` (the
/// server answers `GET /models`: no tokens spent), and one per agent whose chain has more than one
/// model, `agent:<id>`, up while any of its models is. Optional: a model provider's outage is every
/// replica's, so it reports the service degraded rather than taking replicas out of rotation.
pub(crate) fn model_checks(agents: &crate::agents::Agents, timeout: Duration) -> Vec<HealthCheck> {
    let mut checks: Vec<HealthCheck> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for agent in agents.all() {
        for (name, model) in agent.chain.models() {
            // A model in the process (the offline one) has no server to check.
            if seen.contains(&name) || model.identity().server_address.is_none() {
                continue;
            }
            seen.push(name);
            let model = Arc::clone(model);
            checks.push(HealthCheck::new(
                format!("model:{name}"),
                Criticality::Optional,
                timeout,
                move || {
                    let model = Arc::clone(&model);
                    async move { model.check().await }
                },
            ));
        }
        if agent.models().nth(1).is_some() {
            let chain = Arc::clone(&agent.chain);
            checks.push(HealthCheck::new(
                format!("agent:{}", agent.id),
                Criticality::Optional,
                timeout,
                move || {
                    let chain = Arc::clone(&chain);
                    async move { agent_core::ChatModel::check(chain.as_ref()).await }
                },
            ));
        }
    }
    checks
}
