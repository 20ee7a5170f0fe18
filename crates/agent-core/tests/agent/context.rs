//! Fitting a turn's requests to the context: the newest whole turns within the budget (stored
//! counts used as given), `fail` refusing, tool results cut, and an overflow the model reports
//! healed once by leaving out more history. The scripted model's tokens are estimated (it names
//! no OpenAI model), so the expected counts are exact here.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use agent_core::compaction::{SUMMARY_PROMPT, summary_message};
use agent_core::{
    Agent, AgentError, ContextPolicy, ContextStrategy, Message, ModelError, Role, TokenCounter,
    TokenUsage, Tool, ToolError, TurnContext, TurnRequest,
};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::scripted::{LIMITS, ScriptedModel, Step, agent};

const USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 10,
    completion_tokens: 5,
};

/// `turns` earlier turns, each a user message of `words` words and a short answer.
fn history(turns: usize, words: usize) -> Vec<Message> {
    (0..turns)
        .flat_map(|turn| {
            [
                Message::user(format!("question {turn}: {}", "word ".repeat(words))),
                Message::assistant(format!("answer {turn}")),
            ]
        })
        .collect()
}

fn request(history: Vec<Message>, context: TurnContext) -> TurnRequest {
    TurnRequest {
        history,
        user_message: "and now?".into(),
        session_tokens_used: 0,
        sampling: Default::default(),
        waits: Default::default(),
        resume: None,
        context,
    }
}

fn budget(max_input_tokens: u64, strategy: ContextStrategy) -> ContextPolicy {
    ContextPolicy {
        max_input_tokens,
        strategy,
        ..ContextPolicy::default()
    }
}

/// The tokens of a request as the agent counts it (the estimate: the scripted model is no
/// OpenAI model).
fn tokens_of(agent: &Agent, messages: &[Message]) -> u64 {
    TokenCounter::estimate().request(messages, agent.tools().current().specs())
}

#[tokio::test]
async fn without_a_budget_everything_is_sent_and_nothing_counted() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let agent = agent(model.clone(), Vec::new(), LIMITS);
    let done = agent
        .run_turn(request(history(10, 200), TurnContext::default()))
        .await
        .unwrap();
    assert_eq!(model.seen.lock().unwrap()[0].len(), 1 + 20 + 1);
    assert_eq!(done.left_out, 0);
    assert!(done.turn.context_tokens.is_empty(), "nothing was counted");
}

#[tokio::test]
async fn the_newest_whole_turns_that_fit_the_budget_are_sent() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let policy = budget(1_000, ContextStrategy::Truncate);
    let agent = agent(model.clone(), Vec::new(), LIMITS).with_context(policy);
    let earlier = history(10, 200);
    let done = agent
        .run_turn(request(earlier.clone(), TurnContext::default()))
        .await
        .unwrap();
    let sent = model.seen.lock().unwrap()[0].clone();
    assert_eq!(sent[0].role, Role::System);
    assert_eq!(sent[1].role, Role::User, "a whole turn first");
    let kept = sent.len() - 2;
    assert!(kept > 0 && kept < earlier.len(), "{kept} kept");
    assert_eq!(
        &sent[1..=kept],
        &earlier[earlier.len() - kept..],
        "the newest"
    );
    assert_eq!(done.left_out, earlier.len() - kept);
    assert!(tokens_of(&agent, &sent) <= 1_000);
    // One more turn would not have fitted.
    let mut more = sent.clone();
    let start = earlier.len() - kept;
    more.splice(1..1, earlier[start - 2..start].iter().cloned());
    assert!(tokens_of(&agent, &more) > 1_000);
    // The turn's messages are counted once, as they are made.
    let counter = TokenCounter::estimate();
    let counted: Vec<u64> = done
        .turn
        .messages
        .iter()
        .map(|m| counter.message(m))
        .collect();
    assert_eq!(done.turn.context_tokens, counted);
}

#[tokio::test]
async fn stored_counts_are_used_as_given_and_instructions_are_never_left_out() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let policy = budget(1_000, ContextStrategy::Truncate);
    let agent = agent(model.clone(), Vec::new(), LIMITS).with_context(policy);
    let mut earlier = vec![Message::system("Answer in French.")];
    earlier.extend(history(10, 200));
    // Counted as 1 token each: all of it fits (the counts are trusted, not recounted).
    let context = TurnContext {
        history_tokens: vec![Some(1); earlier.len()],
        pinned: 1,
        ..TurnContext::default()
    };
    agent
        .run_turn(request(earlier.clone(), context))
        .await
        .unwrap();
    assert_eq!(model.seen.lock().unwrap()[0].len(), 1 + earlier.len() + 1);
    // Counted for real, the history is cut, after the instructions.
    let context = TurnContext {
        pinned: 1,
        ..TurnContext::default()
    };
    agent.run_turn(request(earlier, context)).await.unwrap();
    let sent = model.seen.lock().unwrap()[1].clone();
    assert_eq!(sent[1].content, "Answer in French.");
    assert_eq!(sent[2].role, Role::User);
    assert!(sent.len() < 1 + 21 + 1);
}

#[tokio::test]
async fn fail_refuses_a_request_over_the_budget_before_the_model_is_called() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let policy = budget(1_000, ContextStrategy::Fail);
    let agent = agent(model.clone(), Vec::new(), LIMITS).with_context(policy);
    let error = agent
        .run_turn(request(history(10, 200), TurnContext::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, AgentError::ContextLengthExceeded { budget: 1_000, tokens } if tokens > 1_000),
        "{error:?}"
    );
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
    // A request's own choice overrides the agent's.
    let context = TurnContext {
        strategy: Some(ContextStrategy::Truncate),
        ..TurnContext::default()
    };
    agent
        .run_turn(request(history(10, 200), context))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_over_the_budget_on_its_own_is_refused() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let policy = budget(500, ContextStrategy::Truncate);
    let agent = agent(model.clone(), Vec::new(), LIMITS).with_context(policy);
    let mut long = request(Vec::new(), TurnContext::default());
    long.user_message = "word ".repeat(2_000);
    let error = agent.run_turn(long).await.unwrap_err();
    assert!(
        matches!(error, AgentError::ContextLengthExceeded { .. }),
        "{error:?}"
    );
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
}

/// A tool answering `bytes` bytes of text.
#[derive(Debug)]
struct Big(usize);

#[async_trait]
impl Tool for Big {
    fn name(&self) -> &str {
        "big"
    }
    fn description(&self) -> &str {
        "Answers a long text."
    }
    fn parameters(&self) -> Value {
        json!({ "type": "object" })
    }
    async fn call(&self, _arguments: Value) -> Result<String, ToolError> {
        Ok("row ".repeat(self.0 / 4))
    }
}

#[tokio::test]
async fn a_long_tool_result_is_cut_and_the_history_makes_room_for_the_turn() {
    let model = ScriptedModel::new(
        vec![Step::Calls(vec![("big", json!({}))]), Step::Answer("done")],
        USAGE,
    );
    let policy = ContextPolicy {
        max_tool_result_tokens: 400,
        ..budget(2_000, ContextStrategy::Truncate)
    };
    let tools: Vec<Arc<dyn Tool>> = vec![Arc::new(Big(30_000))];
    let agent = agent(model.clone(), tools, LIMITS).with_context(policy);
    let done = agent
        .run_turn(request(history(10, 100), TurnContext::default()))
        .await
        .unwrap();
    let result = &done.turn.messages[2];
    assert_eq!(result.role, Role::Tool);
    assert!(
        result
            .content
            .ends_with("[cut: this result is about 10000 tokens; its first 400 are shown]"),
        "{}",
        &result.content[result.content.len() - 80..]
    );
    let seen = model.seen.lock().unwrap().clone();
    // The second call holds the cut result, and so less history than the first.
    assert!(
        seen[1].len() - 3 < seen[0].len(),
        "{} then {}",
        seen[0].len(),
        seen[1].len()
    );
    assert_eq!(seen[1][1].role, Role::User);
    for sent in &seen {
        assert!(tokens_of(&agent, sent) <= 2_000);
    }
    assert_eq!(done.turn.context_tokens.len(), done.turn.messages.len());
}

#[tokio::test]
async fn an_overflow_the_model_reports_is_healed_once_with_less_history() {
    // No budget: the model's refusal starts the counting. 10 turns of about 1 KB each.
    let model = ScriptedModel::new(vec![Step::Limit(8_000)], USAGE);
    let agent = agent(model.clone(), Vec::new(), LIMITS);
    let done = agent
        .run_turn(request(history(10, 200), TurnContext::default()))
        .await
        .unwrap();
    assert_eq!(done.response, "it fits");
    let seen = model.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "refused, then retried once");
    assert!(seen[1].len() < seen[0].len());
    assert_eq!(seen[1][1].role, Role::User, "whole turns");
    assert!(done.left_out > 0);
    assert_eq!(
        done.turn.context_tokens.len(),
        done.turn.messages.len(),
        "counted since the refusal"
    );

    // A model that refuses the retry too fails the turn with its refusal.
    let model = ScriptedModel::new(vec![Step::Limit(1_000)], USAGE);
    let agent = crate::scripted::agent(model.clone(), Vec::new(), LIMITS);
    let error = agent
        .run_turn(request(history(10, 200), TurnContext::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, AgentError::Model(ModelError::ContextLength(_))),
        "{error:?}"
    );
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);

    // `fail` never retries.
    let model = ScriptedModel::new(vec![Step::Limit(8_000)], USAGE);
    let policy = budget(0, ContextStrategy::Fail);
    let agent = crate::scripted::agent(model.clone(), Vec::new(), LIMITS).with_context(policy);
    agent
        .run_turn(request(history(10, 200), TurnContext::default()))
        .await
        .unwrap_err();
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
}

/// An agent that compacts beyond `budget`, keeping the newest `keep` turns, its summaries
/// written by `summarizer`.
fn compacting(
    model: Arc<ScriptedModel>,
    summarizer: Arc<ScriptedModel>,
    budget: u64,
    keep: usize,
) -> Agent {
    let policy = ContextPolicy {
        keep_recent_turns: keep,
        ..self::budget(budget, ContextStrategy::Compact)
    };
    agent(model, Vec::new(), LIMITS)
        .with_context(policy)
        .with_summarizer(summarizer)
}

fn stored(history: &[Message]) -> TurnContext {
    TurnContext {
        compactable: history.len(),
        ..TurnContext::default()
    }
}

#[tokio::test]
async fn compaction_summarises_the_oldest_turns_into_one_message_within_the_budget() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let summarizer = ScriptedModel::new(vec![Step::Answer("They talked about words.")], USAGE);
    let agent = compacting(model.clone(), summarizer.clone(), 1_000, 2);
    let earlier = history(10, 200);
    let done = agent
        .run_turn(request(earlier.clone(), stored(&earlier)))
        .await
        .unwrap();
    let compaction = done.compaction.clone().unwrap().unwrap();
    assert_eq!((compaction.turns, compaction.covered), (8, 16));
    assert_eq!(compaction.summary, "They talked about words.");
    assert_eq!(compaction.usage, USAGE);
    assert_eq!(
        done.turn.usage.total(),
        2 * USAGE.total(),
        "the summary's tokens count"
    );
    // The model is sent the summary in place of the eight oldest turns, then the newest two.
    let sent = model.seen.lock().unwrap()[0].clone();
    assert_eq!(sent[1], summary_message("They talked about words."));
    assert_eq!(&sent[2..6], &earlier[16..]);
    assert_eq!(sent.len(), 7);
    assert_eq!(done.left_out, 0, "nothing else was left out");
    // The summariser is sent the prompt and the transcript, within the budget: the oldest
    // turns of the transcript are left out of it first.
    let asked = summarizer.seen.lock().unwrap()[0].clone();
    assert_eq!(asked[0], Message::system(SUMMARY_PROMPT));
    let transcript = &asked[1].content;
    assert!(transcript.contains("user: question 7:"), "{transcript}");
    assert!(transcript.ends_with("assistant: answer 7"));
    assert!(!transcript.contains("question 0:"));
    assert!(TokenCounter::estimate().request(&asked, &[]) <= 1_000);
}

#[tokio::test]
async fn a_new_summary_covers_the_one_before_and_only_stored_turns_are_covered() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    let summarizer = ScriptedModel::new(vec![Step::Answer("Newer summary.")], USAGE);
    let earlier = history(6, 60);
    let agent = compacting(model.clone(), summarizer.clone(), 100_000, 1);
    // Just over what the whole request takes.
    let mut whole = vec![Message::system("You are a test agent.")];
    whole.push(summary_message("Older summary."));
    whole.extend(earlier.iter().cloned());
    whole.push(Message::user("and now?"));
    let budget = tokens_of(&agent, &whole) - 1;
    let agent = compacting(model.clone(), summarizer.clone(), budget, 1);
    let context = TurnContext {
        summary: Some("Older summary.".into()),
        // The last two turns came with the request, not from the store.
        compactable: 8,
        ..TurnContext::default()
    };
    let done = agent
        .run_turn(request(earlier.clone(), context))
        .await
        .unwrap();
    let compaction = done.compaction.unwrap().unwrap();
    assert_eq!((compaction.turns, compaction.covered), (4, 8));
    let transcript = summarizer.seen.lock().unwrap()[0][1].content.clone();
    assert!(transcript.starts_with("(summary so far) Older summary.\nuser: question 0:"));
    let sent = model.seen.lock().unwrap()[0].clone();
    assert_eq!(
        sent[1],
        summary_message("Newer summary."),
        "in the old one's place"
    );
    assert_eq!(&sent[2..6], &earlier[8..]);
}

#[tokio::test]
async fn a_failed_compaction_truncates_and_the_turn_goes_on() {
    let model = ScriptedModel::new(vec![Step::Answer("ok")], USAGE);
    // A summariser that refuses everything.
    let summarizer = ScriptedModel::new(vec![Step::Limit(0)], USAGE);
    let agent = compacting(model.clone(), summarizer, 1_000, 2);
    let earlier = history(10, 200);
    let done = agent
        .run_turn(request(earlier.clone(), stored(&earlier)))
        .await
        .unwrap();
    let error = done.compaction.unwrap().unwrap_err();
    assert!(error.contains("context window"), "{error}");
    assert!(done.left_out > 0, "truncated instead");
    assert_eq!(done.response, "ok");
    // Nothing to compact (every turn is recent, or none is stored): truncation, no call.
    let summarizer = ScriptedModel::new(vec![Step::Answer("unused")], USAGE);
    let agent = compacting(model.clone(), summarizer.clone(), 1_000, 10);
    let done = agent
        .run_turn(request(earlier.clone(), stored(&earlier)))
        .await
        .unwrap();
    assert!(done.compaction.is_none() && done.left_out > 0);
    let agent = compacting(model, summarizer.clone(), 1_000, 2);
    let done = agent
        .run_turn(request(earlier, TurnContext::default()))
        .await
        .unwrap();
    assert!(done.compaction.is_none() && done.left_out > 0);
    assert_eq!(summarizer.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_budget_bounds_a_tool_result_to_half_of_itself() {
    let model = ScriptedModel::new(
        vec![Step::Calls(vec![("big", json!({}))]), Step::Answer("done")],
        USAGE,
    );
    // No bound of its own: half the budget.
    let tools: Vec<Arc<dyn Tool>> = vec![Arc::new(Big(30_000))];
    let agent = agent(model, tools, LIMITS).with_context(budget(2_000, ContextStrategy::Truncate));
    let done = agent
        .run_turn(request(Vec::new(), TurnContext::default()))
        .await
        .unwrap();
    assert!(
        done.turn.messages[2]
            .content
            .ends_with("[cut: this result is about 10000 tokens; its first 1000 are shown]")
    );
}
