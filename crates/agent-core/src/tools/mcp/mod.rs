//! MCP servers as tool sources. [`McpTools`] keeps one connection per configured server for the
//! whole process, shared by every worker: it connects and lists the tools at startup (bounded),
//! retries a server that is down with backoff, re-lists on `tools/list_changed` and on a
//! periodic refresh, and publishes a [`Catalog`] the registries read at each turn's start.
//! This is the one kind of work in agent-core that outlives a turn; it stops with
//! [`McpTools::stop`]. A tool call runs inside its turn and is cancelled with it.

mod client;
mod content;
mod names;
mod tool;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use metrics::{Gauge, Label, Recorder};
use rmcp::model::{ClientRequest, PingRequest};
use rmcp::service::{Peer, RoleClient};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::Registered;
use crate::error::ToolError;
use crate::metrics::owned;
use client::{Connection, Handler};
use tool::{CallMetrics, McpTool};

/// The first retry of a server that is down; doubled each time up to [`MAX_BACKOFF`] (and
/// jittered: [`crate::backoff`]).
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long stopping waits for each connection to close its session.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// An MCP server as the embedder configured it.
#[derive(Debug, Clone)]
pub struct McpServerOptions {
    pub name: String,
    /// Its Streamable HTTP endpoint; the only URL contacted for it.
    pub url: Url,
    /// Sent with every request (bearer tokens); never logged.
    pub headers: Vec<(String, SecretString)>,
    /// Bounds each tool call and each listing.
    pub timeout: Duration,
    /// Bounds connecting and the `initialize` handshake.
    pub connect_timeout: Duration,
    /// Only these tools (by the server's names), when given.
    pub tools: Option<Vec<String>>,
    /// Tools are named `<prefix>__<tool>`.
    pub prefix: String,
    /// A failing server makes readiness fail (rather than degraded).
    pub required: bool,
    /// The tool message is cut to this size.
    pub max_result_bytes: usize,
    /// How often the tool list is fetched again besides `tools/list_changed`.
    pub refresh_interval: Duration,
}

/// The MCP tools offered at one moment; a registry rebuilds its tool set when `generation` moves.
#[derive(Debug, Default)]
pub struct Catalog {
    pub(crate) generation: u64,
    pub(crate) tools: Vec<Arc<Registered>>,
}

/// How a server is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpServerState {
    /// Not connected yet, or reconnecting.
    Connecting,
    Connected,
    /// The last attempt failed with `error`; retried with backoff.
    Down {
        error: String,
    },
}

/// One listed tool of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpToolStatus {
    /// The agent's name for it.
    pub name: String,
    /// The server's name for it (what is called).
    pub original: String,
    pub description: String,
    /// Why it is not offered to the model (a name taken, an invalid schema), if it is not.
    pub left_out: Option<String>,
}

/// A server and its tools, as `GET /tools` and readiness report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerStatus {
    pub name: String,
    pub required: bool,
    pub state: McpServerState,
    pub tools: Vec<McpToolStatus>,
}

/// Every configured MCP server's connection and tools, shared by the process.
pub struct McpTools {
    servers: Vec<Arc<Server>>,
    /// The fixed tools' names, which MCP tools never shadow.
    reserved: Vec<String>,
    catalog: RwLock<Arc<Catalog>>,
    /// Serialises rebuilds, so a newer catalog never loses to an older one, and keeps the status
    /// from reading a server's new list before its catalog is built.
    rebuild: Mutex<()>,
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set when [`Self::wait_started`] returns: a collision after it leaves a tool out, before
    /// it fails the startup.
    started: AtomicBool,
}

impl std::fmt::Debug for McpTools {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("McpTools")
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

struct Server {
    options: McpServerOptions,
    state: Mutex<ServerState>,
    list_changed: Arc<Notify>,
    /// A call or a ping found the connection broken: reconnect (with backoff).
    lost: Notify,
    /// A call timed out: ping, and reconnect if the ping fails too.
    suspect: Notify,
    /// Set once the first attempt to connect and list ended, either way.
    attempted: watch::Sender<bool>,
    connected: Gauge,
    offered: Gauge,
}

#[derive(Default)]
struct ServerState {
    connection: Option<Peer<RoleClient>>,
    /// Why the server is not connected; `None` while connecting.
    error: Option<String>,
    /// The tools as listed last (after the allowlist), to tell a changed list.
    listed: Vec<rmcp::model::Tool>,
    /// The listed tools, built: (agent name, original name, the tool or why it is unusable).
    built: Vec<(String, String, Result<Arc<Registered>, String>)>,
    /// Listed tools the last rebuild left out, by agent name, with the reason.
    left_out: HashMap<String, String>,
    /// Names taken by another source when this server's tools were first published (an error
    /// at startup): (name, the other owner).
    collisions: Vec<(String, String)>,
}

impl McpTools {
    /// Starts a connection task per server (each connects, lists its tools and keeps them
    /// current) and returns at once; [`Self::wait_started`] waits for the first attempts.
    /// `reserved` are the fixed tools' names. Must be called within a Tokio runtime; the tasks
    /// run on it.
    pub fn start(
        servers: Vec<McpServerOptions>,
        reserved: Vec<String>,
        recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    ) -> Arc<Self> {
        let servers: Vec<Arc<Server>> = servers
            .into_iter()
            .map(|options| {
                let labels = || vec![Label::new("server", options.name.clone())];
                let gauge = |name| match &recorder {
                    Some(recorder) => {
                        recorder.register_gauge(&owned(name, labels()), &crate::metrics::METADATA)
                    }
                    None => Gauge::noop(),
                };
                Arc::new(Server {
                    connected: gauge("agent_mcp_server_connected"),
                    offered: gauge("agent_mcp_tools"),
                    options,
                    state: Mutex::new(ServerState::default()),
                    list_changed: Arc::new(Notify::new()),
                    lost: Notify::new(),
                    suspect: Notify::new(),
                    attempted: watch::Sender::new(false),
                })
            })
            .collect();
        let tools = Arc::new(Self {
            servers,
            reserved,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            rebuild: Mutex::new(()),
            recorder,
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
        });
        let tasks = tools
            .servers
            .iter()
            .map(|server| tokio::spawn(Arc::clone(&tools).keep_connected(Arc::clone(server))))
            .collect();
        *lock(&tools.tasks) = tasks;
        tools
    }

    /// Waits until every server was tried once (connected and listed, or failed), each bounded
    /// by its connect timeout plus its timeout. A name collision among the tools published by
    /// then is an error naming both owners; a server that is down is not (it is retried).
    pub async fn wait_started(&self) -> Result<(), ToolError> {
        // Concurrently: the startup waits for the slowest server, not for their sum.
        futures_util::future::join_all(self.servers.iter().map(|server| async {
            let bound = server.options.connect_timeout + server.options.timeout + MIN_BACKOFF;
            let mut attempted = server.attempted.subscribe();
            let _ = tokio::time::timeout(bound, attempted.wait_for(|done| *done)).await;
        }))
        .await;
        self.started.store(true, Ordering::Relaxed);
        for server in &self.servers {
            let state = lock(&server.state);
            if let Some((name, owner)) = state.collisions.first() {
                return Err(ToolError::Collision {
                    name: name.clone(),
                    first: owner.clone(),
                    second: format!("MCP server {}", server.options.name),
                });
            }
        }
        Ok(())
    }

    /// Stops every connection (closing its session, bounded) and its task.
    pub async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if tokio::time::timeout(CLOSE_WAIT, task).await.is_err() {
                tracing::debug!("an MCP connection did not close in time");
            }
        }
    }

    /// The MCP tools offered now.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(
            &self
                .catalog
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Every server, its state and its listed tools.
    pub fn status(&self) -> Vec<McpServerStatus> {
        let _serial = lock(&self.rebuild);
        self.servers.iter().map(|server| server.status()).collect()
    }

    /// The readiness check of server `name`: connected, answering a ping within its connect
    /// timeout (a failed ping marks it down: its task reconnects), and every listed tool offered.
    pub async fn check(&self, name: &str) -> Result<(), ToolError> {
        let Some(server) = self
            .servers
            .iter()
            .find(|server| server.options.name == name)
        else {
            return Err(ToolError::Unavailable(format!(
                "no MCP server is named {name}"
            )));
        };
        let (peer, left_out) = {
            let state = lock(&server.state);
            let left_out: Vec<String> = state
                .left_out
                .iter()
                .map(|(tool, reason)| format!("{tool} ({reason})"))
                .collect();
            match (&state.connection, &state.error) {
                (Some(peer), _) => (peer.clone(), left_out),
                (None, Some(error)) => {
                    return Err(ToolError::Unavailable(format!("not connected: {error}")));
                }
                (None, None) => return Err(ToolError::Unavailable("connecting".to_owned())),
            }
        };
        if let Err(error) = server.ping(&peer).await {
            server.connection_lost(&error);
            return Err(ToolError::Unavailable(error));
        }
        if left_out.is_empty() {
            Ok(())
        } else {
            Err(ToolError::Unavailable(format!(
                "tools left out: {}",
                left_out.join("; ")
            )))
        }
    }

    /// A server's task: connect, list, then keep the list current until the connection ends;
    /// retry with backoff while it fails; until [`Self::stop`].
    async fn keep_connected(self: Arc<Self>, server: Arc<Server>) {
        let name = server.options.name.clone();
        let mut backoff = crate::backoff(MIN_BACKOFF, MAX_BACKOFF);
        let mut last_error: Option<String> = None;
        loop {
            let stop = self.stop.child_token();
            let handler = Handler {
                list_changed: Arc::clone(&server.list_changed),
            };
            let attempt = tokio::select! {
                () = self.stop.cancelled() => return,
                attempt = tokio::time::timeout(
                    server.options.connect_timeout,
                    client::connect(&server.options, handler, stop.clone()),
                ) => attempt,
            };
            let outcome = match attempt {
                Err(_) => Err(format!(
                    "no answer to initialize within {:?}",
                    server.options.connect_timeout
                )),
                Ok(Err(error)) => Err(error),
                Ok(Ok(connection)) => {
                    let peer = connection.peer().clone();
                    match self.relist(&server, &peer).await {
                        Ok(()) => Ok(connection),
                        Err(error) => {
                            stop.cancel();
                            Err(error)
                        }
                    }
                }
            };
            let pause = match outcome {
                Ok(connection) => {
                    tracing::info!(server = %name, tools = lock(&server.state).listed.len(), "MCP server connected");
                    backoff = crate::backoff(MIN_BACKOFF, MAX_BACKOFF);
                    last_error = None;
                    server.attempted.send_replace(true);
                    let ended = self.serve(&server, connection, &stop).await;
                    if self.stop.is_cancelled() {
                        return;
                    }
                    tracing::warn!(server = %name, reason = %ended, "MCP connection ended; reconnecting");
                    server.set_down(ended);
                    backoff.next().unwrap_or(MAX_BACKOFF)
                }
                Err(error) => {
                    let pause = backoff.next().unwrap_or(MAX_BACKOFF);
                    // Logged when it changes, not at every retry of a server that stays down.
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(server = %name, %error, retry_in = ?pause, "MCP server unavailable; its tools are absent until it answers");
                    }
                    server.set_down(error.clone());
                    last_error = Some(error);
                    server.attempted.send_replace(true);
                    pause
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Serves one connection: re-lists on `tools/list_changed` and every refresh interval,
    /// until the connection ends (its reason) or the tools stop (the session is closed).
    async fn serve(
        &self,
        server: &Arc<Server>,
        connection: Connection,
        stop: &CancellationToken,
    ) -> String {
        let peer = connection.peer().clone();
        let mut ended = std::pin::pin!(connection.waiting());
        let mut refresh = tokio::time::interval(server.options.refresh_interval);
        refresh.reset();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    stop.cancel();
                    let _ = tokio::time::timeout(CLOSE_WAIT, &mut ended).await;
                    server.set_down("stopped".to_owned());
                    return "stopped".to_owned();
                }
                quit = &mut ended => return format!("{quit:?}"),
                () = server.suspect.notified() => {
                    if let Err(error) = server.ping(&peer).await {
                        server.connection_lost(&error);
                        return close(server, stop, ended).await;
                    }
                    continue;
                }
                () = server.lost.notified() => return close(server, stop, ended).await,
                () = server.list_changed.notified() => {
                    tracing::info!(server = %server.options.name, "MCP tool list changed");
                }
                _ = refresh.tick() => {}
            }
            if let Err(error) = self.relist(server, &peer).await {
                tracing::warn!(server = %server.options.name, %error, "listing MCP tools failed; the last list stays");
            }
        }
    }

    /// Lists the server's tools (bounded by its timeout) and, when they changed, builds them
    /// and publishes a new catalog.
    async fn relist(&self, server: &Arc<Server>, peer: &Peer<RoleClient>) -> Result<(), String> {
        let options = &server.options;
        let listed = tokio::time::timeout(options.timeout, peer.list_all_tools())
            .await
            .map_err(|_| format!("no answer to tools/list within {:?}", options.timeout))?
            .map_err(|error| format!("tools/list failed: {}", client::cause(&error)))?;
        let listed: Vec<rmcp::model::Tool> = match &options.tools {
            None => listed,
            Some(allowed) => {
                for wanted in allowed {
                    if !listed.iter().any(|tool| tool.name == wanted.as_str()) {
                        tracing::warn!(server = %options.name, tool = %wanted, "an allowlisted tool is not listed by the server");
                    }
                }
                listed
                    .into_iter()
                    .filter(|tool| allowed.iter().any(|name| tool.name == name.as_str()))
                    .collect()
            }
        };
        // The new list and the catalog built from it change together under `rebuild`, which
        // `status` takes too: no reader sees a listed tool before the catalog says whether it
        // is offered or left out.
        let _serial = lock(&self.rebuild);
        {
            let mut state = lock(&server.state);
            state.connection = Some(peer.clone());
            state.error = None;
            server.connected.set(1.0);
            if state.listed == listed && !state.built.is_empty() {
                return Ok(());
            }
            state.built = listed
                .iter()
                .map(|tool| {
                    let built = self.build(server, tool);
                    (
                        names::agent_name(&options.prefix, &tool.name),
                        tool.name.to_string(),
                        built,
                    )
                })
                .collect();
            state.listed = listed;
        }
        self.publish();
        Ok(())
    }

    fn build(
        &self,
        server: &Arc<Server>,
        tool: &rmcp::model::Tool,
    ) -> Result<Arc<Registered>, String> {
        let name = names::agent_name(&server.options.prefix, &tool.name);
        let labels = vec![
            Label::new("server", server.options.name.clone()),
            Label::new("tool", tool.name.to_string()),
        ];
        let metrics = CallMetrics::register(self.recorder.as_deref(), labels);
        let mcp_tool = McpTool {
            server: Arc::downgrade(server),
            server_name: server.options.name.clone(),
            name,
            original: tool.name.to_string(),
            description: tool.description.as_deref().unwrap_or_default().to_owned(),
            parameters: Value::Object((*tool.input_schema).clone()),
            metrics,
        };
        Registered::new(Arc::new(mcp_tool), None)
            .map(Arc::new)
            .map_err(|error| error.to_string())
    }

    /// Builds the catalog from every server's built tools: tools already offered keep their
    /// names, newcomers follow in server order, and one whose name is taken (by a fixed tool or
    /// an earlier one) is left out and logged.
    /// Called with `rebuild` held.
    fn publish(&self) {
        let previous = self.catalog();
        let offered = |name: &str| previous.tools.iter().any(|tool| tool.spec.name == name);
        let mut taken: HashMap<String, String> = self
            .reserved
            .iter()
            .map(|name| (name.clone(), "a built-in or HTTP tool".to_owned()))
            .collect();
        let mut tools = Vec::new();
        let mut states: Vec<_> = self
            .servers
            .iter()
            .map(|server| lock(&server.state))
            .collect();
        for state in &mut states {
            state.left_out.clear();
        }
        for incumbents in [true, false] {
            for (server, state) in self.servers.iter().zip(states.iter_mut()) {
                let first_publication = !self.started.load(Ordering::Relaxed);
                let mut left_out = Vec::new();
                let mut collisions = Vec::new();
                for (name, original, built) in &state.built {
                    if offered(name) != incumbents {
                        continue;
                    }
                    let registered = match built {
                        Ok(registered) => registered,
                        Err(problem) => {
                            left_out.push((name.clone(), problem.clone()));
                            continue;
                        }
                    };
                    if let Some(owner) = taken.get(name) {
                        let reason = format!("its name is taken by {owner}");
                        tracing::warn!(server = %server.options.name, tool = %original, %name, %reason, "MCP tool left out");
                        left_out.push((name.clone(), reason));
                        if first_publication {
                            collisions.push((name.clone(), owner.clone()));
                        }
                        continue;
                    }
                    taken.insert(
                        name.clone(),
                        format!("tool {original} of MCP server {}", server.options.name),
                    );
                    tools.push(Arc::clone(registered));
                }
                state.left_out.extend(left_out);
                state.collisions.extend(collisions);
            }
        }
        for (server, state) in self.servers.iter().zip(&states) {
            server
                .offered
                .set((state.built.len() - state.left_out.len()) as f64);
        }
        let catalog = Arc::new(Catalog {
            generation: previous.generation + 1,
            tools,
        });
        *self
            .catalog
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = catalog;
    }
}

impl Server {
    /// A ping, bounded by the connect timeout.
    async fn ping(&self, peer: &Peer<RoleClient>) -> Result<(), String> {
        let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
        match tokio::time::timeout(self.options.connect_timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("ping failed: {}", client::cause(&error))),
            Err(_) => Err(format!(
                "no answer to ping within {:?}",
                self.options.connect_timeout
            )),
        }
    }

    /// A request failed below MCP (refused, reset, closed): the server is down until the
    /// connection task reconnects, and calls fail fast meanwhile.
    fn connection_lost(&self, error: &str) {
        let mut state = lock(&self.state);
        if state.connection.is_some() {
            state.connection = None;
            state.error = Some(error.to_owned());
            self.connected.set(0.0);
            self.lost.notify_one();
        }
    }

    fn set_down(&self, error: String) {
        let mut state = lock(&self.state);
        state.connection = None;
        state.error = Some(error);
        self.connected.set(0.0);
    }

    fn peer(&self) -> Result<Peer<RoleClient>, String> {
        let state = lock(&self.state);
        match (&state.connection, &state.error) {
            (Some(peer), _) => Ok(peer.clone()),
            (None, Some(error)) => Err(format!(
                "the MCP server {} is not connected ({error}); try again later",
                self.options.name
            )),
            (None, None) => Err(format!(
                "the MCP server {} is still connecting; try again later",
                self.options.name
            )),
        }
    }

    fn status(&self) -> McpServerStatus {
        let state = lock(&self.state);
        let state_now = match (&state.connection, &state.error) {
            (Some(_), _) => McpServerState::Connected,
            (None, Some(error)) => McpServerState::Down {
                error: error.clone(),
            },
            (None, None) => McpServerState::Connecting,
        };
        McpServerStatus {
            name: self.options.name.clone(),
            required: self.options.required,
            state: state_now,
            tools: state
                .built
                .iter()
                .zip(&state.listed)
                .map(|((name, original, _), listed)| McpToolStatus {
                    name: name.clone(),
                    original: original.clone(),
                    description: listed.description.as_deref().unwrap_or_default().to_owned(),
                    left_out: state.left_out.get(name).cloned(),
                })
                .collect(),
        }
    }
}

/// Closes a broken connection (bounded) and says why it broke.
async fn close<F: Future>(
    server: &Server,
    stop: &CancellationToken,
    ended: std::pin::Pin<&mut F>,
) -> String {
    stop.cancel();
    let _ = tokio::time::timeout(CLOSE_WAIT, ended).await;
    lock(&server.state)
        .error
        .clone()
        .unwrap_or_else(|| "the connection broke".to_owned())
}

/// A lock, even if a thread panicked holding it (the state stays usable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl std::fmt::Debug for Server {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("name", &self.options.name)
            .finish_non_exhaustive()
    }
}
