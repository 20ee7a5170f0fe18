//! MCP servers nobody here wrote, for the tests and checks of the MCP client: one on the official
//! Python SDK (`mcp/server.py`, PyPI `mcp` 2.x in the provisioned venv) and the reference server
//! `@modelcontextprotocol/server-everything` (npm, provisioned under `xtask/sdk/node`), each in its
//! Streamable HTTP mode on a port of its own, stopped when dropped.

use std::process::Command;

use anyhow::{Context, bail};

use crate::process::{Spawned, free_port, wait_for_port};
use crate::test_tools::{TestTools, workspace_root};

/// Which server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpServerKind {
    /// `mcp/server.py`: tools add, echo, fail, wait and grow; a bearer token when given.
    Python { token: Option<String> },
    /// The reference server's `streamableHttp` mode (tools echo, get-sum, …).
    Everything,
}

/// An MCP server process on 127.0.0.1; it keeps its port across restarts.
#[derive(Debug)]
pub struct McpServer {
    kind: McpServerKind,
    port: u16,
    process: Option<Spawned>,
    tools: TestTools,
}

impl McpServer {
    /// Starts `kind` on a free port, with this checkout's test tools, and waits until it
    /// listens.
    pub fn start(kind: McpServerKind) -> anyhow::Result<Self> {
        Self::start_with(kind, TestTools::get()?)
    }

    /// Starts `kind` with the test tools `tools`.
    pub fn start_with(kind: McpServerKind, tools: &TestTools) -> anyhow::Result<Self> {
        let mut server = Self {
            kind,
            port: free_port()?,
            process: None,
            tools: tools.clone(),
        };
        server.start_again()?;
        Ok(server)
    }

    /// `kind` with a port chosen but not started yet (a server that is down at first).
    pub fn stopped(kind: McpServerKind) -> anyhow::Result<Self> {
        Ok(Self {
            kind,
            port: free_port()?,
            process: None,
            tools: TestTools::get()?.clone(),
        })
    }

    /// Its endpoint: `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts it (again) on its port and waits until it listens.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.process.is_some() {
            bail!("the MCP server is already running");
        }
        let root = workspace_root();
        let port = self.port.to_string();
        let mut command = match &self.kind {
            McpServerKind::Python { token } => {
                let mut command = Command::new(self.tools.python());
                command
                    .arg(root.join("crates/dev-harness/mcp/server.py"))
                    .args(["--port", &port]);
                if let Some(token) = token {
                    command.args(["--token", token]);
                }
                command
            }
            McpServerKind::Everything => {
                let script = self
                    .tools
                    .node_modules()
                    .join("@modelcontextprotocol/server-everything/dist/index.js");
                if !script.exists() {
                    bail!("{} is missing after npm ci", script.display());
                }
                let mut command = Command::new("node");
                command.arg(script).arg("streamableHttp").env("PORT", &port);
                command
            }
        };
        let log = std::env::temp_dir().join(format!("mcp-server-{port}.log"));
        self.process = Some(
            Spawned::start_logging(&mut command, &log)
                .with_context(|| format!("cannot start the MCP server {:?}", self.kind))?,
        );
        wait_for_port(self.port)
            .with_context(|| format!("the MCP server did not listen; see {}", log.display()))
    }

    /// Stops it with SIGTERM (and waits for it).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Kills it with SIGKILL (mid-call: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}
