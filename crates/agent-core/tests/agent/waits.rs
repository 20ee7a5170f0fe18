//! Turns that stop before tool calls the client must answer (an approval, a client's tool) and
//! resume with its answers: the calls that need nothing run at once, the stopped turn holds what
//! it produced, and the resumed one goes on counting steps and tokens.

use std::sync::Arc;

use agent_core::{
    Answer, ApprovalPolicy, Resume, Role, TokenUsage, ToolCall, ToolSpec, TurnRequest, TurnResult,
    Wait, Waits,
};
use serde_json::json;

use crate::scripted::{LIMITS, ScriptedModel, Step, agent};

const USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 70,
    completion_tokens: 30,
};

/// Approval for the calculator only.
#[derive(Debug)]
struct CalculatorNeedsApproval;

impl ApprovalPolicy for CalculatorNeedsApproval {
    fn needs_approval(&self, call: &ToolCall) -> bool {
        call.name == "calculator"
    }
}

fn waits() -> Waits {
    Waits {
        client_tools: vec![ToolSpec {
            name: "lookup".into(),
            description: "Looks a word up in the client's dictionary".into(),
            parameters: json!({"type": "object", "properties": {"word": {"type": "string"}}}),
        }],
        approval: Some(Arc::new(CalculatorNeedsApproval)),
        unapprovable: None,
    }
}

fn request(text: &str, resume: Option<Resume>) -> TurnRequest {
    TurnRequest {
        history: Vec::new(),
        user_message: text.into(),
        session_tokens_used: 0,
        sampling: Default::default(),
        waits: waits(),
        resume,
        context: Default::default(),
    }
}

fn resume(stopped: &TurnResult, answers: Vec<Answer>) -> Resume {
    Resume {
        produced: stopped.turn.messages.clone(),
        answers: stopped.waiting.iter().cloned().zip(answers).collect(),
        usage: stopped.turn.usage,
        steps: stopped.steps,
    }
}

fn roles(result: &TurnResult) -> Vec<Role> {
    result
        .turn
        .messages
        .iter()
        .map(|message| message.role)
        .collect()
}

#[tokio::test]
async fn a_step_runs_what_needs_nothing_and_stops_before_what_waits() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![
                ("calculator", json!({ "expression": "2+3" })),
                ("current_time", json!({})),
                ("lookup", json!({ "word": "agent" })),
            ]),
            Step::Answer("2+3 is 5; an agent acts for someone."),
        ],
        USAGE,
    );
    let agent = agent(model.clone(), Vec::new(), LIMITS);
    let stopped = agent
        .run_turn(request("add, time, look up", None))
        .await
        .unwrap();
    // The clock ran; the calculator waits for approval, the lookup for the client.
    use Role::{Assistant, Tool, User};
    assert_eq!(roles(&stopped), [User, Assistant, Tool]);
    assert_eq!(
        stopped.turn.messages[2].tool_call_id.as_deref(),
        Some("call_0_1")
    );
    let waiting: Vec<(&str, Wait)> = stopped
        .waiting
        .iter()
        .map(|waiting| (waiting.call.name.as_str(), waiting.wait))
        .collect();
    assert_eq!(
        waiting,
        [("calculator", Wait::Approval), ("lookup", Wait::ClientTool)]
    );
    assert_eq!((stopped.steps, stopped.turn.usage.total()), (1, 100));
    // The model was offered the client's tool beside the agent's.
    let offered = model.offered.lock().unwrap()[0].clone();
    assert!(offered.contains(&"lookup".to_owned()) && offered.contains(&"calculator".to_owned()));

    let answers = vec![Answer::Approved, Answer::Output("one who acts".into())];
    let done = agent
        .run_turn(request(
            "unused when resuming",
            Some(resume(&stopped, answers)),
        ))
        .await
        .unwrap();
    assert!(done.waiting.is_empty());
    assert_eq!(done.response, "2+3 is 5; an agent acts for someone.");
    assert_eq!(roles(&done), [User, Assistant, Tool, Tool, Tool, Assistant]);
    // The clock's result first (it ran at once), then the answered calls in their order.
    let ids: Vec<&str> = done.turn.messages[2..5]
        .iter()
        .map(|message| message.tool_call_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["call_0_1", "call_0_0", "call_0_2"]);
    assert_eq!(done.turn.messages[3].content, "5");
    assert_eq!(done.turn.messages[4].content, "one who acts");
    // Steps and tokens go on from the stopped turn; the model saw every result.
    assert_eq!((done.steps, done.turn.usage.total()), (2, 200));
    let seen = model.seen.lock().unwrap();
    assert_eq!(seen[1].len(), 1 + 5, "system prompt, then the turn so far");
}

#[tokio::test]
async fn a_rejected_call_does_not_run_and_the_model_reads_why() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![("calculator", json!({ "expression": "1/0" }))]),
            Step::Answer("Understood, I will not compute it."),
        ],
        USAGE,
    );
    let agent = agent(model.clone(), Vec::new(), LIMITS);
    let stopped = agent.run_turn(request("divide", None)).await.unwrap();
    assert_eq!(stopped.waiting.len(), 1);
    let rejected = Answer::Rejected {
        reason: Some("  too risky ".into()),
    };
    let done = agent
        .run_turn(request("", Some(resume(&stopped, vec![rejected]))))
        .await
        .unwrap();
    let result = &done.turn.messages[2];
    assert_eq!(result.role, Role::Tool);
    assert_eq!(result.content, "rejected by the user: too risky");
    assert_eq!(agent_core::rejection(None), "rejected by the user");
    assert_eq!(done.response, "Understood, I will not compute it.");
}

#[tokio::test]
async fn without_waits_every_call_runs_as_before() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![("calculator", json!({ "expression": "2+2" }))]),
            Step::Answer("4"),
        ],
        USAGE,
    );
    let agent = agent(model.clone(), Vec::new(), LIMITS);
    let done = agent
        .run_turn(TurnRequest {
            waits: Waits::default(),
            ..request("add", None)
        })
        .await
        .unwrap();
    assert!(done.waiting.is_empty());
    assert_eq!(done.turn.messages[2].content, "4");
    let offered = model.offered.lock().unwrap()[0].clone();
    assert!(!offered.contains(&"lookup".to_owned()));
}

#[tokio::test]
async fn where_the_client_cannot_be_asked_a_call_needing_approval_is_rejected_in_call_order() {
    let model = ScriptedModel::new(
        vec![
            Step::Calls(vec![
                ("calculator", json!({ "expression": "2+3" })),
                ("current_time", json!({})),
            ]),
            Step::Answer("I may not compute here."),
        ],
        USAGE,
    );
    let agent = agent(model.clone(), Vec::new(), LIMITS);
    let done = agent
        .run_turn(TurnRequest {
            waits: Waits {
                unapprovable: Some("approval cannot be asked here".into()),
                ..waits()
            },
            ..request("add and tell the time", None)
        })
        .await
        .unwrap();
    assert!(done.waiting.is_empty(), "nothing waits");
    use Role::{Assistant, Tool, User};
    assert_eq!(roles(&done), [User, Assistant, Tool, Tool, Assistant]);
    let results: Vec<(&str, &str)> = done.turn.messages[2..4]
        .iter()
        .map(|message| {
            (
                message.tool_call_id.as_deref().unwrap(),
                message.content.as_str(),
            )
        })
        .collect();
    assert_eq!(
        results[0],
        (
            "call_0_0",
            "rejected by the user: approval cannot be asked here"
        )
    );
    assert_eq!(
        results[1].0, "call_0_1",
        "the clock ran, after it in call order"
    );
    assert_eq!(done.response, "I may not compute here.");
}
