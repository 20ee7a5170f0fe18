//! A standalone fake OpenAI-compatible model server for benchmarks and end-to-end tests: every
//! `POST /v1/chat/completions` answers "echo: <last user message>" (or, to a message starting
//! with "recall", "you said earlier: <the user message before it>") after a fixed delay (or the
//! delay a message "sleep <ms> ..." asks for), as JSON or as a stream. `GET /stats` reports requests in flight, the most at once, and the total;
//! `DELETE /stats` restarts the most-at-once count. `PUT /fault/{mode}` makes every completion
//! fail until `PUT /fault/none`: `429` (with `Retry-After: 1`), `500`, or `timeout` (no answer
//! for 120 s), for chaos tests. A message "json <text>" in a request with a JSON `response_format`
//! is answered with <text> alone. A message "tool <name> <JSON arguments>" is answered with a call
//! of that tool first; once the tool's result is in, with the usual "echo: <message>" (so a
//! turn's answer does not depend on whether the tool worked, and the tool message shows it). A
//! message "use <name> <JSON arguments>" is answered with a call of that tool too, then with
//! "<name> said: <the tool's result>" (so a client-side tool's result is seen to reach it). A
//! message "pace <interval ms> <chunks> ..." is streamed as that many chunks that far apart. It is
//! also a webhook sink: `POST /hooks` keeps each delivery (its `webhook-id` and JSON body), `GET
//! /hooks` lists them in arrival order (for the checks of background runs' webhooks). A
//! question "what is <arithmetic>" (such as "what is 2+3*4?") to an agent that offers a
//! `calculator` tool is answered with a call of it, then, once its result is in, with
//! "<arithmetic> = <result>" streamed a word every 100 ms (what the browser checks watch). A
//! message "whoami" is answered with "system: <the system prompt> | tools: <the tools' names>"
//! (which agent answered). A request to summarise a conversation (a compaction: its system
//! prompt asks to "summarise the earlier part of a conversation") is answered with a short
//! summary, "a summary of <N> lines of conversation".
//!
//! Usage: `fake-openai [--port P] [--delay-ms D]` (defaults 8080 and 0); binds 0.0.0.0 only when
//! `FAKE_OPENAI_HOST` says so (containers), 127.0.0.1 otherwise.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// The injected fault: 0 none, an HTTP status, or `HANG`.
#[derive(Default)]
struct Fault(AtomicU16);

const HANG: u16 = 1;

#[derive(Default)]
struct Stats {
    in_flight: AtomicU64,
    most: AtomicU64,
    total: AtomicU64,
}

struct Counted(Arc<Stats>);

impl Counted {
    fn start(stats: &Arc<Stats>) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.most.fetch_max(now, Ordering::SeqCst);
        stats.total.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(stats))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn completions(
    body: web::Json<Value>,
    stats: web::Data<Arc<Stats>>,
    delay: web::Data<Duration>,
    fault: web::Data<Fault>,
) -> HttpResponse {
    let _counted = Counted::start(&stats);
    match fault.0.load(Ordering::SeqCst) {
        0 => {}
        HANG => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return HttpResponse::GatewayTimeout().body("the fake model hung");
        }
        status => {
            let status = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            return HttpResponse::build(status)
                .insert_header(("retry-after", "1"))
                .body(format!("fake fault {status}"));
        }
    }
    // The user messages, newest first.
    let users: Vec<&str> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .filter(|message| message["role"] == "user")
        .filter_map(|message| message["content"].as_str())
        .collect();
    let last_user = users.first().copied().unwrap_or("");
    let delay = requested_delay(last_user).unwrap_or(**delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // "recall ..." shows what the model was sent before: the user's previous message; "whoami"
    // the system prompt and the tools' names it was sent. "json
    // <text>" under a JSON `response_format` is answered with <text> alone (so a client's
    // structured-output parse succeeds only if the format reached the model).
    let json_format = ["json_object", "json_schema"]
        .iter()
        .any(|kind| body["response_format"]["type"] == *kind);
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    let text = if let Some(answer) = last_user.strip_prefix("json ").filter(|_| json_format) {
        answer.to_owned()
    } else if system.contains("summarise the earlier part of a conversation") {
        format!(
            "a summary of {} lines of conversation",
            last_user.lines().count()
        )
    } else if last_user == "whoami" {
        // What the model was sent, so a client sees which agent answered.
        let system = body["messages"][0]
            .as_object()
            .filter(|message| message.get("role").and_then(Value::as_str) == Some("system"))
            .and_then(|message| message.get("content").and_then(Value::as_str))
            .unwrap_or("none");
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tool| tool["function"]["name"].as_str())
            .collect();
        format!("system: {system} | tools: {}", tools.join(", "))
    } else if last_user.starts_with("recall") {
        format!(
            "you said earlier: {}",
            users.get(1).copied().unwrap_or("nothing")
        )
    } else {
        format!("echo: {last_user}")
    };
    let usage = json!({ "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 });
    let last_role = body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["role"].as_str());
    if let Some(expression) = requested_arithmetic(last_user).filter(|_| offers_calculator(&body)) {
        let stream = body["stream"].as_bool() == Some(true);
        if last_role == Some("user") {
            let arguments = json!({ "expression": expression }).to_string();
            return tool_call("calculator", &arguments, stream, &usage);
        }
        let result = body["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .and_then(|message| message["content"].as_str())
            .unwrap_or_default();
        let text = format!("{expression} = {result}");
        if stream {
            let pieces = text.split_inclusive(' ').map(str::to_owned).collect();
            return paced(ARITHMETIC_PACE, pieces, usage);
        }
        return completion(&text, &usage);
    }
    let used = last_user.strip_prefix("use ").and_then(|rest| {
        requested_tool(&format!("tool {rest}"))
            .map(|(name, arguments)| (name.to_owned(), arguments.to_owned()))
    });
    let text = match (&used, last_role) {
        (Some((name, arguments)), Some("user")) => {
            return tool_call(
                name,
                arguments,
                body["stream"].as_bool() == Some(true),
                &usage,
            );
        }
        (Some((name, _)), Some("tool")) => {
            let result = body["messages"]
                .as_array()
                .and_then(|messages| messages.last())
                .and_then(|message| message["content"].as_str())
                .unwrap_or_default();
            format!("{name} said: {result}")
        }
        _ => text,
    };
    if let Some((name, arguments)) = requested_tool(last_user).filter(|_| last_role == Some("user"))
    {
        return tool_call(
            name,
            arguments,
            body["stream"].as_bool() == Some(true),
            &usage,
        );
    }
    if body["stream"].as_bool() == Some(true) {
        if let Some((interval, chunks)) = requested_pace(last_user) {
            return paced(interval, vec!["word ".to_owned(); chunks as usize], usage);
        }
        let mut events = String::new();
        for piece in text.split_inclusive(' ') {
            events.push_str(&format!(
                "data: {}\n\n",
                chunk(json!({ "content": piece }), Value::Null)
            ));
        }
        events.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
        events.push_str(&format!("data: {}\n\n", json!({ "id": "fake", "object": "chat.completion.chunk", "created": 0, "model": "fake", "choices": [], "usage": usage })));
        events.push_str("data: [DONE]\n\n");
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .body(events);
    }
    completion(&text, &usage)
}

/// A stream chunk with `delta` and `finish`.
fn chunk(delta: Value, finish: Value) -> Value {
    json!({ "id": "fake", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
}

/// A final assistant message `text`, as JSON.
fn completion(text: &str, usage: &Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "id": "fake", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": usage,
    }))
}

/// How far apart the words of an arithmetic answer are streamed.
const ARITHMETIC_PACE: Duration = Duration::from_millis(100);

/// The arithmetic a question "what is <arithmetic>" asks about (digits, `+-*/%^`, parentheses,
/// points and spaces; a trailing `?` is not part of it).
fn requested_arithmetic(message: &str) -> Option<&str> {
    let expression = message
        .strip_prefix("what is ")?
        .trim()
        .trim_end_matches('?')
        .trim();
    let arithmetic = expression
        .chars()
        .all(|character| character.is_ascii_digit() || "+-*/%^(). ".contains(character));
    (arithmetic
        && expression
            .chars()
            .any(|character| character.is_ascii_digit()))
    .then_some(expression)
}

/// Whether the request offers a tool named `calculator`.
fn offers_calculator(body: &Value) -> bool {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|tool| tool["function"]["name"] == "calculator")
}

/// The tool a message "tool <name> <JSON arguments>" asks to be called.
fn requested_tool(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("tool ")?;
    let (name, arguments) = rest.split_once(' ').unwrap_or((rest, "{}"));
    Some((name, arguments))
}

/// An assistant message calling `name` with `arguments`, as JSON or as a stream.
fn tool_call(name: &str, arguments: &str, stream: bool, usage: &Value) -> HttpResponse {
    let call = json!({ "id": "call_fake_1", "type": "function",
                       "function": { "name": name, "arguments": arguments } });
    if stream {
        let mut delta_call = call.clone();
        delta_call["index"] = json!(0);
        let events = format!(
            "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk(json!({ "tool_calls": [delta_call] }), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            json!({ "id": "fake", "object": "chat.completion.chunk", "created": 0, "model": "fake", "choices": [], "usage": usage }),
        );
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .body(events);
    }
    HttpResponse::Ok().json(json!({
        "id": "fake", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": null, "tool_calls": [call] }, "finish_reason": "tool_calls" }],
        "usage": usage,
    }))
}

async fn stats(stats: web::Data<Arc<Stats>>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "in_flight": stats.in_flight.load(Ordering::SeqCst),
        "max_in_flight": stats.most.load(Ordering::SeqCst),
        "total": stats.total.load(Ordering::SeqCst),
    }))
}

/// `DELETE /stats`: the most in flight restarts from the current count (a benchmark measures
/// its own window).
async fn reset_stats(stats: web::Data<Arc<Stats>>) -> HttpResponse {
    stats
        .most
        .store(stats.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    HttpResponse::NoContent().finish()
}

/// The delay a message starting "sleep <ms>" asks for.
fn requested_delay(message: &str) -> Option<Duration> {
    let milliseconds = message.strip_prefix("sleep ")?.split_whitespace().next()?;
    milliseconds.parse().ok().map(Duration::from_millis)
}

/// The pace a message starting "pace <interval ms> <chunks>" asks a stream for.
fn requested_pace(message: &str) -> Option<(Duration, u32)> {
    let mut words = message.strip_prefix("pace ")?.split_whitespace();
    let interval = words.next()?.parse().ok().map(Duration::from_millis)?;
    let chunks = words.next()?.parse().ok()?;
    Some((interval, chunks))
}

/// A stream of the `pieces` as content chunks `interval` apart (the first at once), then the
/// finish, the usage and `[DONE]`: a model that takes its time to answer, as long turns do.
fn paced(interval: Duration, pieces: Vec<String>, usage: Value) -> HttpResponse {
    let chunks = pieces.len();
    let events = futures_util::stream::unfold(0_usize, move |sent| {
        let event = if let Some(piece) = pieces.get(sent) {
            format!(
                "data: {}\n\n",
                chunk(json!({ "content": piece }), Value::Null)
            )
        } else if sent == chunks {
            format!(
                "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                chunk(json!({}), json!("stop")),
                json!({ "id": "fake", "object": "chat.completion.chunk", "created": 0, "model": "fake", "choices": [], "usage": usage })
            )
        } else {
            String::new()
        };
        async move {
            if sent > chunks {
                return None;
            }
            if sent > 0 {
                tokio::time::sleep(interval).await;
            }
            Some((
                Ok::<_, std::convert::Infallible>(web::Bytes::from(event)),
                sent + 1,
            ))
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(events)
}

/// The webhook deliveries received, in order.
#[derive(Default)]
struct Hooks(std::sync::Mutex<Vec<Value>>);

/// `POST /hooks`: keeps a delivery.
async fn receive_hook(
    request: actix_web::HttpRequest,
    body: web::Bytes,
    hooks: web::Data<Hooks>,
) -> HttpResponse {
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    hooks
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(json!({ "webhook_id": id, "body": body }));
    HttpResponse::NoContent().finish()
}

/// `GET /hooks`: every delivery kept.
async fn list_hooks(hooks: web::Data<Hooks>) -> HttpResponse {
    let kept = hooks
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    HttpResponse::Ok().json(kept)
}

/// `PUT /fault/{mode}`: `none`, `timeout`, or an HTTP error status (400-599).
async fn set_fault(mode: web::Path<String>, fault: web::Data<Fault>) -> HttpResponse {
    let value = match mode.as_str() {
        "none" => 0,
        "timeout" => HANG,
        status => match status.parse::<u16>() {
            Ok(status) if (400..600).contains(&status) => status,
            _ => return HttpResponse::BadRequest().body("mode: none, timeout or a status 400-599"),
        },
    };
    fault.0.store(value, Ordering::SeqCst);
    println!("fake-openai: fault {mode}");
    HttpResponse::NoContent().finish()
}

/// The fake OpenAI-compatible model server of the system checks.
#[derive(Debug, clap::Parser)]
struct Arguments {
    /// The port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// How long every answer waits before it starts, in milliseconds.
    #[arg(long = "delay-ms", default_value_t = 0)]
    delay_ms: u64,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let arguments = <Arguments as clap::Parser>::parse();
    let port = arguments.port;
    let delay = Duration::from_millis(arguments.delay_ms);
    let host = std::env::var("FAKE_OPENAI_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let shared = web::Data::new(Arc::new(Stats::default()));
    let delay = web::Data::new(delay);
    let fault = web::Data::new(Fault::default());
    let hooks = web::Data::new(Hooks::default());
    println!("fake-openai listening on {host}:{port}");
    HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(delay.clone())
            .app_data(fault.clone())
            .app_data(hooks.clone())
            .app_data(web::JsonConfig::default().limit(16 << 20))
            .route("/v1/chat/completions", web::post().to(completions))
            .route("/stats", web::get().to(stats))
            .route("/stats", web::delete().to(reset_stats))
            .route("/fault/{mode}", web::put().to(set_fault))
            .route("/hooks", web::post().to(receive_hook))
            .route("/hooks", web::get().to(list_hooks))
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
    })
    .workers(2)
    .max_connections(4096)
    .backlog(4096)
    .bind((host.as_str(), port))?
    .run()
    .await
}
