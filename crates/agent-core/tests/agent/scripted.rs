//! A scripted `ChatModel` and instrumented tools for loop tests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_core::{
    Agent, AgentLimits, ChatModel, ChatRequest, Message, ModelError, ModelReply, TokenUsage, Tool,
    ToolCall, ToolError, ToolRegistry,
};
use async_trait::async_trait;
use serde_json::{Value, json};

/// What the scripted model answers at each call.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Calls(Vec<(&'static str, Value)>),
    Answer(&'static str),
    /// Never answers.
    Hang,
    /// Refuses a request whose messages' contents are longer than this many bytes as too long
    /// for its context (staying the next step), answers "it fits" to a shorter one.
    Limit(usize),
}

/// Replays steps in order, repeating the last one; records every request's messages.
#[derive(Debug)]
pub(crate) struct ScriptedModel {
    steps: Mutex<VecDeque<Step>>,
    usage: TokenUsage,
    pub(crate) calls: AtomicUsize,
    pub(crate) seen: Mutex<Vec<Vec<Message>>>,
    /// The names of the tools each request offered.
    pub(crate) offered: Mutex<Vec<Vec<String>>>,
}

impl ScriptedModel {
    pub(crate) fn new(steps: Vec<Step>, usage: TokenUsage) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into()),
            usage,
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            offered: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn complete(&self, request: ChatRequest<'_>) -> Result<ModelReply, ModelError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(request.messages.to_vec());
        let bytes: usize = request
            .messages
            .iter()
            .map(|message| message.content.len())
            .sum();
        if let Some(Step::Limit(limit)) = self.steps.lock().unwrap().front()
            && bytes > *limit
        {
            return Err(ModelError::ContextLength(format!(
                "maximum context length is {limit} bytes; the request has {bytes}"
            )));
        }
        let names = request.tools.iter().map(|tool| tool.name.clone()).collect();
        self.offered.lock().unwrap().push(names);
        let step = {
            let mut steps = self.steps.lock().unwrap();
            if steps.len() > 1 {
                steps.pop_front().unwrap()
            } else {
                steps.front().cloned().unwrap()
            }
        };
        let message = match step {
            Step::Hang => std::future::pending().await,
            Step::Answer(text) => Message::assistant(text),
            Step::Limit(_) => Message::assistant("it fits"),
            Step::Calls(calls) => Message::assistant_tool_calls(
                "",
                calls
                    .into_iter()
                    .enumerate()
                    .map(|(index, (name, arguments))| ToolCall {
                        id: format!("call_{call}_{index}"),
                        name: name.to_owned(),
                        arguments: arguments.to_string(),
                    })
                    .collect(),
            ),
        };
        Ok(ModelReply {
            message,
            usage: self.usage,
            meta: Default::default(),
        })
    }
}

pub(crate) const LIMITS: AgentLimits = AgentLimits {
    max_steps: 8,
    max_parallel_tools: 4,
    turn_token_budget: 1_000_000,
    session_token_budget: 10_000_000,
    turn_deadline: Duration::from_secs(30),
};

pub(crate) fn agent(
    model: Arc<dyn ChatModel>,
    tools: Vec<Arc<dyn Tool>>,
    limits: AgentLimits,
) -> Agent {
    let mut registry = ToolRegistry::with_builtins(Duration::from_secs(5)).unwrap();
    for tool in tools {
        registry.register(tool).unwrap();
    }
    Agent::new(
        model,
        Arc::new(registry),
        limits,
        Some("You are a test agent.".into()),
    )
}

/// A tool that sleeps, counting how many of its calls run at once.
#[derive(Debug, Default)]
pub(crate) struct ConcurrencyProbe {
    running: AtomicUsize,
    pub(crate) most: AtomicUsize,
    pub(crate) finished: AtomicUsize,
}

#[async_trait]
impl Tool for ConcurrencyProbe {
    fn name(&self) -> &str {
        "probe"
    }
    fn description(&self) -> &str {
        "Sleeps briefly and echoes its number."
    }
    fn parameters(&self) -> Value {
        json!({ "type": "object", "properties": { "n": { "type": "integer" } }, "required": ["n"] })
    }
    async fn call(&self, arguments: Value) -> Result<String, ToolError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(format!("probe {}", arguments["n"]))
    }
}

/// A tool that never finishes; records that it started and that its future was dropped.
#[derive(Debug, Default)]
pub(crate) struct Endless {
    pub(crate) started: tokio::sync::Notify,
    pub(crate) dropped: AtomicUsize,
}

struct DropFlag<'a>(&'a AtomicUsize);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Tool for Endless {
    fn name(&self) -> &str {
        "endless"
    }
    fn description(&self) -> &str {
        "Never returns."
    }
    fn parameters(&self) -> Value {
        json!({ "type": "object" })
    }
    async fn call(&self, _arguments: Value) -> Result<String, ToolError> {
        let _flag = DropFlag(&self.dropped);
        self.started.notify_one();
        std::future::pending().await
    }
}

/// A tool that always fails.
#[derive(Debug)]
pub(crate) struct Broken;

#[async_trait]
impl Tool for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn description(&self) -> &str {
        "Always fails."
    }
    fn parameters(&self) -> Value {
        json!({ "type": "object" })
    }
    async fn call(&self, _arguments: Value) -> Result<String, ToolError> {
        Err(ToolError::Failed("the backing service is down".into()))
    }
}
