//! The loop's own overhead per step, with an instant scripted model and an instant tool. The
//! baseline in the same run calls the model directly as many times, without the loop.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_core::{
    Agent, AgentLimits, ChatModel, ChatRequest, Message, ModelError, ModelReply, TokenUsage,
    ToolCall, ToolRegistry, TurnRequest,
};
use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};

/// Calls the calculator `tool_steps` times, then answers; over and over.
#[derive(Debug)]
struct InstantModel {
    tool_steps: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl ChatModel for InstantModel {
    async fn complete(&self, _request: ChatRequest<'_>) -> Result<ModelReply, ModelError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) % (self.tool_steps + 1);
        let message = if call < self.tool_steps {
            let arguments = r#"{"expression":"2+3*4"}"#.to_owned();
            Message::assistant_tool_calls(
                "",
                vec![ToolCall {
                    id: format!("call_{call}"),
                    name: "calculator".into(),
                    arguments,
                }],
            )
        } else {
            Message::assistant("2+3*4 is 14.")
        };
        Ok(ModelReply {
            message,
            usage: TokenUsage {
                prompt_tokens: 20,
                completion_tokens: 5,
            },
            meta: Default::default(),
        })
    }
}

const LIMITS: AgentLimits = AgentLimits {
    max_steps: 8,
    max_parallel_tools: 4,
    turn_token_budget: u64::MAX / 4,
    session_token_budget: u64::MAX / 2,
    turn_deadline: Duration::from_secs(60),
};

fn history() -> Vec<Message> {
    (0..10)
        .flat_map(|index| {
            [
                Message::user(format!("question {index}")),
                Message::assistant(format!("answer {index}")),
            ]
        })
        .collect()
}

fn agent_loop(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for tool_steps in [0, 3] {
        let steps = tool_steps + 1;
        let model = Arc::new(InstantModel {
            tool_steps,
            calls: AtomicUsize::new(0),
        });
        let tools = Arc::new(ToolRegistry::with_builtins(Duration::from_secs(5)).unwrap());
        let agent = Agent::new(
            model.clone(),
            tools,
            LIMITS,
            Some("You are helpful.".into()),
        );
        let history = history();
        criterion.bench_function(&format!("turn/{steps}_steps"), |bencher| {
            bencher.to_async(&runtime).iter(|| {
                let request = TurnRequest {
                    history: history.clone(),
                    user_message: "2+3*4?".into(),
                    session_tokens_used: 0,
                    sampling: Default::default(),
                    waits: Default::default(),
                    resume: None,
                    context: Default::default(),
                };
                let agent = agent.clone();
                async move { agent.run_turn(request).await.unwrap() }
            });
        });
        let baseline = Arc::new(InstantModel {
            tool_steps,
            calls: AtomicUsize::new(0),
        });
        let messages = history.clone();
        criterion.bench_function(&format!("baseline/{steps}_model_calls"), |bencher| {
            bencher.to_async(&runtime).iter(|| {
                let (baseline, messages) = (baseline.clone(), messages.clone());
                async move {
                    for _ in 0..steps {
                        baseline
                            .complete(ChatRequest {
                                messages: &messages,
                                tools: &[],
                                sampling: &Default::default(),
                            })
                            .await
                            .unwrap();
                    }
                }
            });
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = agent_loop
}
criterion_main!(benches);
