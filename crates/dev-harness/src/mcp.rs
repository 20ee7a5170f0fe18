//! MCP servers nobody here wrote, for the tests and checks of the MCP client: one on the official
//! Python SDK (`mcp/server.py`, PyPI `mcp` 2.x) and the reference server
//! `@modelcontextprotocol/server-everything` (npm, installed under `xtask/sdk/node`), each in its
//! Streamable HTTP mode on a port of its own, stopped when dropped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::{Spawned, free_port, wait_for_port};

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
}

impl McpServer {
    /// Starts `kind` on a free port and waits until it listens.
    pub fn start(kind: McpServerKind) -> anyhow::Result<Self> {
        let mut server = Self::stopped(kind)?;
        server.start_again()?;
        Ok(server)
    }

    /// `kind` with a port chosen but not started yet (a server that is down at first).
    pub fn stopped(kind: McpServerKind) -> anyhow::Result<Self> {
        Ok(Self {
            kind,
            port: free_port()?,
            process: None,
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
                let mut command = Command::new("python3");
                command
                    .arg(root.join("crates/dev-harness/mcp/server.py"))
                    .args(["--port", &port]);
                if let Some(token) = token {
                    command.args(["--token", token]);
                }
                command
            }
            McpServerKind::Everything => {
                let script = root.join(
                    "xtask/sdk/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
                );
                if !script.exists() {
                    bail!(
                        "{} is missing: run `npm ci --prefix xtask/sdk/node`",
                        script.display()
                    );
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

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
