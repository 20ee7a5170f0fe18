//! The chaos load: clients holding multi-turn conversations (`/agent` with an Idempotency-Key
//! per turn, every fourth client on `/agent/stream`), retrying what is safe to retry and
//! recording every attempt; and the probe monitor.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dev_harness::http::{self, CallError};
use dev_harness::load::{Client, Load, Plan, Program, Request};

/// Clients, each holding sessions of this many turns.
pub(super) const CLIENTS: usize = 32;
pub(super) const TURNS_PER_SESSION: usize = 4;
/// How long a client keeps retrying one turn before it counts as failed.
pub(super) const GIVE_UP: Duration = Duration::from_secs(90);
/// A client's bound on one request (an idempotent retry may wait out the first claim's lease).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
use serde_json::{Value, json};

/// What a client does with the outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Acknowledged: the turn is stored.
    Ack,
    /// Not stored (or idempotent): send it again.
    Retry,
    /// May or may not be stored; a retry could store it twice.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct AttemptRecord {
    pub(super) start: Duration,
    pub(super) end: Duration,
    pub(crate) label: String,
    pub(super) decision: Decision,
}

#[derive(Debug)]
pub(crate) struct TurnRecord {
    pub(super) message: String,
    pub(super) acked: bool,
    pub(super) gave_up: bool,
    /// The session id the acknowledging answer named, when it said one.
    pub(super) session: Option<String>,
}

/// What the clients of one scenario share.
pub(super) struct Conversations {
    pub(super) authorization: String,
    pub(super) prefix: String,
    pub(super) scenario: &'static str,
    pub(super) began: Instant,
    pub(super) attempts: Mutex<Vec<AttemptRecord>>,
    pub(super) turns: Mutex<Vec<TurnRecord>>,
    pub(super) log: Arc<Mutex<BufWriter<File>>>,
}

impl Conversations {
    pub(super) fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// One client's program: sessions of a few turns each, until the run stops; streams when
    /// `streaming`. Every other session starts without an id, as a tutorial client does: the
    /// server names it in the first answer (its first turn takes no lock), and the client
    /// continues with that id; if the first turn is not acknowledged with an id, the client
    /// starts a new session.
    pub(super) async fn client(&self, client: &Client, streaming: bool) {
        for session_number in 0_u64.. {
            let label = format!("{}-c{:02}-s{session_number}", self.prefix, client.index);
            let mut session = session_number.is_multiple_of(2).then(|| label.clone());
            for turn in 1..=TURNS_PER_SESSION {
                if client.stopped() {
                    return;
                }
                let record = self
                    .turn(client, &label, session.as_deref(), turn, streaming)
                    .await;
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
    pub(super) async fn turn(
        &self,
        client: &Client,
        label: &str,
        session: Option<&str>,
        turn: usize,
        streaming: bool,
    ) -> TurnRecord {
        // Streams stay open a while, so SIGTERM finds some in flight. In the MCP scenario every
        // turn calls the MCP server's echo first (the fake model's "tool" command).
        let message = if self.scenario == super::Fault::McpServer.name() {
            format!(r#"tool everything__echo {{"message":"{label} turn {turn}"}}"#)
        } else if streaming {
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
                self.stream_attempt(client, &body, &message).await
            } else {
                self.agent_attempt(client, &body, &key, &message).await
            };
            let end = self.elapsed();
            let line = json!({
                "scenario": self.scenario, "client": client.index, "session": label,
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
                    client
                        .pause(Duration::from_millis(200 * attempt.min(5) as u64))
                        .await;
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

    fn request(&self, path: &str, body: &str, extra: (&'static str, &str)) -> Request {
        Request {
            method: "POST",
            path: path.to_owned(),
            headers: vec![
                ("authorization", self.authorization.clone()),
                (extra.0, extra.1.to_owned()),
            ],
            json: Some(body.to_owned()),
        }
    }

    /// `POST /agent` with an Idempotency-Key, so every failure can be retried safely. Answers
    /// the outcome, what to do, and the session id an acknowledgement named.
    pub(super) async fn agent_attempt(
        &self,
        client: &Client,
        body: &str,
        key: &str,
        message: &str,
    ) -> Attempt {
        let request = self.request("/agent", body, ("idempotency-key", key));
        match client.send(&request, REQUEST_TIMEOUT).await {
            Ok(reply) if reply.status == 200 => {
                let answer: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
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
            Ok(reply) => with_no_session(error_answer(reply.status, &reply.text())),
            Err(error) => (error.label().into(), Decision::Retry, None),
        }
    }

    /// `POST /agent/stream`: acknowledged by `done` (or `shutdown` with `stored: true`).
    pub(super) async fn stream_attempt(
        &self,
        client: &Client,
        body: &str,
        message: &str,
    ) -> Attempt {
        let request = self.request("/agent/stream", body, ("accept", "text/event-stream"));
        match client.send(&request, REQUEST_TIMEOUT).await {
            Ok(reply) if reply.status == 200 => stream_outcome(&reply.text(), message),
            Ok(reply) => with_no_session(error_answer(reply.status, &reply.text())),
            // Without a byte of answer the server never sent the stream's head, which it does
            // before the model is even called: nothing can have been stored.
            Err(error @ (CallError::Connect(_) | CallError::NoAnswer(_))) => {
                (error.label().into(), Decision::Retry, None)
            }
            Err(error) => (format!("stream {}", error.label()), Decision::Unknown, None),
        }
    }
}

/// A running load: the conversation clients on the harness's load generator, and what they
/// share.
pub(crate) struct LoadRun {
    conversations: Arc<Conversations>,
    load: Load,
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
    ) -> anyhow::Result<Self> {
        let conversations = Arc::new(Conversations {
            authorization: format!("Bearer {api_key}"),
            prefix: prefix.to_owned(),
            scenario,
            began: Instant::now(),
            attempts: Mutex::new(Vec::new()),
            turns: Mutex::new(Vec::new()),
            log: Arc::clone(log),
        });
        let shared = Arc::clone(&conversations);
        let program: Arc<Program> = Arc::new(move |client: Client| {
            let conversations = Arc::clone(&shared);
            Box::pin(async move {
                let streaming = client.index.is_multiple_of(4);
                conversations.client(&client, streaming).await;
            })
        });
        let plan = Plan {
            timeout: REQUEST_TIMEOUT,
            ..Plan::clients(CLIENTS)
        };
        let load = Load::start_programs(port, plan, program)?;
        Ok(Self {
            conversations,
            load,
        })
    }

    /// Time since the load started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.conversations.elapsed()
    }

    pub(super) fn began(&self) -> Instant {
        self.conversations.began
    }

    /// Stops the clients after their current turn (retries included) and answers every
    /// attempt and every turn.
    pub(crate) fn finish(self) -> anyhow::Result<(Vec<AttemptRecord>, Vec<TurnRecord>)> {
        self.load.report()?;
        self.conversations.log.lock().expect("log").flush()?;
        let attempts = std::mem::take(&mut *self.conversations.attempts.lock().expect("attempts"));
        let turns = std::mem::take(&mut *self.conversations.turns.lock().expect("turns"));
        Ok((attempts, turns))
    }
}

/// A JSON error answer: `<status> <code>`; retried when it says "later".
pub(super) fn error_answer(status: u16, answer: &str) -> (String, Decision) {
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
pub(super) type Attempt = (String, Decision, Option<String>);

pub(super) fn with_no_session((outcome, decision): (String, Decision)) -> Attempt {
    (outcome, decision, None)
}

pub(super) fn named_session(answer: &Value) -> Option<String> {
    answer["session_id"].as_str().map(str::to_owned)
}

pub(super) fn stream_outcome(events: &str, message: &str) -> Attempt {
    let last = dev_harness::sse::events(events)
        .pop()
        .map(|event| (event.json(), event.event));
    match last.as_ref().map(|(data, name)| (name.as_str(), data)) {
        Some(("done", data)) if data["response"].as_str() == Some(&format!("echo: {message}")) => {
            ("stream done".into(), Decision::Ack, named_session(data))
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
pub(super) struct ProbeRecord {
    pub(super) at: Duration,
    pub(super) path: &'static str,
    pub(super) label: String,
}

/// Polls /health and /ready every 250 ms until stopped.
pub(super) fn monitor(port: u16, began: Instant, stop: &AtomicBool) -> Vec<ProbeRecord> {
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

#[cfg(test)]
mod tests {
    use super::{Decision, error_answer, stream_outcome};

    pub(super) fn events(pairs: &[(&str, &str)]) -> String {
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
}
