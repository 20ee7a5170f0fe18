//! The offline model: a deterministic `ChatModel` for the embedded default, so the whole loop,
//! tools included, runs with no network. It says plainly what it is.

use async_trait::async_trait;

use crate::conversation::{Message, Role, TokenUsage, ToolCall};
use crate::error::ModelError;
use crate::model::{ChatModel, ChatRequest, ModelReply};

/// Answers from rules: arithmetic goes to the `calculator` tool, questions about the time to
/// `current_time`, anything else is reflected back.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineModel;

#[async_trait]
impl ChatModel for OfflineModel {
    fn identity(&self) -> crate::model::ModelIdentity {
        crate::model::ModelIdentity {
            provider: "offline",
            model: "offline".to_owned(),
            server_address: None,
            server_port: None,
        }
    }

    async fn complete(&self, request: ChatRequest<'_>) -> Result<ModelReply, ModelError> {
        let has_tool = |name: &str| request.tools.iter().any(|tool| tool.name == name);
        let last_user = request
            .messages
            .iter()
            .rposition(|message| message.role == Role::User);
        let question = last_user
            .map(|index| request.messages[index].content.as_str())
            .unwrap_or_default();
        let results: Vec<&Message> = last_user
            .map(|index| &request.messages[index + 1..])
            .unwrap_or_default()
            .iter()
            .filter(|message| message.role == Role::Tool)
            .collect();

        // A text answer takes the form asked for: for a schema, the simplest JSON it accepts.
        let answer = |text: String| {
            Message::assistant(request.sampling.response_format.simplest_answer(&text))
        };
        let message = if !results.is_empty() {
            let answers: Vec<&str> = results
                .iter()
                .map(|result| result.content.as_str())
                .collect();
            answer(match arithmetic(question) {
                Some(expression) => format!("{expression} = {}", answers.join(", ")),
                None => format!("Here is what the tools returned: {}", answers.join(", ")),
            })
        } else if let Some(expression) = arithmetic(question).filter(|_| has_tool("calculator")) {
            let arguments = serde_json::json!({ "expression": expression }).to_string();
            Message::assistant_tool_calls(
                "",
                vec![ToolCall {
                    id: "offline_call_1".into(),
                    name: "calculator".into(),
                    arguments,
                }],
            )
        } else if asks_for_time(question) && has_tool("current_time") {
            Message::assistant_tool_calls(
                "",
                vec![ToolCall {
                    id: "offline_call_1".into(),
                    name: "current_time".into(),
                    arguments: "{}".into(),
                }],
            )
        } else {
            answer(format!(
                "I am the offline model: no model server is configured, so I can only do arithmetic, \
                 tell the time, and repeat what you said. You said: {question}"
            ))
        };
        let prompt_characters: usize = request
            .messages
            .iter()
            .map(|message| message.content.len())
            .sum();
        let completion_characters = message.content.len()
            + message
                .tool_calls
                .iter()
                .map(|call| call.arguments.len())
                .sum::<usize>();
        Ok(ModelReply {
            message,
            usage: TokenUsage {
                prompt_tokens: (prompt_characters / 4 + 1) as u64,
                completion_tokens: (completion_characters / 4 + 1) as u64,
            },
            meta: Default::default(),
        })
    }
}

/// The longest run of arithmetic characters holding a digit and an operator, if any.
fn arithmetic(text: &str) -> Option<String> {
    let is_arithmetic =
        |character: char| character.is_ascii_digit() || "+-*/%^(). ".contains(character);
    text.split(|character: char| !is_arithmetic(character))
        .map(str::trim)
        .filter(|run| {
            run.chars().any(|c| c.is_ascii_digit()) && run.chars().any(|c| "+-*/%^".contains(c))
        })
        .max_by_key(|run| run.len())
        .map(|run| run.trim_end_matches(['.', ' ']).to_owned())
}

fn asks_for_time(text: &str) -> bool {
    let lower = text.to_lowercase();
    ["time", "date", "today", "day is it"]
        .iter()
        .any(|word| lower.contains(word))
}

#[cfg(test)]
mod tests {
    use super::arithmetic;

    #[test]
    fn arithmetic_is_found_in_questions() {
        let cases = [
            ("what is 2+3*4?", Some("2+3*4")),
            ("compute (1 + 2) * 3 please", Some("(1 + 2) * 3")),
            ("I have 3 cats", None),
            ("hello", None),
            ("7/2.", Some("7/2")),
        ];
        for (text, expected) in cases {
            assert_eq!(arithmetic(text).as_deref(), expected, "{text}");
        }
    }
}
