//! Which tool calls wait for the client's approval: each tool source's `require_approval` (the
//! built-in tools', each HTTP tool's, each MCP server's over its own names for its tools) as one
//! [`ApprovalPolicy`] over the names the model calls them by. Built once per process; none when
//! no source asks for approval, so a deployment without approvals pays nothing per call.

use std::collections::HashMap;
use std::sync::Arc;

use agent_config::{RequireApproval, Settings};
use agent_core::{ApprovalPolicy, ToolCall};

use crate::error::StartupError;

/// Who answers for a tool in an approval request (the Responses API's `server_label`): the MCP
/// server's name, or this for built-in and HTTP tools.
pub(crate) const AGENT_LABEL: &str = "agent";

/// What the model reads when a call needing approval is made where the client cannot be asked.
pub(crate) const UNAPPROVABLE: &str =
    "this tool needs the user's approval, which this API cannot ask for; it was not run";

#[derive(Debug)]
pub(crate) struct ToolApprovals {
    /// By the model's name of the tool: built-in and HTTP tools.
    agent_tools: HashMap<String, RequireApproval>,
    /// Each MCP server: its tools' prefix (`<prefix>__<tool>`), its name, its policy.
    servers: Vec<(String, String, RequireApproval)>,
}

impl ToolApprovals {
    /// The policy of `settings`, or none when no tool needs approval. `builtins`: the built-in
    /// tools' names (a `[builtin_tools]` policy naming another is refused).
    pub(crate) fn from_settings(
        settings: &Settings,
        builtins: &[String],
    ) -> Result<Option<Arc<Self>>, StartupError> {
        let builtin = &settings.builtin_approval;
        if let Some(unknown) = builtin.names().iter().find(|name| !builtins.contains(name)) {
            return Err(StartupError::Approvals(format!(
                "[builtin_tools] require_approval names '{unknown}', which is no built-in tool ({})",
                builtins.join(", ")
            )));
        }
        let mut agent_tools = HashMap::new();
        if !builtin.is_never() {
            for name in builtins {
                agent_tools.insert(name.clone(), builtin.clone());
            }
        }
        for tool in &settings.http_tools {
            if !tool.require_approval.is_never() {
                agent_tools.insert(tool.name.clone(), tool.require_approval.clone());
            }
        }
        let servers: Vec<(String, String, RequireApproval)> = settings
            .mcp_servers
            .iter()
            .filter(|server| !server.require_approval.is_never())
            .map(|server| {
                let prefix = format!("{}__", server.prefix);
                (prefix, server.name.clone(), server.require_approval.clone())
            })
            .collect();
        if agent_tools.is_empty() && servers.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self {
            agent_tools,
            servers,
        })))
    }

    /// The source answering for `tool` in an approval request (see [`AGENT_LABEL`]).
    pub(crate) fn label<'a>(&'a self, tool: &str) -> &'a str {
        self.server_of(tool)
            .map_or(AGENT_LABEL, |(_, name, _)| name.as_str())
    }

    fn server_of(&self, tool: &str) -> Option<&(String, String, RequireApproval)> {
        self.servers
            .iter()
            .find(|(prefix, _, _)| tool.starts_with(prefix.as_str()))
    }
}

impl ApprovalPolicy for ToolApprovals {
    fn needs_approval(&self, call: &ToolCall) -> bool {
        if let Some(policy) = self.agent_tools.get(&call.name) {
            return policy.applies(&call.name);
        }
        self.server_of(&call.name)
            .is_some_and(|(prefix, _, policy)| policy.applies(&call.name[prefix.len()..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments: "{}".into(),
        }
    }

    #[test]
    fn each_source_decides_for_its_own_tools_by_their_names() {
        let approvals = ToolApprovals {
            agent_tools: HashMap::from([(
                "calculator".to_owned(),
                RequireApproval::Only(vec!["calculator".into()]),
            )]),
            servers: vec![(
                "crm__".into(),
                "crm".into(),
                RequireApproval::Except(vec!["search".into()]),
            )],
        };
        assert!(approvals.needs_approval(&call("calculator")));
        assert!(!approvals.needs_approval(&call("current_time")));
        assert!(approvals.needs_approval(&call("crm__update")));
        assert!(!approvals.needs_approval(&call("crm__search")));
        assert!(!approvals.needs_approval(&call("docs__search")));
        assert_eq!(approvals.label("crm__update"), "crm");
        assert_eq!(approvals.label("calculator"), AGENT_LABEL);
    }
}
