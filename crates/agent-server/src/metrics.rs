//! Prometheus metrics: one recorder per application, never a process-wide one, so that two
//! applications in one process (the API tests) count only their own requests. Per-request
//! counters, latency histograms and the in-flight gauge are labelled by route pattern (never by
//! raw path); the turn and model metrics are registered once, with every label value up front.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use agent_core::metrics::{ModelMetrics, counter, histogram};
use agent_storage::BackgroundWork;

use crate::admission::Admission;
use crate::error::ErrorCode;
use crate::retention::RetentionMetrics;
use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

mod scraped;

use scraped::{AdmissionMetrics, BackgroundMetrics, TraceMetrics};

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The application's recorder and the handles every worker shares.
pub(crate) struct AppMetrics {
    /// Shared with the MCP tools, which register their series as servers list tools.
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    in_flight: Gauge,
    pub(crate) turns: TurnMetrics,
    pub(crate) model: ModelMetrics,
    /// Workers that could not build their own storage clients and use the shared ones.
    pub(crate) worker_fallbacks: Counter,
    /// Runs failed as lost by this process (their executor was gone).
    pub(crate) runs_lost: Counter,
    pub(crate) webhooks: crate::webhooks::WebhookMetrics,
    pub(crate) retention: RetentionMetrics,
    background: BackgroundMetrics,
    admission: AdmissionMetrics,
    traces: TraceMetrics,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("AppMetrics").finish_non_exhaustive()
    }
}

impl AppMetrics {
    /// A recorder that also reports `background`'s slots and `admission`'s counts; with
    /// `callers`, the turn metrics are labelled by caller.
    pub(crate) fn new(
        background: Arc<BackgroundWork>,
        admission: Arc<Admission>,
        callers: Option<&[String]>,
        agents: Option<&[&str]>,
    ) -> Arc<Self> {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let sweeps = |outcome| {
            counter(
                &recorder,
                "agent_retention_sweeps_total",
                &[("outcome", outcome)],
            )
        };
        Arc::new(Self {
            handle: recorder.handle(),
            in_flight: recorder
                .register_gauge(&Key::from_name("http_requests_in_flight"), &metadata()),
            turns: TurnMetrics::register(&recorder, callers, agents),
            model: ModelMetrics::register(&recorder),
            worker_fallbacks: counter(&recorder, "agent_worker_pool_fallbacks_total", &[]),
            runs_lost: counter(&recorder, "agent_runs_lost_total", &[]),
            webhooks: crate::webhooks::WebhookMetrics {
                delivered: counter(
                    &recorder,
                    "agent_webhook_deliveries_total",
                    &[("outcome", "delivered")],
                ),
                failed: counter(
                    &recorder,
                    "agent_webhook_deliveries_total",
                    &[("outcome", "failed")],
                ),
                abandoned: counter(
                    &recorder,
                    "agent_webhook_deliveries_total",
                    &[("outcome", "abandoned")],
                ),
            },
            retention: RetentionMetrics {
                expired: counter(&recorder, "agent_sessions_expired_total", &[]),
                swept: sweeps("swept"),
                skipped: sweeps("skipped"),
                failed: sweeps("failed"),
            },
            background: BackgroundMetrics::register(&recorder, background),
            admission: AdmissionMetrics::register(&recorder, admission),
            traces: TraceMetrics::register(&recorder),
            recorder: Arc::new(recorder),
        })
    }

    /// The recorder, for what registers series while running (the MCP servers' tools).
    pub(crate) fn recorder(&self) -> Arc<dyn Recorder + Send + Sync> {
        self.recorder.clone()
    }

    /// Records a readiness result as gauges: `agent_ready` (1 ready, 0 not) and
    /// `agent_readiness_check_up{check,criticality}` (1 up, 0 down) with
    /// `agent_readiness_check_latency_seconds{check}`. The checks are the configuration's, so the
    /// series are bounded.
    pub(crate) fn record_readiness(&self, readiness: &agent_health::Readiness) {
        self.recorder
            .register_gauge(&Key::from_name("agent_ready"), &metadata())
            .set(if readiness.status.is_ready() {
                1.0
            } else {
                0.0
            });
        for check in readiness.checks.iter() {
            let name = Label::new("check", check.name.clone());
            let criticality = match check.criticality {
                agent_health::Criticality::Critical => "critical",
                agent_health::Criticality::Optional => "optional",
            };
            self.recorder
                .register_gauge(
                    &Key::from_parts(
                        "agent_readiness_check_up",
                        vec![name.clone(), Label::new("criticality", criticality)],
                    ),
                    &metadata(),
                )
                .set(if check.result.is_ok() { 1.0 } else { 0.0 });
            self.recorder
                .register_gauge(
                    &Key::from_parts("agent_readiness_check_latency_seconds", vec![name]),
                    &metadata(),
                )
                .set(check.latency.as_secs_f64());
        }
    }

    /// The Prometheus text of everything recorded so far.
    pub(crate) fn render(&self) -> String {
        self.background.refresh();
        self.admission.refresh();
        self.traces.refresh();
        self.handle.render()
    }

    /// Histograms keep every sample until upkeep folds them into their buckets; without it memory
    /// grows with each request until /metrics is scraped (found by `cargo xtask soak`). Runs
    /// until the returned task is aborted.
    pub(crate) fn spawn_upkeep(&self) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_EVERY);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        })
    }
}

/// Counts one fallback of `agent`'s model chain, from the model `from` to `to`, for `reason`
/// (the failure's kind).
pub(crate) fn model_fallback(
    recorder: &dyn Recorder,
    agent: &str,
    from: &str,
    to: &str,
    reason: &'static str,
) {
    let labels = vec![
        Label::new("agent", agent.to_owned()),
        Label::new("from", from.to_owned()),
        Label::new("to", to.to_owned()),
        Label::new("reason", reason),
    ];
    recorder
        .register_counter(
            &Key::from_parts("agent_model_fallbacks_total", labels),
            &metadata(),
        )
        .increment(1);
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new("agent_server", metrics::Level::INFO, Some(module_path!()))
}

/// How a turn ended: the `outcome` label of `agent_turns_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnOutcome {
    /// Answered and stored.
    Completed,
    /// Stopped to wait for the client (its run waits; nothing stored yet).
    RequiresAction,
    /// The agent answered, but storing the turn failed (nothing was stored).
    StoreFailed,
    ModelError,
    StepLimit,
    TurnBudget,
    SessionBudget,
    Deadline,
    /// A request would not fit the context policy's budget.
    ContextLength,
}

impl TurnOutcome {
    /// Every outcome, in declaration order.
    const ALL: [Self; 9] = [
        Self::Completed,
        Self::RequiresAction,
        Self::StoreFailed,
        Self::ModelError,
        Self::StepLimit,
        Self::TurnBudget,
        Self::SessionBudget,
        Self::Deadline,
        Self::ContextLength,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::RequiresAction => "requires_action",
            Self::StoreFailed => "store_failed",
            Self::ModelError => "model_error",
            Self::StepLimit => "step_limit",
            Self::TurnBudget => "turn_budget",
            Self::SessionBudget => "session_budget",
            Self::Deadline => "deadline",
            Self::ContextLength => "context_length",
        }
    }
}

/// The turn metrics: outcomes, duration, model calls, tokens and tool calls; the outcomes, tokens
/// and quota refusals per caller when `api.metrics_caller_labels` is on, and per agent when the
/// configuration declares `[[agents]]`.
#[derive(Debug, Clone)]
pub(crate) struct TurnMetrics {
    /// Each agent's counters by its id (labelled `agent`); one entry, unlabelled, without
    /// `[[agents]]`.
    agents: Arc<HashMap<String, AgentCounters>>,
    /// The counters of an agent not in `agents` (none is: the first agent's, to be total).
    fallback: AgentCounters,
    duration: Histogram,
    model_calls: Counter,
    tool_calls: Counter,
    /// Continuing turns' history windows by where they came from.
    history_cached: Counter,
    history_read: Counter,
    context: ContextCounters,
}

/// What fitting the turns' requests to their context budgets did.
#[derive(Debug, Clone)]
struct ContextCounters {
    left_out: Counter,
    compactions: Counter,
    compactions_failed: Counter,
    compacted_turns: Counter,
}

impl ContextCounters {
    fn register(recorder: &dyn Recorder) -> Self {
        let compactions = |outcome| {
            counter(
                recorder,
                "agent_context_compactions_total",
                &[("outcome", outcome)],
            )
        };
        Self {
            left_out: counter(recorder, "agent_context_messages_left_out_total", &[]),
            compactions: compactions("completed"),
            compactions_failed: compactions("failed"),
            compacted_turns: counter(recorder, "agent_context_compacted_turns_total", &[]),
        }
    }

    fn count(&self, cost: &TurnCost) {
        if cost.left_out > 0 {
            self.left_out.increment(cost.left_out as u64);
        }
        match cost.compacted {
            None => {}
            Some(Some(turns)) => {
                self.compactions.increment(1);
                self.compacted_turns.increment(turns as u64);
            }
            Some(None) => self.compactions_failed.increment(1),
        }
    }
}

/// One agent's (or every agent's) counters, split by caller when the labels are on.
#[derive(Debug, Clone)]
struct AgentCounters {
    /// Each configured caller's counters, labelled `caller`; empty when the labels are off.
    callers: HashMap<String, CallerCounters>,
    /// Everyone's counters when the labels are off, else the anonymous caller's.
    unlabelled: CallerCounters,
}

/// The counters a caller label splits.
#[derive(Debug, Clone)]
struct CallerCounters {
    /// In the order of [`TurnOutcome::ALL`].
    outcomes: [Counter; TurnOutcome::ALL.len()],
    prompt_tokens: Counter,
    completion_tokens: Counter,
    quota_refusals: Counter,
}

impl CallerCounters {
    fn register(recorder: &dyn Recorder, agent: Option<&str>, caller: Option<&str>) -> Self {
        let with_labels = |label: Option<(&'static str, &'static str)>| -> Vec<Label> {
            label
                .map(|(name, value)| Label::new(name, value))
                .into_iter()
                .chain(caller.map(|caller| Label::new("caller", caller.to_owned())))
                .chain(agent.map(|agent| Label::new("agent", agent.to_owned())))
                .collect()
        };
        let counter = |name: &'static str, label| {
            recorder.register_counter(&Key::from_parts(name, with_labels(label)), &metadata())
        };
        Self {
            outcomes: TurnOutcome::ALL
                .map(|outcome| counter("agent_turns_total", Some(("outcome", outcome.label())))),
            prompt_tokens: counter("agent_tokens_total", Some(("kind", "prompt"))),
            completion_tokens: counter("agent_tokens_total", Some(("kind", "completion"))),
            quota_refusals: counter("agent_quota_refusals_total", None),
        }
    }
}

impl AgentCounters {
    fn register(recorder: &dyn Recorder, agent: Option<&str>, callers: Option<&[String]>) -> Self {
        let labelled: HashMap<String, CallerCounters> = callers
            .unwrap_or_default()
            .iter()
            .map(|caller| {
                (
                    caller.clone(),
                    CallerCounters::register(recorder, agent, Some(caller)),
                )
            })
            .collect();
        let unlabelled = match labelled.get(crate::access::ANONYMOUS) {
            Some(anonymous) if callers.is_some() => anonymous.clone(),
            _ if callers.is_some() => {
                CallerCounters::register(recorder, agent, Some(crate::access::ANONYMOUS))
            }
            _ => CallerCounters::register(recorder, agent, None),
        };
        Self {
            callers: labelled,
            unlabelled,
        }
    }
}

impl TurnMetrics {
    /// With `callers` (every caller name the configuration allows), the per-caller counters
    /// carry a `caller` label; with `agents` (the `[[agents]]` ids), an `agent` label; else they
    /// are unlabelled.
    fn register(
        recorder: &dyn Recorder,
        callers: Option<&[String]>,
        agents: Option<&[&str]>,
    ) -> Self {
        let agents: HashMap<String, AgentCounters> = match agents {
            Some(ids) => ids
                .iter()
                .map(|id| {
                    let counters = AgentCounters::register(recorder, Some(id), callers);
                    ((*id).to_owned(), counters)
                })
                .collect(),
            None => HashMap::from([(
                String::new(),
                AgentCounters::register(recorder, None, callers),
            )]),
        };
        let first = agents
            .iter()
            .min_by_key(|(id, _)| id.as_str())
            .map(|(_, counters)| counters.clone());
        let fallback = first.unwrap_or_else(|| AgentCounters::register(recorder, None, callers));
        Self {
            agents: Arc::new(agents),
            fallback,
            duration: histogram(recorder, "agent_turn_duration_seconds", &[]),
            model_calls: counter(recorder, "agent_model_calls_total", &[]),
            tool_calls: counter(recorder, "agent_tool_calls_total", &[]),
            history_cached: counter(
                recorder,
                "agent_session_history_total",
                &[("source", "cache")],
            ),
            history_read: counter(
                recorder,
                "agent_session_history_total",
                &[("source", "store")],
            ),
            context: ContextCounters::register(recorder),
        }
    }

    /// Counts a locked turn's history window, taken from the history cache or read.
    pub(crate) fn history(&self, cached: bool) {
        let counter = if cached {
            &self.history_cached
        } else {
            &self.history_read
        };
        counter.increment(1);
    }

    fn of(&self, agent: &str, caller: &str) -> &CallerCounters {
        let agent = match self.agents.get(agent) {
            Some(counters) => counters,
            // Without `[[agents]]` the one entry is unlabelled.
            None => self.agents.get("").unwrap_or(&self.fallback),
        };
        agent.callers.get(caller).unwrap_or(&agent.unlabelled)
    }

    /// Counts a turn of `caller` with `agent` that ended without being stored.
    pub(crate) fn failed(&self, agent: &str, caller: &str, outcome: TurnOutcome) {
        self.of(agent, caller).outcome(outcome).increment(1);
    }

    /// Counts a turn refused because `caller` used its daily token quota.
    pub(crate) fn quota_refused(&self, agent: &str, caller: &str) {
        self.of(agent, caller).quota_refusals.increment(1);
    }

    /// Counts a turn of `caller` with `agent` whose work was done: its cost whatever happened
    /// next, and its outcome (completed only once it is stored).
    pub(crate) fn finished(
        &self,
        agent: &str,
        caller: &str,
        outcome: TurnOutcome,
        cost: &TurnCost,
    ) {
        let counters = self.of(agent, caller);
        counters.outcome(outcome).increment(1);
        self.duration.record(cost.started.elapsed().as_secs_f64());
        self.model_calls.increment(cost.model_calls as u64);
        counters.prompt_tokens.increment(cost.usage.prompt_tokens);
        counters
            .completion_tokens
            .increment(cost.usage.completion_tokens);
        self.tool_calls.increment(cost.tool_calls as u64);
        self.context.count(cost);
    }
}

impl CallerCounters {
    fn outcome(&self, outcome: TurnOutcome) -> &Counter {
        // ALL lists the variants in declaration order, so a variant's discriminant is its index.
        &self.outcomes[outcome as usize]
    }
}

/// What a finished turn cost, counted whether or not it is stored.
#[derive(Debug)]
pub(crate) struct TurnCost {
    pub(crate) started: Instant,
    pub(crate) model_calls: usize,
    pub(crate) usage: agent_core::TokenUsage,
    pub(crate) tool_calls: usize,
    /// History messages left out of its requests.
    pub(crate) left_out: usize,
    /// Its compaction: the turns covered, or none when it failed.
    pub(crate) compacted: Option<Option<usize>>,
}

impl TurnCost {
    pub(crate) fn of(result: &agent_core::TurnResult, started: Instant) -> Self {
        Self {
            started,
            model_calls: result.steps,
            usage: result.turn.usage,
            // No tool-name label: a model can invent names, and labels must stay bounded.
            tool_calls: result
                .turn
                .messages
                .iter()
                .map(|message| message.tool_calls.len())
                .sum(),
            left_out: result.left_out,
            compacted: result
                .compaction
                .as_ref()
                .map(|compaction| compaction.as_ref().ok().map(|compaction| compaction.turns)),
        }
    }
}

/// The handles of one route: per (method, status), its counter and latency histogram; per error
/// code, its counter.
#[derive(Default)]
struct RouteMetrics {
    requests: Vec<((Method, u16), (Counter, Histogram))>,
    errors: Vec<(ErrorCode, Counter)>,
}

/// One worker's view of the metrics: the application's, plus a cache of per-route handles so the
/// hot path neither rebuilds nor hashes label sets, and allocates nothing once a route, method and
/// status have been seen. Lives on its worker's thread (an `Rc` in the worker's app data).
pub(crate) struct WorkerMetrics {
    app: Arc<AppMetrics>,
    routes: RefCell<HashMap<String, RouteMetrics>>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WorkerMetrics")
            .finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    pub(crate) fn new(app: Arc<AppMetrics>) -> Rc<Self> {
        Rc::new(Self {
            app,
            routes: RefCell::new(HashMap::new()),
        })
    }

    /// Counts a request in flight until the guard is dropped (also when the client goes away).
    pub(crate) fn in_flight(self: &Rc<Self>) -> InFlight {
        self.app.in_flight.increment(1.0);
        InFlight(Rc::clone(self))
    }

    /// Counts a request (and its error code, when it answered an error) and its latency.
    pub(crate) fn record_request(
        &self,
        route: &str,
        method: &Method,
        status: u16,
        code: Option<ErrorCode>,
        started: Instant,
    ) {
        let elapsed = started.elapsed().as_secs_f64();
        let mut cache = self.routes.borrow_mut();
        if !cache.contains_key(route) {
            cache.insert(route.to_owned(), RouteMetrics::default());
        }
        let Some(route_metrics) = cache.get_mut(route) else {
            return;
        };
        if let Some(code) = code {
            let errors = &mut route_metrics.errors;
            let index = match errors.iter().position(|(known, _)| *known == code) {
                Some(index) => index,
                None => {
                    errors.push((code, self.register_error(route, code)));
                    errors.len() - 1
                }
            };
            errors[index].1.increment(1);
        }
        let handles = &mut route_metrics.requests;
        let index = match handles
            .iter()
            .position(|((known_method, known_status), _)| {
                known_method == method && *known_status == status
            }) {
            Some(index) => index,
            None => {
                handles.push((
                    (method.clone(), status),
                    self.register(route, method, status),
                ));
                handles.len() - 1
            }
        };
        let (_, (counter, histogram)) = &handles[index];
        counter.increment(1);
        histogram.record(elapsed);
    }

    fn register_error(&self, route: &str, code: ErrorCode) -> Counter {
        self.app.recorder.register_counter(
            &Key::from_parts(
                "http_errors_total",
                vec![
                    Label::new("route", route.to_owned()),
                    Label::new("code", code.to_string()),
                ],
            ),
            &metadata(),
        )
    }

    fn register(&self, route: &str, method: &Method, status: u16) -> (Counter, Histogram) {
        let route = Label::new("route", route.to_owned());
        let method = Label::new("method", method.as_str().to_owned());
        let recorder = &self.app.recorder;
        let counter = recorder.register_counter(
            &Key::from_parts(
                "http_requests_total",
                vec![
                    route.clone(),
                    method.clone(),
                    Label::new("status", status.to_string()),
                ],
            ),
            &metadata(),
        );
        let histogram = recorder.register_histogram(
            &Key::from_parts("http_request_duration_seconds", vec![route, method]),
            &metadata(),
        );
        (counter, histogram)
    }
}

/// A request in flight; see [`WorkerMetrics::in_flight`].
pub(crate) struct InFlight(Rc<WorkerMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.app.in_flight.decrement(1.0);
    }
}
