//! `cargo xtask chaos`: breaks the running Compose stack on purpose (Redis stopped, Postgres
//! stopped, model faults, SIGTERM and SIGKILL of the agent) while 32 clients hold multi-turn
//! conversations, records every request, then reads Postgres: no acknowledged turn lost or
//! stored twice, no half-stored turn, no gap, and no error the documented behaviour does not
//! allow.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use serde_json::{Value, json};
use xshell::Shell;

use crate::stack::TestStack;
use dev_harness::http::{self, CallError};

const PROJECT: &str = "agent-chaos";
const CLIENTS: usize = 32;
const TURNS_PER_SESSION: usize = 4;
/// Load before the fault starts, and after the stack has recovered.
const BEFORE: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(10);
/// How long Redis or Postgres stays stopped.
const OUTAGE: Duration = Duration::from_secs(10);
/// The session lock's TTL in the chaos stack: turn deadline (8 s, docker/compose.chaos.yaml)
/// plus the server's fixed 30 s margin.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(38);
/// How long a client keeps retrying one turn before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(90);
/// A client's bound on one request (an idempotent retry may wait out the first claim's lease).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// The longest an error answer may take while a backend is down (connect timeout 2 s, pool wait).
const ERROR_DEADLINE: Duration = Duration::from_secs(10);

/// What a scenario breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Redis,
    Postgres,
    Model,
    Term,
    Kill,
}

impl Fault {
    const ALL: [Self; 5] = [
        Self::Redis,
        Self::Postgres,
        Self::Model,
        Self::Term,
        Self::Kill,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis-stopped-10s",
            Self::Postgres => "postgres-stopped-10s",
            Self::Model => "model-429-500-timeouts",
            Self::Term => "agent-sigterm",
            Self::Kill => "agent-sigkill",
        }
    }

    fn prefix(self) -> String {
        format!("chaos-{self:?}").to_lowercase()
    }

    /// Whether an attempt's result is what the documented behaviour allows during this fault
    /// (docs/api.md: Redis down → 503, Postgres down → 503, model failures → 502/503/504, a draining
    /// server refuses new connections and ends streams with `shutdown`, a crashed holder's lock
    /// answers 409 until its TTL).
    pub(crate) fn allows(self, label: &str) -> bool {
        let status = label.split(' ').next().unwrap_or("");
        match self {
            Self::Redis | Self::Postgres => {
                status == "503" || label.starts_with("stream error storage_unavailable")
            }
            Self::Model => {
                matches!(status, "502" | "503" | "504")
                    || label.starts_with("stream error model_")
                    || label.starts_with("stream error turn_deadline")
            }
            Self::Term => {
                matches!(
                    label,
                    "connect" | "no answer" | "reset" | "stream shutdown stored=false"
                ) || status == "503"
            }
            Self::Kill => {
                matches!(label, "connect" | "no answer" | "reset" | "stream reset")
                    || label.starts_with("stream cut")
                    || matches!(status, "409" | "503")
            }
        }
    }

    /// How long after the fault ends its errors may still show.
    fn grace(self) -> Duration {
        match self {
            Self::Redis | Self::Term => Duration::from_secs(5),
            Self::Postgres => Duration::from_secs(8),
            // A model call that began in the fault finishes its retries (3 × 2 s + backoff).
            Self::Model => Duration::from_secs(10),
            // A dead holder's lock lives out its TTL; retries behind it wait for the lock.
            Self::Kill => LOCK_TTL + Duration::from_secs(10),
        }
    }
}

/// What a client does with the outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Acknowledged: the turn is stored.
    Ack,
    /// Not stored (or idempotent): send it again.
    Retry,
    /// May or may not be stored; a retry could store it twice.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct AttemptRecord {
    start: Duration,
    end: Duration,
    pub(crate) label: String,
    decision: Decision,
}

#[derive(Debug)]
pub(crate) struct TurnRecord {
    message: String,
    acked: bool,
    gave_up: bool,
    /// The session id the acknowledging answer named, when it said one.
    session: Option<String>,
}

/// What the clients of one scenario share.
struct Load {
    port: u16,
    authorization: String,
    prefix: String,
    scenario: &'static str,
    began: Instant,
    stop: AtomicBool,
    attempts: Mutex<Vec<AttemptRecord>>,
    turns: Mutex<Vec<TurnRecord>>,
    log: Arc<Mutex<BufWriter<File>>>,
}

impl Load {
    fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// One client: sessions of a few turns each, until told to stop; streams when `streaming`.
    /// Every other session starts without an id, as a tutorial client does: the server names it
    /// in the first answer (its first turn takes no lock), and the client continues with that
    /// id; if the first turn is not acknowledged with an id, the client starts a new session.
    fn client(&self, client: usize, streaming: bool) {
        for session_number in 0_u64.. {
            let label = format!("{}-c{client:02}-s{session_number}", self.prefix);
            let mut session = session_number.is_multiple_of(2).then(|| label.clone());
            for turn in 1..=TURNS_PER_SESSION {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let record = self.turn(client, &label, session.as_deref(), turn, streaming);
                let named = record.acked.then(|| record.session.clone()).flatten();
                self.turns.lock().expect("turns").push(record);
                if session.is_none() {
                    match named {
                        Some(id) => session = Some(id),
                        None => break,
                    }
                }
            }
        }
    }

    /// One turn of the session labelled `label` (the label is in every message, so the stored
    /// turns can be found by content), sent with `session` as its id or none.
    fn turn(
        &self,
        client: usize,
        label: &str,
        session: Option<&str>,
        turn: usize,
        streaming: bool,
    ) -> TurnRecord {
        // Streams stay open a while, so SIGTERM finds some in flight.
        let message = if streaming {
            format!("sleep 300 {label} turn {turn}")
        } else {
            format!("{label} turn {turn}")
        };
        let body = json!({ "message": message, "session_id": session }).to_string();
        let key = format!("{label}-t{turn}");
        let begun = Instant::now();
        for attempt in 1.. {
            let start = self.elapsed();
            let (outcome, decision, named) = if streaming {
                self.stream_attempt(&body, &message)
            } else {
                self.agent_attempt(&body, &key, &message)
            };
            let end = self.elapsed();
            let line = json!({
                "scenario": self.scenario, "client": client, "session": label,
                "session_id": session.map(str::to_owned).or_else(|| named.clone()), "turn": turn,
                "attempt": attempt, "endpoint": if streaming { "/agent/stream" } else { "/agent" },
                "start_ms": start.as_millis() as u64, "elapsed_ms": (end - start).as_millis() as u64,
                "result": outcome, "decision": format!("{decision:?}"),
            });
            let _ = writeln!(self.log.lock().expect("log"), "{line}");
            self.attempts.lock().expect("attempts").push(AttemptRecord {
                start,
                end,
                label: outcome,
                decision,
            });
            match decision {
                Decision::Ack => {
                    return TurnRecord {
                        message,
                        acked: true,
                        gave_up: false,
                        session: named,
                    };
                }
                Decision::Unknown => break,
                Decision::Retry if begun.elapsed() > GIVE_UP => {
                    return TurnRecord {
                        message,
                        acked: false,
                        gave_up: true,
                        session: None,
                    };
                }
                Decision::Retry => {
                    std::thread::sleep(Duration::from_millis(200 * attempt.min(5) as u64));
                }
            }
        }
        TurnRecord {
            message,
            acked: false,
            gave_up: false,
            session: None,
        }
    }

    /// `POST /agent` with an Idempotency-Key, so every failure can be retried safely. Answers
    /// the outcome, what to do, and the session id an acknowledgement named.
    fn agent_attempt(&self, body: &str, key: &str, message: &str) -> Attempt {
        let headers = [
            ("Authorization", self.authorization.as_str()),
            ("Idempotency-Key", key),
        ];
        match http::call(
            self.port,
            "POST",
            "/agent",
            &headers,
            Some(body),
            REQUEST_TIMEOUT,
        ) {
            Ok((200, answer)) => {
                let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
                if answer["response"].as_str() == Some(&format!("echo: {message}")) {
                    ("200".into(), Decision::Ack, named_session(&answer))
                } else {
                    (
                        format!("200 unexpected body {answer}"),
                        Decision::Unknown,
                        None,
                    )
                }
            }
            Ok((status, answer)) => with_no_session(error_answer(status, &answer)),
            Err(error) => (error.label().into(), Decision::Retry, None),
        }
    }

    /// `POST /agent/stream`: acknowledged by `done` (or `shutdown` with `stored: true`).
    fn stream_attempt(&self, body: &str, message: &str) -> Attempt {
        let headers = [
            ("Authorization", self.authorization.as_str()),
            ("Accept", "text/event-stream"),
        ];
        match http::call(
            self.port,
            "POST",
            "/agent/stream",
            &headers,
            Some(body),
            REQUEST_TIMEOUT,
        ) {
            Ok((200, events)) => stream_outcome(&events, message),
            Ok((status, answer)) => with_no_session(error_answer(status, &answer)),
            // Without a byte of answer the server never sent the stream's head, which it does
            // before the model is even called: nothing can have been stored.
            Err(error @ (CallError::Connect(_) | CallError::NoAnswer(_))) => {
                (error.label().into(), Decision::Retry, None)
            }
            Err(error) => (format!("stream {}", error.label()), Decision::Unknown, None),
        }
    }
}

/// A running load: the clients' threads and what they share.
pub(crate) struct LoadRun {
    load: Arc<Load>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl LoadRun {
    /// Starts [`CLIENTS`] clients on 127.0.0.1:`port` (every fourth streams), on sessions named
    /// `<prefix>-c<client>-s<n>`, recording every attempt into `log`.
    pub(crate) fn start(
        port: u16,
        api_key: &str,
        prefix: &str,
        scenario: &'static str,
        log: &Arc<Mutex<BufWriter<File>>>,
    ) -> Self {
        let load = Arc::new(Load {
            port,
            authorization: format!("Bearer {api_key}"),
            prefix: prefix.to_owned(),
            scenario,
            began: Instant::now(),
            stop: AtomicBool::new(false),
            attempts: Mutex::new(Vec::new()),
            turns: Mutex::new(Vec::new()),
            log: Arc::clone(log),
        });
        let clients = (0..CLIENTS)
            .map(|client| {
                let load = Arc::clone(&load);
                std::thread::spawn(move || load.client(client, client % 4 == 0))
            })
            .collect();
        Self { load, clients }
    }

    /// Time since the load started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.load.elapsed()
    }

    fn began(&self) -> Instant {
        self.load.began
    }

    /// Stops the clients after their current turn (retries included) and answers every
    /// attempt and every turn.
    pub(crate) fn finish(self) -> anyhow::Result<(Vec<AttemptRecord>, Vec<TurnRecord>)> {
        self.load.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client
                .join()
                .map_err(|_| anyhow::anyhow!("a load client panicked"))?;
        }
        self.load.log.lock().expect("log").flush()?;
        let attempts = std::mem::take(&mut *self.load.attempts.lock().expect("attempts"));
        let turns = std::mem::take(&mut *self.load.turns.lock().expect("turns"));
        Ok((attempts, turns))
    }
}

/// A JSON error answer: `<status> <code>`; retried when it says "later".
fn error_answer(status: u16, answer: &str) -> (String, Decision) {
    let answer: Value = serde_json::from_str(answer).unwrap_or_default();
    let code = answer["error"]["code"].as_str().unwrap_or("no-json-error");
    let decision = if matches!(status, 409 | 429 | 502 | 503 | 504) {
        Decision::Retry
    } else {
        Decision::Unknown
    };
    (format!("{status} {code}"), decision)
}

/// The last event of a stream decides.
/// An attempt's outcome for the report, what to do next, and the session id its
/// acknowledgement named.
type Attempt = (String, Decision, Option<String>);

fn with_no_session((outcome, decision): (String, Decision)) -> Attempt {
    (outcome, decision, None)
}

fn named_session(answer: &Value) -> Option<String> {
    answer["session_id"].as_str().map(str::to_owned)
}

fn stream_outcome(events: &str, message: &str) -> Attempt {
    let last = events
        .split("\n\n")
        .filter_map(|event| {
            let name = event
                .lines()
                .find_map(|line| line.strip_prefix("event: "))?;
            let data = event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .unwrap_or("{}");
            Some((
                name,
                serde_json::from_str::<Value>(data).unwrap_or_default(),
            ))
        })
        .last();
    match last {
        Some(("done", data)) if data["response"].as_str() == Some(&format!("echo: {message}")) => {
            ("stream done".into(), Decision::Ack, named_session(&data))
        }
        Some(("done", data)) => (format!("stream done with {data}"), Decision::Unknown, None),
        Some(("shutdown", data)) if data["stored"] == true => {
            ("stream shutdown stored=true".into(), Decision::Ack, None)
        }
        Some(("shutdown", _)) => ("stream shutdown stored=false".into(), Decision::Retry, None),
        Some(("error", data)) => (
            format!(
                "stream error {}",
                data["error"]["code"].as_str().unwrap_or("?")
            ),
            Decision::Retry,
            None,
        ),
        Some((name, _)) => (format!("stream cut after {name}"), Decision::Unknown, None),
        None => ("stream cut".into(), Decision::Unknown, None),
    }
}

/// A probe result over time.
#[derive(Debug)]
struct ProbeRecord {
    at: Duration,
    path: &'static str,
    label: String,
}

/// Polls /health and /ready every 250 ms until stopped.
fn monitor(port: u16, began: Instant, stop: &AtomicBool) -> Vec<ProbeRecord> {
    let mut records = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for path in ["/health", "/ready"] {
            let at = began.elapsed();
            let label = match http::call(port, "GET", path, &[], None, Duration::from_secs(5)) {
                Ok((status, _)) => status.to_string(),
                Err(error) => error.label().to_owned(),
            };
            records.push(ProbeRecord { at, path, label });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    records
}

/// One row of the final table, with what went wrong.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) requests: usize,
    pub(crate) ok: usize,
    pub(crate) expected: usize,
    pub(crate) unexpected: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) broken_sessions: usize,
    pub(crate) problems: Vec<String>,
}

pub(crate) fn run(shell: &Shell, only: Option<String>) -> anyhow::Result<()> {
    let fake_port = dev_harness::free_port()?;
    let stack = TestStack::start(
        shell,
        PROJECT,
        &["docker/compose.chaos.yaml"],
        vec![("FAKE_MODEL_PORT".into(), fake_port.to_string())],
        &["up", "-d"],
    )?;
    let directory = crate::project_root().join("target").join(PROJECT);
    std::fs::create_dir_all(&directory)?;
    let log_path = directory.join("requests.jsonl");
    let log = Arc::new(Mutex::new(BufWriter::new(File::create(&log_path)?)));
    let mut rows = Vec::new();
    for fault in Fault::ALL {
        if only
            .as_deref()
            .is_some_and(|only| !fault.name().contains(only))
        {
            continue;
        }
        println!("xtask: chaos scenario {}", fault.name());
        let row = scenario(&stack, fault, fake_port, &log)?;
        for problem in &row.problems {
            println!("xtask:   problem: {problem}");
        }
        rows.push(row);
    }
    log.lock().expect("log").flush()?;
    print_table(&rows);
    println!("xtask: every request is recorded in {}", log_path.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| !row.problems.is_empty())
        .map(|row| row.scenario)
        .collect();
    if !failed.is_empty() {
        bail!("chaos failed in: {}", failed.join(", "));
    }
    println!("xtask: chaos passed");
    Ok(())
}

/// The results as a Markdown table.
pub(crate) fn print_table(rows: &[Row]) {
    println!("\n{}", table(rows));
}

fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "| scenario | requests | ok | expected errors | unexpected errors | turns lost | duplicated | broken sessions |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.requests,
            row.ok,
            row.expected,
            row.unexpected,
            row.lost,
            row.duplicated,
            row.broken_sessions
        ));
    }
    text
}

/// Runs the load, breaks the stack during it, lets it recover, then checks everything.
fn scenario(
    stack: &TestStack,
    fault: Fault,
    fake_port: u16,
    log: &Arc<Mutex<BufWriter<File>>>,
) -> anyhow::Result<Row> {
    let agent = stack.container("agent")?;
    let restarts_before = inspect(&agent, "{{.RestartCount}}")?;
    let load = LoadRun::start(
        stack.port,
        &stack.api_key,
        &fault.prefix(),
        fault.name(),
        log,
    );
    let probes_stop = Arc::new(AtomicBool::new(false));
    let monitor_thread = {
        let (stop, began, port) = (Arc::clone(&probes_stop), load.began(), stack.port);
        std::thread::spawn(move || monitor(port, began, &stop))
    };

    std::thread::sleep(BEFORE);
    let mut problems = Vec::new();
    let fault_start = load.elapsed();
    let mut lock_ttls = Vec::new();
    match fault {
        Fault::Redis | Fault::Postgres => {
            let service = if fault == Fault::Redis {
                "redis"
            } else {
                "postgres"
            };
            let container = stack.container(service)?;
            docker(&["stop", &container])?;
            std::thread::sleep(OUTAGE);
            docker(&["start", &container])?;
            wait_healthy(&container, Duration::from_secs(60))?;
        }
        Fault::Model => {
            for (mode, seconds) in [("429", 4), ("500", 3), ("timeout", 4), ("none", 0)] {
                let (status, _) = http::call(
                    fake_port,
                    "PUT",
                    &format!("/fault/{mode}"),
                    &[],
                    None,
                    Duration::from_secs(5),
                )?;
                ensure!(
                    status == 204,
                    "the fake model refused fault {mode}: {status}"
                );
                std::thread::sleep(Duration::from_secs(seconds));
            }
        }
        Fault::Term | Fault::Kill => {
            let signal = if fault == Fault::Term { "TERM" } else { "KILL" };
            let since = unix_seconds();
            signal_agent(&agent, signal)?;
            let restarted = wait_restarted(&agent, &restarts_before, Duration::from_secs(60))?;
            wait_healthy(&agent, Duration::from_secs(60))?;
            println!(
                "xtask:   SIG{signal}: the agent was restarted and healthy again after {:.1} s",
                restarted.as_secs_f64()
            );
            let exit = exit_codes(&agent, since)?;
            if fault == Fault::Term && exit.first().map(String::as_str) != Some("0") {
                problems.push(format!(
                    "after SIGTERM the agent exited with {exit:?}, not 0"
                ));
            }
            if fault == Fault::Term {
                let logs = docker_output(&["logs", &agent])?;
                if !(logs.contains("shutdown began") && logs.contains("stopped")) {
                    problems.push("the agent's log does not show the drain".into());
                }
            }
            if fault == Fault::Kill {
                lock_ttls = lock_ttls_ms(stack)?;
            }
        }
    }
    let recovered = load.elapsed();
    let window = (fault_start, recovered + fault.grace());
    let settle = if fault == Fault::Kill {
        AFTER + LOCK_TTL
    } else {
        AFTER
    };
    std::thread::sleep(settle);
    let (attempts, turns) = load.finish()?;
    probes_stop.store(true, Ordering::SeqCst);
    let probes = monitor_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the probe monitor panicked"))?;

    // Requests: every error must be one the fault allows, inside the fault's window.
    let mut row = Row {
        scenario: fault.name(),
        ..Row::default()
    };
    let slow_errors_matter = matches!(fault, Fault::Redis | Fault::Postgres);
    count_attempts(
        &attempts,
        &turns,
        window,
        recovered,
        |attempt| {
            fault.allows(&attempt.label)
                && !(slow_errors_matter && attempt.end - attempt.start > ERROR_DEADLINE)
        },
        &mut row,
        &mut problems,
    );
    if row.expected == 0 && fault != Fault::Term {
        problems.push("the fault caused no error at all: did it happen?".into());
    }
    if fault == Fault::Term {
        // Requests in flight when the signal arrived must complete (the drain).
        let in_flight: Vec<&AttemptRecord> = attempts
            .iter()
            .filter(|attempt| attempt.start < fault_start && attempt.end > fault_start)
            .collect();
        let streams = in_flight
            .iter()
            .filter(|attempt| attempt.label.starts_with("stream"))
            .count();
        let unfinished = in_flight
            .iter()
            .filter(|attempt| attempt.decision != Decision::Ack)
            .count();
        println!(
            "xtask:   in flight at SIGTERM: {} requests ({streams} streams), {unfinished} not completed",
            in_flight.len()
        );
        if streams == 0 || unfinished > 0 {
            problems.push(format!(
                "{} requests in flight at SIGTERM ({streams} streams), {unfinished} not completed",
                in_flight.len()
            ));
        }
    }

    check_probes(fault, &probes, (fault_start, recovered), &mut problems);
    let restarts_after = inspect(&agent, "{{.RestartCount}}")?;
    match fault {
        Fault::Term | Fault::Kill if restarts_after == restarts_before => {
            problems.push("the agent was not restarted".into());
        }
        Fault::Redis | Fault::Postgres | Fault::Model if restarts_after != restarts_before => {
            problems.push("the agent restarted: it should have resumed on its own".into());
        }
        _ => {}
    }
    if fault == Fault::Kill {
        let too_long: Vec<&u64> = lock_ttls
            .iter()
            .filter(|ttl| **ttl > LOCK_TTL.as_millis() as u64)
            .collect();
        if !too_long.is_empty() {
            problems.push(format!(
                "session locks outlive the TTL: {too_long:?} ms left"
            ));
        }
        println!(
            "xtask:   right after the restart: {} session locks in Redis (the dead process's and new ones), longest {} ms to live (TTL {} ms)",
            lock_ttls.len(),
            lock_ttls.iter().max().unwrap_or(&0),
            LOCK_TTL.as_millis()
        );
    }
    let leftover = lock_ttls_ms(stack)?;
    if !leftover.is_empty() {
        problems.push(format!(
            "{} session locks still held after the load ended",
            leftover.len()
        ));
    }

    // Postgres: the stored conversations against what the clients were told.
    check_database(stack, &fault.prefix(), &turns, &mut row, &mut problems)?;
    row.problems = problems;
    Ok(row)
}

/// /health never fails while a dependency is down; /ready follows the documented policy (Redis
/// and the model are not readiness conditions, Postgres is) and is 200 at the end.
fn check_probes(
    fault: Fault,
    probes: &[ProbeRecord],
    outage: (Duration, Duration),
    problems: &mut Vec<String>,
) {
    let health_failures: Vec<&ProbeRecord> = probes
        .iter()
        .filter(|probe| probe.path == "/health" && probe.label != "200")
        .collect();
    let ready: Vec<&ProbeRecord> = probes
        .iter()
        .filter(|probe| probe.path == "/ready")
        .collect();
    match fault {
        Fault::Redis | Fault::Postgres | Fault::Model if !health_failures.is_empty() => {
            problems.push(format!(
                "/health failed {} times, first {} at {:.1} s",
                health_failures.len(),
                health_failures[0].label,
                health_failures[0].at.as_secs_f64()
            ));
        }
        _ => {}
    }
    let ready_not_200 = ready.iter().filter(|probe| probe.label != "200").count();
    match fault {
        Fault::Redis | Fault::Model if ready_not_200 > 0 => problems.push(format!(
            "/ready was not 200 {ready_not_200} times (Redis is optional: degraded, still ready)"
        )),
        Fault::Postgres
            if !ready.iter().any(|probe| {
                probe.label == "503" && probe.at >= outage.0 && probe.at <= outage.1
            }) =>
        {
            problems.push("/ready never answered 503 while Postgres was down".into());
        }
        _ => {}
    }
    if ready.last().is_none_or(|probe| probe.label != "200") {
        problems.push("/ready is not 200 at the end".into());
    }
}

/// Counts `attempts` into `row`: acknowledged, errors `allowed` inside `window`, and the rest as
/// unexpected; a problem when anything was unexpected, when no turn succeeded after
/// `recovered`, or when a turn was still failing when its client gave up.
pub(crate) fn count_attempts(
    attempts: &[AttemptRecord],
    turns: &[TurnRecord],
    window: (Duration, Duration),
    recovered: Duration,
    allowed: impl Fn(&AttemptRecord) -> bool,
    row: &mut Row,
    problems: &mut Vec<String>,
) {
    row.requests = attempts.len();
    let mut unexpected_examples = Vec::new();
    for attempt in attempts {
        if attempt.decision == Decision::Ack {
            row.ok += 1;
            continue;
        }
        let in_window = attempt.end >= window.0 && attempt.start <= window.1;
        if in_window && allowed(attempt) {
            row.expected += 1;
        } else {
            row.unexpected += 1;
            if unexpected_examples.len() < 8 {
                unexpected_examples.push(format!(
                    "{} at {:.1} s (took {:.1} s)",
                    attempt.label,
                    attempt.start.as_secs_f64(),
                    (attempt.end - attempt.start).as_secs_f64()
                ));
            }
        }
    }
    if row.unexpected > 0 {
        problems.push(format!(
            "{} unexpected errors (window {:.1}-{:.1} s), e.g. {}",
            row.unexpected,
            window.0.as_secs_f64(),
            window.1.as_secs_f64(),
            unexpected_examples.join("; ")
        ));
    }
    if !attempts
        .iter()
        .any(|attempt| attempt.decision == Decision::Ack && attempt.start > recovered)
    {
        problems.push("no turn succeeded after the fault ended".into());
    }
    let gave_up = turns.iter().filter(|turn| turn.gave_up).count();
    if gave_up > 0 {
        problems.push(format!(
            "{gave_up} turns still failing after {GIVE_UP:?} of retries"
        ));
    }
}

/// Every acknowledged turn is stored exactly once; no turn twice; every session is whole: no
/// gap in the sequence, user/assistant pairs that match, counters that agree.
pub(crate) fn check_database(
    stack: &TestStack,
    prefix: &str,
    turns: &[TurnRecord],
    row: &mut Row,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let postgres = stack.container("postgres")?;
    // The load's sessions: named with the prefix, or named by the server and holding a message
    // that carries the prefix.
    let ours = format!(
        "(SELECT id FROM sessions WHERE id LIKE '{prefix}-%' UNION SELECT session_id FROM messages \
         WHERE role = 'user' AND content LIKE '%{prefix}-%')"
    );
    let messages = psql(
        &postgres,
        &format!(
            "SELECT session_id, sequence, role, content FROM messages \
             WHERE session_id IN {ours} ORDER BY session_id, sequence"
        ),
    )?;
    let sessions = psql(
        &postgres,
        &format!("SELECT id, next_sequence, turn_count FROM sessions WHERE id IN {ours}"),
    )?;
    let mut by_session: HashMap<&str, Vec<(i64, &str, &str)>> = HashMap::new();
    for fields in &messages {
        let [session, sequence, role, content] = fields.as_slice() else {
            bail!("unexpected psql row {fields:?}");
        };
        by_session.entry(session).or_default().push((
            sequence.parse()?,
            role.as_str(),
            content.as_str(),
        ));
    }
    let mut stored: HashMap<&str, usize> = HashMap::new();
    let mut broken = Vec::new();
    for fields in &sessions {
        let [id, next_sequence, turn_count] = fields.as_slice() else {
            bail!("unexpected psql row {fields:?}");
        };
        let rows = by_session.remove(id.as_str()).unwrap_or_default();
        let contiguous = rows
            .iter()
            .enumerate()
            .all(|(index, (sequence, _, _))| *sequence == index as i64);
        let pairs: Vec<_> = rows.chunks(2).collect();
        let whole = rows.len().is_multiple_of(2)
            && pairs.iter().all(|pair| {
                pair[0].1 == "user"
                    && pair[1].1 == "assistant"
                    && pair[1].2 == format!("echo: {}", pair[0].2)
            });
        let counters = next_sequence.parse::<usize>().ok() == Some(rows.len())
            && turn_count.parse::<usize>().ok() == Some(pairs.len());
        if !(contiguous && whole && counters) {
            broken.push(id.clone());
        }
        for pair in pairs {
            *stored.entry(pair[0].2).or_default() += 1;
        }
    }
    if !by_session.is_empty() {
        broken.extend(
            by_session
                .keys()
                .map(|id| format!("{id} (messages without a session row)")),
        );
    }
    for turn in turns {
        let count = stored.remove(turn.message.as_str()).unwrap_or(0);
        if turn.acked && count == 0 {
            row.lost += 1;
        }
        if count > 1 {
            row.duplicated += 1;
        }
    }
    if !stored.is_empty() {
        problems.push(format!(
            "{} stored turns no client sent, e.g. {:?}",
            stored.len(),
            stored.keys().next()
        ));
    }
    row.broken_sessions = broken.len();
    if row.lost > 0 {
        problems.push(format!("{} acknowledged turns are not stored", row.lost));
    }
    if row.duplicated > 0 {
        problems.push(format!(
            "{} turns are stored more than once",
            row.duplicated
        ));
    }
    if !broken.is_empty() {
        problems.push(format!(
            "{} sessions have a gap, a half-stored turn or wrong counters, e.g. {}",
            broken.len(),
            broken[0]
        ));
    }
    let acked = turns.iter().filter(|turn| turn.acked).count();
    println!(
        "xtask:   {} turns acknowledged, {} sessions checked in Postgres ({} named by the server)",
        acked,
        sessions.len(),
        sessions
            .iter()
            .filter(|fields| !fields[0].starts_with(&format!("{prefix}-")))
            .count()
    );
    Ok(())
}

/// Rows of a query run with psql inside the Postgres container, fields split.
fn psql(container: &str, query: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let output = docker_output(&[
        "exec", container, "psql", "-U", "agent", "-d", "agent", "-X", "-A", "-t", "-F", "\x1f",
        "-c", query,
    ])?;
    Ok(output
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.split('\x1f').map(str::to_owned).collect())
        .collect())
}

/// The time to live of every session lock in Redis, in milliseconds.
pub(crate) fn lock_ttls_ms(stack: &TestStack) -> anyhow::Result<Vec<u64>> {
    let redis = stack.container("redis")?;
    let keys = docker_output(&[
        "exec",
        &redis,
        "redis-cli",
        "--scan",
        "--pattern",
        "agent:lock:*",
    ])?;
    keys.lines()
        .filter(|key| !key.is_empty())
        .map(|key| {
            let ttl = docker_output(&["exec", &redis, "redis-cli", "pttl", key])?;
            // -2: expired meanwhile; -1 would be a lock without a TTL, which must fail the check.
            Ok(match ttl.trim().parse::<i64>()? {
                -2 => 0,
                -1 => u64::MAX,
                ttl => ttl as u64,
            })
        })
        .collect()
}

/// Sends a signal to the agent's process from the host, as the kernel's OOM killer or a crash
/// would: `docker kill` counts as a manual stop, after which Docker never restarts a container.
pub(crate) fn signal_agent(container: &str, signal: &str) -> anyhow::Result<()> {
    let pid = inspect(container, "{{.State.Pid}}")?;
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

pub(crate) fn wait_restarted(
    container: &str,
    before: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if inspect(container, "{{.RestartCount}}")? != before
            && inspect(container, "{{.State.Status}}")? == "running"
        {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the agent was not restarted within {timeout:?}")
}

pub(crate) fn wait_healthy(container: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if inspect(
            container,
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
        )? == "healthy"
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{container} was not healthy within {timeout:?}")
}

/// Exit codes of the container's processes that died since `since` (Unix seconds).
fn exit_codes(container: &str, since: u64) -> anyhow::Result<Vec<String>> {
    let output = docker_output(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &(unix_seconds() + 1).to_string(),
        "--filter",
        &format!("container={container}"),
        "--filter",
        "event=die",
        "--format",
        "{{index .Actor.Attributes \"exitCode\"}}",
    ])?;
    Ok(output.lines().map(str::to_owned).collect())
}

pub(crate) fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

pub(crate) fn inspect(container: &str, format: &str) -> anyhow::Result<String> {
    Ok(docker_output(&["inspect", "--format", format, container])?
        .trim()
        .to_owned())
}

fn docker(arguments: &[&str]) -> anyhow::Result<()> {
    docker_output(arguments).map(|_| ())
}

pub(crate) fn docker_output(arguments: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker").args(arguments).output()?;
    ensure!(
        output.status.success(),
        "docker {} failed: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{Decision, Row, error_answer, stream_outcome, table};

    fn events(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect()
    }

    #[test]
    fn the_last_event_of_a_stream_decides() {
        let done = r#"{"response":"echo: hi","session_id":"s1","tokens_used":3}"#;
        let cases = [
            (
                events(&[("delta", r#"{"text":"echo"}"#), ("done", done)]),
                "stream done",
                Decision::Ack,
                Some("s1"),
            ),
            (
                events(&[("done", r#"{"response":"something else"}"#)]),
                "stream done with",
                Decision::Unknown,
                None,
            ),
            (
                events(&[("shutdown", r#"{"message":"bye","stored":false}"#)]),
                "stream shutdown stored=false",
                Decision::Retry,
                None,
            ),
            (
                events(&[("shutdown", r#"{"message":"bye","stored":true}"#)]),
                "stream shutdown stored=true",
                Decision::Ack,
                None,
            ),
            (
                events(&[(
                    "error",
                    r#"{"error":{"code":"model_timeout","message":"x"}}"#,
                )]),
                "stream error model_timeout",
                Decision::Retry,
                None,
            ),
            (
                events(&[("delta", r#"{"text":"ec"}"#)]),
                "stream cut after delta",
                Decision::Unknown,
                None,
            ),
            (
                ": keep-alive\n\n".to_owned(),
                "stream cut",
                Decision::Unknown,
                None,
            ),
            (String::new(), "stream cut", Decision::Unknown, None),
        ];
        for (stream, label, decision, session) in cases {
            let (outcome, decided, named) = stream_outcome(&stream, "hi");
            assert!(outcome.starts_with(label), "{stream:?}: {outcome}");
            assert_eq!(
                (decided, named.as_deref()),
                (decision, session),
                "{stream:?}"
            );
        }
    }

    #[test]
    fn error_answers_are_retried_only_when_they_say_later() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        for (status, code, decision) in [
            (503, "storage_unavailable", Decision::Retry),
            (409, "session_busy", Decision::Retry),
            (429, "rate_limited", Decision::Retry),
            (502, "upstream_unavailable", Decision::Retry),
            (504, "model_timeout", Decision::Retry),
            (422, "invalid_request", Decision::Unknown),
            (500, "internal_error", Decision::Unknown),
        ] {
            assert_eq!(
                error_answer(status, &body(code)),
                (format!("{status} {code}"), decision)
            );
        }
        assert_eq!(
            error_answer(502, "<html>bad gateway</html>").0,
            "502 no-json-error"
        );
    }

    #[test]
    fn the_table_has_a_row_per_scenario() {
        let rows = [Row {
            scenario: "redis-stopped-10s",
            requests: 10,
            ok: 8,
            expected: 2,
            ..Row::default()
        }];
        assert_eq!(
            table(&rows).lines().last(),
            Some("| redis-stopped-10s | 10 | 8 | 2 | 0 | 0 | 0 | 0 |")
        );
    }
}
