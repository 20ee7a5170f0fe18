//! The loop's limits, concurrency bound, cancellation and error handling, with a scripted model.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agent_core::{AgentError, AgentEvent, AgentLimits, Role, TokenUsage, TurnRequest};
use futures_util::StreamExt;
use serde_json::json;

use crate::scripted::{Broken, ConcurrencyProbe, Endless, LIMITS, ScriptedModel, Step, agent};

const USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 70,
    completion_tokens: 30,
};

fn request(text: &str) -> TurnRequest {
    TurnRequest {
        history: Vec::new(),
        user_message: text.into(),
        session_tokens_used: 0,
        sampling: Default::default(),
        waits: Default::default(),
        resume: None,
        context: Default::default(),
    }
}

fn forever_calling_tools() -> Vec<Step> {
    vec![Step::Calls(vec![(
        "calculator",
        json!({ "expression": "1+1" }),
    )])]
}

#[tokio::test]
async fn each_limit_stops_a_model_that_never_finishes() {
    struct Case {
        name: &'static str,
        limits: AgentLimits,
        session_tokens_used: u64,
        expected_calls: usize,
        check: fn(&AgentError) -> bool,
    }
    let cases = [
        Case {
            name: "step limit",
            limits: AgentLimits {
                max_steps: 5,
                ..LIMITS
            },
            session_tokens_used: 0,
            expected_calls: 5,
            check: |error| matches!(error, AgentError::StepLimit(5)),
        },
        Case {
            name: "turn token budget",
            limits: AgentLimits {
                turn_token_budget: 250,
                ..LIMITS
            },
            session_tokens_used: 0,
            expected_calls: 3,
            check: |error| {
                matches!(
                    error,
                    AgentError::TurnBudgetExceeded {
                        used: 300,
                        budget: 250
                    }
                )
            },
        },
        Case {
            name: "session token budget reached during the turn",
            limits: AgentLimits {
                session_token_budget: 1_000,
                ..LIMITS
            },
            session_tokens_used: 850,
            expected_calls: 2,
            check: |error| {
                matches!(
                    error,
                    AgentError::SessionBudgetExceeded {
                        used: 1050,
                        budget: 1000
                    }
                )
            },
        },
        Case {
            name: "session token budget already spent",
            limits: AgentLimits {
                session_token_budget: 1_000,
                ..LIMITS
            },
            session_tokens_used: 1_000,
            expected_calls: 0,
            check: |error| {
                matches!(
                    error,
                    AgentError::SessionBudgetExceeded {
                        used: 1000,
                        budget: 1000
                    }
                )
            },
        },
    ];
    for case in cases {
        let model = ScriptedModel::new(forever_calling_tools(), USAGE);
        let agent = agent(model.clone(), Vec::new(), case.limits);
        let mut turn = request("loop forever");
        turn.session_tokens_used = case.session_tokens_used;
        let error = agent.run_turn(turn).await.unwrap_err();
        assert!((case.check)(&error), "{}: got {error:?}", case.name);
        assert_eq!(
            model.calls.load(Ordering::SeqCst),
            case.expected_calls,
            "{}",
            case.name
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_a_model_that_never_answers() {
    let model = ScriptedModel::new(vec![Step::Hang], USAGE);
    let limits = AgentLimits {
        turn_deadline: Duration::from_secs(45),
        ..LIMITS
    };
    let error = agent(model, Vec::new(), limits)
        .run_turn(request("hello?"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, AgentError::DeadlineExceeded(deadline) if deadline == Duration::from_secs(45)),
        "{error:?}"
    );
}

#[tokio::test]
async fn ten_parallel_tool_calls_run_at_most_four_at_once_and_keep_their_order() {
    let probe = Arc::new(ConcurrencyProbe::default());
    let calls = (0..10).map(|n| ("probe", json!({ "n": n }))).collect();
    let model = ScriptedModel::new(vec![Step::Calls(calls), Step::Answer("all done")], USAGE);
    let result = agent(model, vec![probe.clone()], LIMITS)
        .run_turn(request("probe ten times"))
        .await
        .unwrap();
    assert_eq!(
        probe.most.load(Ordering::SeqCst),
        4,
        "the bound is reached and never exceeded"
    );
    assert_eq!(probe.finished.load(Ordering::SeqCst), 10);
    let results: Vec<&str> = result
        .turn
        .messages
        .iter()
        .filter(|message| message.role == Role::Tool)
        .map(|message| message.content.as_str())
        .collect();
    let expected: Vec<String> = (0..10).map(|n| format!("probe {n}")).collect();
    assert_eq!(results, expected, "results are appended in call order");
}

#[tokio::test]
async fn a_turn_returns_its_messages_in_order_with_summed_usage() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![("calculator", json!({ "expression": "2+3" }))]),
            Step::Calls(vec![("current_time", json!({}))]),
            Step::Answer("2+3 is 5, and I checked the time."),
        ],
        USAGE,
    );
    let result = agent(model.clone(), Vec::new(), LIMITS)
        .run_turn(request("add and tell the time"))
        .await
        .unwrap();
    let roles: Vec<Role> = result
        .turn
        .messages
        .iter()
        .map(|message| message.role)
        .collect();
    use Role::{Assistant, Tool, User};
    assert_eq!(roles, [User, Assistant, Tool, Assistant, Tool, Assistant]);
    assert_eq!(result.turn.messages[2].content, "5");
    assert_eq!(
        result.turn.messages[2].tool_call_id.as_deref(),
        Some("call_0_0")
    );
    assert_eq!(result.response, "2+3 is 5, and I checked the time.");
    assert_eq!((result.steps, result.turn.usage.total()), (3, 300));
    // The model saw the system prompt, the user message, and then each tool result.
    let seen = model.seen.lock().unwrap();
    assert_eq!(seen[0][0].role, Role::System);
    assert_eq!(seen[2].len(), 6);
}

#[tokio::test]
async fn bad_arguments_unknown_tools_and_failures_become_tool_errors_the_model_sees() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![
                ("calculator", json!({ "expr": "1+1" })),
                ("calculator", json!({ "expression": "1/0" })),
                ("no_such_tool", json!({})),
                ("broken", json!({})),
                ("current_time", json!({ "unexpected": true })),
            ]),
            Step::Answer("I could not compute that."),
        ],
        USAGE,
    );
    let result = agent(model, vec![Arc::new(Broken)], LIMITS)
        .run_turn(request("try everything"))
        .await
        .unwrap();
    let errors: Vec<&str> = result
        .turn
        .messages
        .iter()
        .filter(|message| message.role == Role::Tool)
        .map(|message| message.content.as_str())
        .collect();
    assert_eq!(errors.len(), 5);
    assert!(
        errors.iter().all(|error| error.starts_with("error: ")),
        "{errors:?}"
    );
    assert!(errors[0].contains("expression"), "{}", errors[0]);
    assert!(errors[1].contains("no finite value"), "{}", errors[1]);
    assert!(
        errors[2].contains("no tool named \"no_such_tool\""),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].contains("the backing service is down"),
        "{}",
        errors[3]
    );
    assert!(errors[4].contains("unexpected"), "{}", errors[4]);
    assert_eq!(result.response, "I could not compute that.");
}

#[tokio::test]
async fn malformed_tool_arguments_are_reported_not_fatal() {
    let model = ScriptedModel::new(vec![Step::Answer("unused")], USAGE);
    let registry = agent_core::ToolRegistry::with_builtins(Duration::from_secs(1)).unwrap();
    let call = agent_core::ToolCall {
        id: "1".into(),
        name: "calculator".into(),
        arguments: "{not json".into(),
    };
    let outcome = registry.call(&call).await;
    assert!(
        outcome.is_error && outcome.content.contains("not valid JSON"),
        "{outcome:?}"
    );
    drop(model);
}

#[tokio::test]
async fn dropping_a_turn_cancels_the_tools_it_started() {
    let endless = Arc::new(Endless::default());
    let model = ScriptedModel::new(
        vec![Step::Calls(vec![
            ("endless", json!({})),
            ("endless", json!({})),
        ])],
        USAGE,
    );
    let agent = agent(model, vec![endless.clone()], LIMITS);
    let turn = tokio::spawn(async move { agent.run_turn(request("start and abandon")).await });
    endless.started.notified().await;
    turn.abort();
    let _ = turn.await;
    assert_eq!(
        endless.dropped.load(Ordering::SeqCst),
        2,
        "both tool calls were dropped with the turn"
    );
}

#[tokio::test]
async fn a_streaming_turn_reports_tool_calls_results_and_the_answer_in_order() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![("calculator", json!({ "expression": "6*7" }))]),
            Step::Answer("6*7 = 42"),
        ],
        USAGE,
    );
    let events: Vec<AgentEvent> = agent(model, Vec::new(), LIMITS)
        .run_turn_streaming(request("6*7?"))
        .collect()
        .await;
    let kinds: Vec<String> = events
        .iter()
        .map(|event| match event {
            AgentEvent::TextDelta(text) => format!("text:{text}"),
            AgentEvent::ToolCallStarted(call) => format!("call:{}", call.name),
            AgentEvent::ToolResult { content, .. } => format!("result:{content}"),
            AgentEvent::Done(result) => format!("done:{}", result.response),
            AgentEvent::Failed(error) => format!("failed:{error}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "call:calculator",
            "result:42",
            "text:6*7 = 42",
            "done:6*7 = 42"
        ]
    );
}

#[tokio::test]
async fn a_failing_streaming_turn_ends_with_the_error() {
    let model = ScriptedModel::new(forever_calling_tools(), USAGE);
    let limits = AgentLimits {
        max_steps: 2,
        ..LIMITS
    };
    let events: Vec<AgentEvent> = agent(model, Vec::new(), limits)
        .run_turn_streaming(request("loop"))
        .collect()
        .await;
    assert!(
        matches!(
            events.last(),
            Some(AgentEvent::Failed(AgentError::StepLimit(2)))
        ),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_agent_limited_to_some_tools_is_offered_only_those_and_cannot_run_the_others() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![
                ("calculator", json!({ "expression": "2+3" })),
                ("probe", json!({ "n": 1 })),
            ]),
            Step::Answer("done"),
        ],
        USAGE,
    );
    let probe = Arc::new(ConcurrencyProbe::default());
    let mut registry = agent_core::ToolRegistry::with_builtins(Duration::from_secs(5)).unwrap();
    registry.register(probe.clone()).unwrap();
    let filter = agent_core::ToolFilter::new(&["calc*".to_owned()]).unwrap();
    let limited =
        agent_core::Agent::new(model.clone(), Arc::new(registry.only(filter)), LIMITS, None);
    let result = limited.run_turn(request("add")).await.unwrap();
    assert_eq!(model.offered.lock().unwrap()[0], ["calculator"]);
    let tool_messages: Vec<&str> = result
        .turn
        .messages
        .iter()
        .filter(|message| message.role == Role::Tool)
        .map(|message| message.content.as_str())
        .collect();
    assert_eq!(tool_messages[0], "5");
    assert!(
        tool_messages[1].contains("no tool named \"probe\""),
        "{tool_messages:?}"
    );
    assert_eq!(probe.finished.load(Ordering::SeqCst), 0, "never executed");
    // A model that is no chain names no entry.
    assert_eq!(result.model, None);
}
