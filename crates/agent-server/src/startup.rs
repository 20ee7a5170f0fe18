//! The application factory: builds the dependencies from [`Settings`], binds the listener, and
//! runs the server until a graceful shutdown completes.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::ServerHandle;
use actix_web::middleware::{Condition, ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use agent_config::{CorsSettings, ModelProvider, Settings, StorageSettings};
use agent_core::McpTools;
use agent_health::{Health, HealthCheck};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{AccessPolicy, caller_names};
use crate::admission::{Admission, Descriptors, Limits};
use crate::agent_factory;
use crate::approvals::ToolApprovals;
use crate::backends::{self, Backends};
use crate::error::{StartupError, json_error_shape};
use crate::failure_log::FailureLog;
use crate::history_cache::HistoryCache;
use crate::metrics::{AppMetrics, WorkerMetrics};
use crate::middleware::request_context;
use crate::retention;
use crate::routes;
use crate::routes::pipeline::TurnRoutes;
use crate::runs::RunRegistry;
use crate::runs::live::CancelReason;
use crate::shutdown::ShutdownTrigger;
use crate::turn::{Turns, TurnsShared};

type RouteFn = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// What the workers share: one of each per process.
#[derive(Clone)]
struct Shared {
    settings: Arc<Settings>,
    /// Whether the conversation store is failing is known process-wide, not per worker.
    store_failing: Arc<AtomicBool>,
    /// So is the history cache: a session's next turn may reach any worker.
    history_cache: HistoryCache,
    metrics: Arc<AppMetrics>,
    admission: Arc<Admission>,
    /// One connection per MCP server, shared by the workers' registries.
    mcp: Option<Arc<McpTools>>,
    drain: watch::Receiver<bool>,
    failures: Arc<FailureLog>,
    /// The runs this process executes.
    registry: Arc<RunRegistry>,
    /// Which tool calls wait for the client's approval (none: no tool does).
    approvals: Option<Arc<ToolApprovals>>,
}

/// What one worker serves requests with.
#[derive(Clone)]
struct WorkerState {
    backends: web::Data<Backends>,
    turns: web::Data<Turns>,
    turn_routes: web::Data<TurnRoutes>,
    access: web::Data<AccessPolicy>,
}

impl WorkerState {
    fn build(shared: &Shared, backends: Backends) -> Result<Self, StartupError> {
        let settings = &shared.settings;
        let agents = agent_factory::build(
            settings,
            &shared.metrics.model,
            shared.metrics.recorder(),
            shared.mcp.as_ref(),
        )?;
        let turns = web::Data::new(Turns::new(
            agents,
            backends.clone(),
            settings,
            TurnsShared {
                store_failing: Arc::clone(&shared.store_failing),
                history_cache: shared.history_cache.clone(),
                metrics: shared.metrics.turns.clone(),
                admission: Arc::clone(&shared.admission),
                registry: Arc::clone(&shared.registry),
                approvals: shared.approvals.clone(),
            },
        ));
        let turn_routes = TurnRoutes {
            turns: turns.clone().into_inner(),
            backends: backends.clone(),
            settings: Arc::clone(settings),
            drain: shared.drain.clone(),
            failures: Arc::clone(&shared.failures),
        };
        Ok(Self {
            turns,
            turn_routes: web::Data::new(turn_routes),
            access: web::Data::new(AccessPolicy::new(settings, backends.rate_limiter.clone())),
            backends: web::Data::new(backends),
        })
    }
}

/// A worker's own state, or the shared one when its own could not be built: counted in
/// `agent_worker_pool_fallbacks_total`, and logged for the first worker only (the others fail
/// for the same reason).
fn own_or_shared(
    own: Result<WorkerState, StartupError>,
    shared: &WorkerState,
    metrics: &AppMetrics,
) -> WorkerState {
    own.unwrap_or_else(|error| {
        metrics.worker_fallbacks.increment(1);
        static LOGGED: std::sync::Once = std::sync::Once::new();
        LOGGED.call_once(|| {
            tracing::error!(error = %crate::error_chain(&error), "cannot build a worker's own storage clients; workers use the shared ones (see agent_worker_pool_fallbacks_total)");
        });
        shared.clone()
    })
}

/// The number of workers: as configured, or one per available CPU (actix-web's own default).
fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// Collects what an [`Application`] is built from.
pub struct ApplicationBuilder {
    settings: Settings,
    checks: Vec<HealthCheck>,
    routes: Vec<RouteFn>,
}

impl std::fmt::Debug for ApplicationBuilder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApplicationBuilder")
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
}

impl ApplicationBuilder {
    /// Adds a readiness check besides the ones built from the settings.
    pub fn with_check(mut self, check: HealthCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds routes of the embedder's own; they get the same middleware and error shape.
    pub fn with_routes(
        mut self,
        routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.routes.push(Arc::new(routes));
        self
    }

    /// Builds every dependency, binds the listener (port 0 picks a free port) and starts
    /// answering; the startup gate opens in [`Application::run_until_stopped`].
    pub async fn build(self) -> Result<Application, StartupError> {
        let Self {
            settings,
            checks,
            routes: extra_routes,
        } = self;
        log_fallbacks(&settings);
        warn_long_mcp_timeouts(&settings);
        let workers = worker_count(settings.server.workers);
        let admission = Admission::new(plan_admission(&settings));
        let (backends, mut storage_checks, recipe) =
            backends::build(&settings.storage, &settings.health).await?;
        let callers = caller_names(&settings);
        let metrics = AppMetrics::new(
            Arc::clone(&backends.background),
            Arc::clone(&admission),
            settings
                .api
                .metrics_caller_labels
                .then_some(callers.as_slice()),
            (!settings.agents.is_empty())
                .then(|| settings.agent_ids())
                .as_deref(),
        );
        // One connection per MCP server for the process, shared by the workers; it starts now
        // and is waited for once the listener answers the startup probe.
        let mcp = agent_factory::start_mcp(&settings, metrics.recorder())?;
        let approvals =
            ToolApprovals::from_settings(&settings, &agent_factory::builtin_names(&settings)?)?;
        // Built before the listener answers: a TLS client reads the system's roots.
        if settings.profile == agent_config::Profile::Production
            && settings
                .webhooks
                .iter()
                .any(|webhook| webhook.inline_secret)
        {
            tracing::warn!(
                "a [[webhooks]] secret is written in the configuration file: read it from a file (secret = {{ file = \"/run/secrets/...\" }})"
            );
        }
        let webhooks = crate::webhooks::Sender::new(
            Arc::clone(&backends.webhooks),
            &settings.webhooks,
            settings.webhook_delivery.clone(),
            metrics.webhooks.clone(),
        )
        .map_err(StartupError::Webhooks)?;
        let (drain_sender, drain_receiver) = watch::channel(false);
        let registry = Arc::new(RunRegistry::new());
        let failures = web::Data::new(FailureLog::new(settings.log.repeat_interval));
        let shared = Shared {
            settings: Arc::new(settings.clone()),
            store_failing: Arc::new(AtomicBool::new(false)),
            history_cache: HistoryCache::new(
                settings.turn.history_cache_bytes,
                settings.turn.history_window,
            ),
            metrics: Arc::clone(&metrics),
            admission: Arc::clone(&admission),
            mcp: mcp.clone(),
            approvals,
            drain: drain_receiver.clone(),
            failures: failures.clone().into_inner(),
            registry: Arc::clone(&registry),
        };
        // Built once here to fail fast on bad settings; each worker then builds its own (its
        // connections live on its thread) and falls back to this one if that fails.
        let fallback = WorkerState::build(&shared, backends.clone())?;
        // A context budget counts with its model's tokenizer: loaded now (about 175 ms and 46
        // MiB, once per process) rather than by the first turn that counts.
        let budgeted: Vec<String> = fallback
            .turns
            .agents
            .all()
            .filter(|agent| agent.context.max_input_tokens > 0)
            .map(|agent| agent.agent.model().identity().model)
            .collect();
        if !budgeted.is_empty() {
            let load = move || {
                for model in &budgeted {
                    agent_core::TokenCounter::for_model(model);
                }
            };
            if let Err(error) = tokio::task::spawn_blocking(load).await {
                tracing::warn!(%error, "loading the tokenizer failed: the first turn loads it");
            }
        }
        // The dispatcher of background runs executes them on the process's runtime with these.
        let fallback_turns = fallback.turns.clone().into_inner();
        if let Some(mcp) = &mcp {
            storage_checks.extend(crate::readiness::mcp_checks(&settings, mcp));
        }
        storage_checks.extend(crate::readiness::model_checks(
            &fallback.turns.agents,
            settings.health.check_timeout,
        ));
        let drain_receiver = web::Data::new(drain_receiver);
        let payload_limit = settings.api.max_body_bytes;
        let api_settings = settings.api.clone();
        let openai_body_limit = settings.openai_api.max_body_bytes;
        let app_settings = web::Data::from(Arc::clone(&shared.settings));
        storage_checks.extend(checks);
        let health = Health::new(storage_checks, settings.health.cache_ttl);
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?
            .port();

        let app_health = web::Data::new(health.clone());
        let app_metrics = web::Data::from(Arc::clone(&metrics));
        let document = web::Data::new(routes::Document(routes::document(&settings)));
        let per_worker_accepted = admission.limits().per_worker_accepted(workers);
        let connections = Arc::clone(&admission);
        let app_admission = web::Data::from(Arc::clone(&admission));
        let server = HttpServer::new(move || {
            let extra_routes = extra_routes.clone();
            let own = recipe
                .for_worker(workers)
                .and_then(|backends| WorkerState::build(&shared, backends));
            let worker = own_or_shared(own, &fallback, &app_metrics);
            let cors = app_settings.api.cors.clone();
            App::new()
                .app_data(app_health.clone())
                .app_data(app_metrics.clone())
                .app_data(document.clone())
                .app_data(failures.clone())
                .app_data(app_admission.clone())
                .app_data(WorkerMetrics::new(app_metrics.clone().into_inner()))
                .app_data(worker.backends)
                .app_data(worker.turns)
                .app_data(worker.turn_routes)
                .app_data(worker.access)
                .app_data(drain_receiver.clone())
                .app_data(app_settings.clone())
                .app_data(web::PayloadConfig::new(payload_limit))
                .configure(|config| routes::configure(config, openai_body_limit))
                .configure(|config| routes::pages::configure(config, &api_settings))
                .configure(move |config| extra_routes.iter().for_each(|add| add(config)))
                .default_service(web::to(routes::not_found))
                .wrap(Condition::new(
                    cors.is_some(),
                    from_fn(crate::access::layer),
                ))
                .wrap(Condition::new(cors.is_some(), cors_layer(cors.as_ref())))
                .wrap(ErrorHandlers::new().default_handler(json_error_shape))
                .wrap(from_fn(request_context))
        })
        .workers(workers)
        // Beyond the served connections and the refusal band, stop accepting (the backlog holds
        // the rest) rather than let `accept` fail for want of descriptors.
        .max_connections(per_worker_accepted)
        .on_connect(move |_, data| {
            data.insert(connections.connection_opened());
        })
        // A client that closes its side has gone away: drop its request's future, which cancels
        // the turn (nothing is stored). HTTP clients do not half-close while awaiting an answer.
        .h1_allow_half_closed(false)
        // Signals are handled in `run_until_stopped`, which turns readiness off first.
        .disable_signals()
        .shutdown_timeout(settings.server.drain_timeout.as_secs().max(1))
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?
        .run();
        let handle = server.handle();
        // Serve from now on: liveness and the startup probe answer while the rest starts.
        let server = tokio::spawn(server);

        tracing::info!(%address, port, workers, "listening");
        if let Some(mcp) = &mcp
            && let Err(error) = mcp.wait_started().await
        {
            mcp.stop().await;
            handle.stop(false).await;
            return Err(StartupError::Tools(error));
        }
        // Background runs are taken from the queue until the drain begins.
        let claiming = CancellationToken::new();
        let mut tasks = vec![
            metrics.spawn_upkeep(),
            crate::runs::upkeep::spawn(
                Arc::clone(&registry),
                Arc::clone(&backends.runs),
                settings.runs.lease,
                metrics.runs_lost.clone(),
            ),
            crate::runs::queue::spawn_dispatcher(
                fallback_turns,
                settings.runs.queue_poll,
                claiming.clone(),
            ),
        ];
        tasks.push(webhooks.spawn());
        if let Some(retention) = settings.storage.retention() {
            tasks.push(retention::spawn(
                retention,
                settings.storage.retention_sweep_interval,
                Arc::clone(&backends.conversations),
                Arc::clone(&backends.locks),
                metrics.retention.clone(),
            ));
        }
        Ok(Application {
            tasks,
            claiming,
            mcp,
            drain: drain_sender,
            registry,
            backends,
            server,
            handle,
            port,
            health,
            shutdown: ShutdownTrigger::default(),
            shutdown_delay: settings.server.shutdown_delay,
            drain_timeout: settings.server.drain_timeout,
        })
    }
}

/// A built server, already answering; its startup gate opens in `run_until_stopped`.
pub struct Application {
    /// The process's periodic jobs (metrics upkeep, the runs' upkeep and dispatcher, the
    /// retention sweep), stopped with it.
    tasks: Vec<JoinHandle<()>>,
    /// Cancelled when the drain begins: no more queued runs are taken.
    claiming: CancellationToken,
    /// The MCP servers' connections, closed after the drain.
    mcp: Option<Arc<McpTools>>,
    /// Tells open event streams that the drain window is ending.
    drain: watch::Sender<bool>,
    /// The runs this process executes: those still running when the window ends are stopped.
    registry: Arc<RunRegistry>,
    backends: Backends,
    server: JoinHandle<std::io::Result<()>>,
    handle: ServerHandle,
    port: u16,
    health: Health,
    shutdown: ShutdownTrigger,
    shutdown_delay: Duration,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds every dependency and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::builder(settings).build().await
    }

    /// A builder, for embedders and tests that add readiness checks or routes.
    pub fn builder(settings: Settings) -> ApplicationBuilder {
        ApplicationBuilder {
            settings,
            checks: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The storage the server runs on (tests inspect it).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that begins the same graceful shutdown as SIGTERM.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the trigger, then shuts down gracefully: readiness fails
    /// at once, the listener stays open for the shutdown delay, in-flight requests get the drain
    /// window, then it returns.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        // Everything the service needs was built: open the startup gate.
        self.health.mark_started();
        let handle = self.handle;
        let mut server = self.server;
        let cause = tokio::select! {
            finished = &mut server => {
                self.tasks.iter().for_each(JoinHandle::abort);
                if let Some(mcp) = &self.mcp {
                    mcp.stop().await;
                }
                return flatten(finished);
            }
            cause = self.shutdown.requested() => cause,
        };
        self.health.begin_draining();
        // Queued runs stay queued for the other replicas (or this one's next start).
        self.claiming.cancel();
        tracing::info!(
            cause,
            shutdown_delay = ?self.shutdown_delay,
            drain_timeout = ?self.drain_timeout,
            "shutdown began: readiness now fails"
        );
        tokio::time::sleep(self.shutdown_delay).await;
        tracing::info!("listener closed; draining in-flight requests");
        // Streams still open shortly before the window ends get a last `shutdown` event.
        let margin = (self.drain_timeout / 4).min(Duration::from_secs(1));
        let drain = self.drain;
        let registry = Arc::clone(&self.registry);
        let until = self.drain_timeout.saturating_sub(margin);
        let warn_streams = tokio::spawn(async move {
            tokio::time::sleep(until).await;
            let _ = drain.send(true);
            // Their executors fail them (`shutdown`) and answer their requests while they can.
            let stopped = registry.cancel_all(CancelReason::Shutdown);
            if stopped > 0 {
                tracing::warn!(
                    runs = stopped,
                    "the drain window is ending: stopping the runs still running"
                );
            }
        });
        let drained = tokio::time::timeout(self.drain_timeout, handle.stop(true)).await;
        warn_streams.abort();
        if drained.is_err() {
            tracing::warn!("drain window elapsed; closing the remaining connections");
            handle.stop(false).await;
        }
        let result = flatten(server.await);
        self.tasks.iter().for_each(JoinHandle::abort);
        if let Some(mcp) = &self.mcp {
            mcp.stop().await;
        }
        tracing::info!("stopped");
        result
    }
}

fn flatten(
    finished: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), StartupError> {
    match finished {
        Ok(result) => result.map_err(StartupError::Server),
        Err(join_error) => Err(StartupError::Server(std::io::Error::other(join_error))),
    }
}

/// The CORS layer for `settings` (a closed one when CORS is off: `Condition` leaves it out).
/// Requests from unlisted origins pass without CORS headers (the browser stops them; other
/// clients are unaffected); their preflights are refused by `access::admit_preflight`. Inside
/// it, `access::layer` authorizes, so its refusals carry CORS headers too.
fn cors_layer(settings: Option<&CorsSettings>) -> Cors {
    let Some(settings) = settings else {
        return Cors::default();
    };
    let mut cors = Cors::default()
        .allowed_methods(settings.methods.iter().map(String::as_str))
        .allowed_headers(settings.headers.iter().map(String::as_str))
        .expose_headers(["x-request-id", "retry-after", "idempotent-replayed"])
        .max_age(usize::try_from(settings.max_age.as_secs()).ok())
        .block_on_origin_mismatch(false);
    cors = if settings.origins.is_empty() {
        cors.allow_any_origin().send_wildcard()
    } else {
        settings
            .origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
    };
    if settings.allow_credentials {
        cors = cors.supports_credentials();
    }
    cors
}

/// Raises the descriptor limit and sizes the admission limits within it; logs both.
fn plan_admission(settings: &Settings) -> Limits {
    let descriptors = Descriptors::raise();
    let limits = Limits::plan(settings, descriptors.soft);
    tracing::info!(
        soft_before = descriptors.soft_before,
        soft = descriptors.soft,
        hard = descriptors.hard,
        "descriptor limit"
    );
    if limits.lowered {
        tracing::warn!(
            max_connections = limits.connections,
            max_turns_in_flight = limits.turns,
            descriptors = descriptors.soft,
            "the configured connection and turn limits do not fit the descriptor limit; lowered to fit"
        );
    }
    tracing::info!(
        max_connections = limits.connections,
        refusal_band = limits.refusal_band,
        max_turns_in_flight = limits.turns,
        reserved_descriptors = limits.reserved,
        "admission limits"
    );
    limits
}

/// The embedded defaults must never be mistaken for a production setup: say so loudly.
fn log_fallbacks(settings: &Settings) {
    let StorageSettings {
        database_url,
        redis_url,
        ..
    } = &settings.storage;
    if database_url.is_none() {
        tracing::warn!(
            "DATABASE_URL is not set: conversations are kept in memory and lost on exit"
        );
    }
    if redis_url.is_none() {
        tracing::warn!("REDIS_URL is not set: locks and rate limits are local to this process");
    }
    if settings.api_keys.is_empty() {
        tracing::warn!("AGENT_API_KEYS is not set: the API is open to anyone who can reach it");
    }
    if let ModelProvider::Offline = settings.model.provider {
        tracing::warn!(
            "no model configured (OPENAI_API_KEY / OPENAI_BASE_URL): using the built-in offline model"
        );
    }
}

/// An MCP call that may outlast the turn's deadline is cut by the deadline first: the turn fails
/// (504) instead of the model reading a tool error.
fn warn_long_mcp_timeouts(settings: &Settings) {
    for server in &settings.mcp_servers {
        if server.timeout >= settings.turn.turn_deadline {
            tracing::warn!(
                mcp_server = %server.name,
                timeout = ?server.timeout,
                turn_deadline = ?settings.turn.turn_deadline,
                "an MCP server's timeout is not below the turn deadline: a slow call fails the whole turn instead of becoming a tool error"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker whose own clients cannot be built serves with the shared ones, and says so in a
    /// metric (every such worker) and the log (once).
    #[tokio::test]
    async fn a_worker_without_its_own_clients_uses_the_shared_ones_and_is_counted() {
        let loaded = agent_config::load_from(Vec::<(String, String)>::new()).unwrap();
        let settings = loaded.settings;
        let admission = Admission::new(Limits::plan(&settings, 1024));
        let metrics = AppMetrics::new(Arc::default(), Arc::clone(&admission), None, None);
        let (backends, _checks, _recipe) = backends::build(&settings.storage, &settings.health)
            .await
            .unwrap();
        let process = Shared {
            settings: Arc::new(settings),
            store_failing: Arc::default(),
            history_cache: HistoryCache::new(0, 0),
            metrics: Arc::clone(&metrics),
            admission,
            mcp: None,
            drain: watch::channel(false).1,
            failures: Arc::new(FailureLog::new(Duration::from_secs(1))),
            registry: Arc::new(RunRegistry::new()),
            approvals: None,
        };
        let shared = WorkerState::build(&process, backends).unwrap();
        let own = WorkerState::build(&process, shared.backends.get_ref().clone()).unwrap();
        let kept = own_or_shared(Ok(own.clone()), &shared, &metrics);
        assert!(Arc::ptr_eq(
            &kept.turns.clone().into_inner(),
            &own.turns.clone().into_inner()
        ));
        for _ in 0..2 {
            let failed = Err(StartupError::NoDatabase);
            let used = own_or_shared(failed, &shared, &metrics);
            assert!(Arc::ptr_eq(
                &used.turns.clone().into_inner(),
                &shared.turns.clone().into_inner()
            ));
        }
        let text = metrics.render();
        assert!(
            text.contains("agent_worker_pool_fallbacks_total 2"),
            "{text}"
        );
    }
}
