//! A fake OpenAI-compatible server (wiremock on loopback) that answers `POST
//! /v1/chat/completions` from a script: tool calls, text, errors, malformed or slow answers, and
//! streams (split tool-call arguments, cut streams), JSON or SSE as the request asks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The usage every scripted reply reports.
pub const PROMPT_TOKENS: u64 = 10;
pub const COMPLETION_TOKENS: u64 = 5;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// An assistant message calling tools: (name, JSON arguments).
    ToolCalls(Vec<(String, String)>),
    /// A final assistant message.
    Text(String),
    /// An error status, with an optional `Retry-After` value, and a body.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// 200 with a body that is not JSON.
    Malformed,
    /// A 200 JSON body given verbatim (for servers that omit fields).
    Raw(Value),
    /// The inner answer after a delay.
    Slow(Duration, Box<Scripted>),
    /// A stream that sends this text and stops: no finish reason, no `[DONE]`.
    CutStream(String),
}

impl Scripted {
    pub fn text(text: &str) -> Self {
        Self::Text(text.to_owned())
    }

    pub fn tool_call(name: &str, arguments: Value) -> Self {
        Self::ToolCalls(vec![(name.to_owned(), arguments.to_string())])
    }

    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after: None,
            body: format!("fake error {status}"),
        }
    }

    pub fn rate_limited(retry_after: &str) -> Self {
        // Plain text, not OpenAI-shaped JSON, as proxies send.
        Self::Status {
            status: 429,
            retry_after: Some(retry_after.to_owned()),
            body: "slow down".into(),
        }
    }
}

/// The running fake server.
#[derive(Debug)]
pub struct FakeOpenAi {
    server: MockServer,
}

impl FakeOpenAi {
    /// Answers with `script` in order; past its end every request gets a 500.
    pub async fn start(script: Vec<Scripted>) -> Self {
        Self::serve(script, false).await
    }

    /// Answers every request with `answer`.
    pub async fn repeating(answer: Scripted) -> Self {
        Self::serve(vec![answer], true).await
    }

    /// Answers each request with what `decide` makes of its JSON body (for conversations whose
    /// order of calls a script cannot know, such as compactions).
    pub async fn answering(decide: impl Fn(&Value) -> Scripted + Send + Sync + 'static) -> Self {
        Self::mount(DecidingResponder(Box::new(decide), AtomicUsize::new(0))).await
    }

    async fn serve(script: Vec<Scripted>, repeat_last: bool) -> Self {
        Self::mount(ScriptResponder {
            script: Arc::new(script),
            next: Arc::new(AtomicUsize::new(0)),
            repeat_last,
        })
        .await
    }

    async fn mount(responder: impl Respond + 'static) -> Self {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(responder)
            .mount(&server)
            .await;
        Self { server }
    }

    /// The base URL to configure, including `/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    /// The JSON bodies of the chat requests received so far, in order.
    pub async fn requests(&self) -> Vec<Value> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|request| serde_json::from_slice(&request.body).ok())
            .collect()
    }

    /// Waits until `count` chat requests have arrived (a model call in flight is one): how a test
    /// orders a second request after the first reached the model, without a sleep. Panics after
    /// 30 s.
    pub async fn received(&self, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.server.received_requests().await.unwrap_or_default();
            if received.len() >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fake model received {} requests, not {count}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The value of header `name` on each chat request received so far, in order.
    pub async fn header_values(&self, name: &str) -> Vec<Option<String>> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|request| {
                request
                    .headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// What a request's body decides to answer.
type Decide = Box<dyn Fn(&Value) -> Scripted + Send + Sync>;

/// Numbers its answers as the script does (tool call ids stay unique).
struct DecidingResponder(Decide, AtomicUsize);

impl Respond for DecidingResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let streaming = body["stream"].as_bool().unwrap_or(false);
        let index = self.1.fetch_add(1, Ordering::SeqCst);
        respond(&(self.0)(&body), streaming, index)
    }
}

struct ScriptResponder {
    script: Arc<Vec<Scripted>>,
    next: Arc<AtomicUsize>,
    repeat_last: bool,
}

impl Respond for ScriptResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let index = if self.repeat_last {
            index.min(self.script.len().saturating_sub(1))
        } else {
            index
        };
        let Some(answer) = self.script.get(index) else {
            return ResponseTemplate::new(500)
                .set_body_string("the fake OpenAI script is exhausted");
        };
        let streaming = serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|body| body["stream"].as_bool())
            .unwrap_or(false);
        respond(answer, streaming, index)
    }
}

fn respond(answer: &Scripted, streaming: bool, index: usize) -> ResponseTemplate {
    match answer {
        Scripted::Slow(delay, inner) => respond(inner, streaming, index).set_delay(*delay),
        Scripted::Status {
            status,
            retry_after,
            body,
        } => {
            let mut response = ResponseTemplate::new(*status).set_body_string(body.clone());
            if let Some(retry_after) = retry_after {
                response = response.insert_header("retry-after", retry_after.as_str());
            }
            response
        }
        Scripted::Malformed => {
            ResponseTemplate::new(200).set_body_raw("{\"choices\": [oops", "application/json")
        }
        Scripted::Raw(body) => ResponseTemplate::new(200).set_body_json(body),
        Scripted::CutStream(text) => sse(
            vec![chunk(json!({ "role": "assistant", "content": text }), None)],
            false,
        ),
        Scripted::Text(text) if streaming => {
            let mut chunks: Vec<Value> = split(text, 3)
                .into_iter()
                .map(|piece| chunk(json!({ "content": piece }), None))
                .collect();
            chunks.push(chunk(json!({}), Some("stop")));
            chunks.push(usage_chunk());
            sse(chunks, true)
        }
        Scripted::ToolCalls(calls) if streaming => {
            let mut chunks = Vec::new();
            for (position, (name, arguments)) in calls.iter().enumerate() {
                let id = format!("call_{index}_{position}");
                chunks.push(chunk(
                    json!({ "tool_calls": [{ "index": position, "id": id, "type": "function",
                        "function": { "name": name, "arguments": "" } }] }),
                    None,
                ));
                for piece in split(arguments, 3) {
                    chunks.push(chunk(json!({ "tool_calls": [{ "index": position, "function": { "arguments": piece } }] }), None));
                }
            }
            chunks.push(chunk(json!({}), Some("tool_calls")));
            chunks.push(usage_chunk());
            sse(chunks, true)
        }
        Scripted::Text(text) => completion(json!({ "role": "assistant", "content": text }), "stop"),
        Scripted::ToolCalls(calls) => completion(
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": calls.iter().enumerate().map(|(position, (name, arguments))| json!({
                    "id": format!("call_{index}_{position}"),
                    "type": "function",
                    "function": { "name": name, "arguments": arguments },
                })).collect::<Vec<_>>(),
            }),
            "tool_calls",
        ),
    }
}

fn usage() -> Value {
    json!({ "prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS })
}

fn completion(message: Value, finish_reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
        "usage": usage(),
    }))
}

fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
    })
}

fn usage_chunk() -> Value {
    json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model", "choices": [], "usage": usage() })
}

fn sse(chunks: Vec<Value>, done: bool) -> ResponseTemplate {
    let mut body: String = chunks
        .iter()
        .map(|chunk| format!("data: {chunk}\n\n"))
        .collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// `text` in up to `parts` pieces of similar length (on character boundaries).
fn split(text: &str, parts: usize) -> Vec<String> {
    let characters: Vec<char> = text.chars().collect();
    if characters.is_empty() {
        return vec![String::new()];
    }
    let size = characters.len().div_ceil(parts);
    characters
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}
