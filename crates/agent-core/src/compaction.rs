//! Compaction: the oldest turns of a history that does not fit, summarised by a model call into
//! one message that stands in for them in every later request. The summariser is sent
//! [`SUMMARY_PROMPT`] as its system prompt and the transcript (the earlier summary, if any, then
//! the turns) as one user message, itself within the budget: the oldest messages of the
//! transcript are left out of it first.

use tracing::Instrument;

use crate::conversation::{Message, Role, TokenUsage};
use crate::error::ModelError;
use crate::model::{ChatModel, ChatRequest, Sampling};
use crate::spans;
use crate::tokens::TokenCounter;

/// The system prompt of a summariser's call.
pub const SUMMARY_PROMPT: &str = "You summarise the earlier part of a conversation between a \
user and an AI assistant, so that the assistant can go on with it without the original \
messages. Keep what the rest of the conversation may need: the user's goals, preferences and \
constraints, the facts, figures and names established, what tools answered that still matters, \
decisions made, and open questions. Write in the conversation's language, in plain sentences or \
short lists, as briefly as that allows. Do not add anything that was not said. Answer with the \
summary only.";

/// The first line of the message that stands in for summarised turns.
pub const SUMMARY_HEADING: &str = "Summary of the earlier conversation (its messages are not \
repeated here):";

/// The message that stands in for the turns `summary` covers.
pub fn summary_message(summary: &str) -> Message {
    Message::system(format!("{SUMMARY_HEADING}\n{summary}"))
}

/// A compaction a turn made: stored with the turn, it replaces the turns it covers in every
/// later request of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// The summary (of the earlier summary, if any, and the covered turns).
    pub summary: String,
    /// The tokens its message takes in a request.
    pub tokens: u64,
    /// History messages it covers, from the start of the history the turn was given (after
    /// its pinned instructions): always whole turns.
    pub covered: usize,
    /// Whole turns it covers.
    pub turns: usize,
    /// What the summariser's call used (counted in the turn's usage too).
    pub usage: TokenUsage,
}

/// The transcript of `messages` (after `earlier`, the summary so far) as the summariser's user
/// message, within `room` tokens: the oldest messages are left out first, and a message longer
/// than the room on its own is cut.
pub(crate) fn transcript(
    counter: &TokenCounter,
    earlier: Option<&str>,
    messages: &[Message],
    room: u64,
) -> String {
    let mut lines: Vec<String> = messages.iter().map(line).collect();
    if let Some(earlier) = earlier {
        lines.insert(0, format!("(summary so far) {earlier}"));
    }
    let counts: Vec<u64> = lines.iter().map(|line| counter.text(line) + 1).collect();
    let mut total: u64 = counts.iter().sum();
    let mut first = 0;
    while total > room && first + 1 < lines.len() {
        total -= counts[first];
        first += 1;
    }
    let mut kept = lines.split_off(first);
    if total > room
        && let Some(only) = kept.first_mut()
        && let Some(prefix) = counter.prefix(only, room)
    {
        *only = prefix.to_owned();
    }
    kept.join("\n")
}

/// One message of a transcript.
fn line(message: &Message) -> String {
    match message.role {
        Role::Assistant if !message.tool_calls.is_empty() => {
            let calls: Vec<String> = message
                .tool_calls
                .iter()
                .map(|call| format!("{}({})", call.name, call.arguments))
                .collect();
            let text = if message.content.is_empty() {
                String::new()
            } else {
                format!("{} ", message.content)
            };
            format!("assistant: {text}[calls {}]", calls.join(", "))
        }
        Role::Tool => format!("tool result: {}", message.content),
        role => format!("{}: {}", role.as_str(), message.content),
    }
}

/// Asks `model` for the summary of `transcript`, in a `compaction` span around its chat span.
pub(crate) async fn summarise(
    model: &dyn ChatModel,
    transcript: String,
    turns: usize,
) -> Result<(String, TokenUsage), ModelError> {
    let identity = model.identity();
    let span = spans::compaction(&identity, turns);
    let call = async {
        let messages = [Message::system(SUMMARY_PROMPT), Message::user(transcript)];
        let sampling = Sampling {
            temperature: Some(0.0),
            ..Sampling::default()
        };
        let chat = spans::chat(&identity, &sampling);
        let request = ChatRequest {
            messages: &messages,
            tools: &[],
            sampling: &sampling,
        };
        let reply = model.complete(request).instrument(chat.clone()).await;
        match &reply {
            Ok(reply) => spans::record_reply(&chat, reply, false),
            Err(error) => spans::record_error(&chat, error.kind(), error),
        }
        reply
    };
    let reply = call.instrument(span.clone()).await;
    match reply {
        Ok(reply) if !reply.message.content.trim().is_empty() => {
            spans::record_usage(&span, reply.usage);
            Ok((reply.message.content.trim().to_owned(), reply.usage))
        }
        Ok(_) => {
            let error = ModelError::Unusable("the summary was empty".into());
            spans::record_error(&span, error.kind(), &error);
            Err(error)
        }
        Err(error) => {
            spans::record_error(&span, error.kind(), &error);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ToolCall;

    #[test]
    fn a_transcript_names_each_message_and_fits_its_room_leaving_out_the_oldest() {
        let counter = TokenCounter::estimate();
        let messages = vec![
            Message::user("what is 2+3*4?"),
            Message::assistant_tool_calls(
                "",
                vec![ToolCall {
                    id: "call_1".into(),
                    name: "calculator".into(),
                    arguments: r#"{"expression":"2+3*4"}"#.into(),
                }],
            ),
            Message::tool_result("call_1", "14"),
            Message::assistant("It is 14."),
        ];
        let whole = transcript(&counter, Some("The user likes maths."), &messages, 10_000);
        assert_eq!(
            whole,
            "(summary so far) The user likes maths.\nuser: what is 2+3*4?\n\
             assistant: [calls calculator({\"expression\":\"2+3*4\"})]\ntool result: 14\n\
             assistant: It is 14."
        );
        let short = transcript(&counter, Some("The user likes maths."), &messages, 12);
        assert!(short.ends_with("assistant: It is 14."), "{short}");
        assert!(
            !short.contains("summary so far"),
            "the oldest go first: {short}"
        );
        assert!(counter.text(&short) <= 12);
        let one = transcript(&counter, None, &[Message::user("word ".repeat(100))], 10);
        assert!(
            counter.text(&one) <= 10,
            "a long message alone is cut: {one}"
        );
    }
}
