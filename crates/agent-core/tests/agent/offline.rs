//! The offline model drives the real loop and the built-in tools with no network.

use std::sync::Arc;

use agent_core::{OfflineModel, Role, TurnRequest};

use crate::scripted::{LIMITS, agent};

async fn ask(question: &str) -> agent_core::TurnResult {
    let request = TurnRequest {
        history: Vec::new(),
        user_message: question.into(),
        session_tokens_used: 0,
        sampling: Default::default(),
        waits: Default::default(),
        resume: None,
        context: Default::default(),
    };
    agent(Arc::new(OfflineModel), Vec::new(), LIMITS)
        .run_turn(request)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_offline_model_answers_arithmetic_through_the_calculator() {
    let result = ask("what is 2+3*4").await;
    assert_eq!(result.response, "2+3*4 = 14");
    let tool_messages: Vec<&str> = result
        .turn
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(tool_messages, ["14"], "the calculator tool really ran");
    assert!(result.turn.usage.total() > 0);
}

#[tokio::test]
async fn the_offline_model_tells_the_time_through_the_clock_tool() {
    let result = ask("What time is it?").await;
    assert!(result.response.contains("\"utc\""), "{}", result.response);
    assert_eq!(result.steps, 2);
}

#[tokio::test]
async fn the_offline_model_says_what_it_is_and_reflects_the_message() {
    let result = ask("Tell me a story").await;
    assert!(
        result.response.starts_with("I am the offline model"),
        "{}",
        result.response
    );
    assert!(result.response.ends_with("You said: Tell me a story"));
    assert_eq!(result.steps, 1);
}
