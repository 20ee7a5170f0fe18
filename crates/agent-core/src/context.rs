//! Fitting a conversation into a model's context: which earlier messages a request can hold. A
//! history is cut only between whole turns (a turn starts with its user message), so a tool call
//! is never separated from its result; a window that starts inside a turn loses its leading tool
//! results ([`first_kept`], the one rule for every window); a tool result too long on its own is
//! cut with a note the model reads.

use std::borrow::Cow;

use crate::conversation::{Message, Role};
use crate::tokens::TokenCounter;

/// The index of the first message that is not a tool result: a window may start inside an
/// earlier turn, and tool results without their call are invalid. Every window of history is
/// cut here.
pub fn first_kept(roles: impl ExactSizeIterator<Item = Role>) -> usize {
    let len = roles.len();
    roles
        .into_iter()
        .position(|role| role != Role::Tool)
        .unwrap_or(len)
}

/// The newest whole turns of a history that fit a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// Where they start: the messages before are left out (all of them when none fits).
    pub start: usize,
    /// Their tokens.
    pub tokens: u64,
    /// Whole turns left out before `start`.
    pub turns_left_out: usize,
}

/// The newest whole turns of `history` whose tokens (`counts`, one per message) add up to at most
/// `budget`. Messages before the history's first user message (the end of a turn whose start is
/// outside it) are never kept.
pub fn newest_turns_within(history: &[Message], counts: &[u64], budget: u64) -> Fitted {
    debug_assert_eq!(history.len(), counts.len());
    let starts: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, message)| message.role == Role::User)
        .map(|(index, _)| index)
        .collect();
    let mut fitted = Fitted {
        start: history.len(),
        tokens: 0,
        turns_left_out: starts.len(),
    };
    let mut end = history.len();
    for (turn, &start) in starts.iter().enumerate().rev() {
        let tokens: u64 = counts[start..end].iter().sum();
        if fitted.tokens + tokens > budget {
            break;
        }
        fitted = Fitted {
            start,
            tokens: fitted.tokens + tokens,
            turns_left_out: turn,
        };
        end = start;
    }
    fitted
}

/// `content` cut to `max` tokens with a note saying so, or as it is when it fits (or `max` is 0).
pub fn cut_tool_result<'a>(counter: &TokenCounter, content: &'a str, max: u64) -> Cow<'a, str> {
    if max == 0 {
        return Cow::Borrowed(content);
    }
    match counter.prefix(content, max) {
        None => Cow::Borrowed(content),
        Some(prefix) => Cow::Owned(format!(
            "{prefix}\n[cut: this result is about {} tokens; its first {max} are shown]",
            counter.text(content)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ToolCall;

    /// user, assistant calling a tool, its result, the answer: one whole turn.
    fn tool_turn(question: &str) -> Vec<Message> {
        vec![
            Message::user(question),
            Message::assistant_tool_calls(
                "",
                vec![ToolCall {
                    id: format!("call_{question}"),
                    name: "lookup".into(),
                    arguments: "{}".into(),
                }],
            ),
            Message::tool_result(format!("call_{question}"), "a result"),
            Message::assistant("an answer"),
        ]
    }

    #[test]
    fn the_newest_whole_turns_that_fit_are_kept() {
        let history: Vec<Message> = ["one", "two", "three"]
            .iter()
            .flat_map(|question| tool_turn(question))
            .collect();
        let counts = vec![10; history.len()];
        // Each turn is 40 tokens.
        assert_eq!(
            newest_turns_within(&history, &counts, 1000),
            Fitted {
                start: 0,
                tokens: 120,
                turns_left_out: 0
            }
        );
        let two = newest_turns_within(&history, &counts, 99);
        assert_eq!((two.start, two.tokens, two.turns_left_out), (4, 80, 1));
        assert_eq!(history[two.start].role, Role::User, "a turn's start");
        let none = newest_turns_within(&history, &counts, 39);
        assert_eq!((none.start, none.tokens, none.turns_left_out), (12, 0, 3));
    }

    #[test]
    fn a_history_starting_inside_a_turn_keeps_none_of_its_tail() {
        let mut history = tool_turn("one");
        history.drain(..2);
        history.extend(tool_turn("two"));
        let counts = vec![1; history.len()];
        let fitted = newest_turns_within(&history, &counts, 1000);
        assert_eq!(
            fitted.start, 2,
            "the tool result and answer of a cut turn are left out"
        );
        assert_eq!(
            first_kept(history.iter().map(|message| message.role)),
            1,
            "the count window's rule: only leading tool results"
        );
    }

    #[test]
    fn a_long_tool_result_is_cut_with_a_note() {
        let counter = TokenCounter::for_model("gpt-4o");
        let long = "word ".repeat(1000);
        let cut = cut_tool_result(&counter, &long, 100);
        let note = format!(
            "[cut: this result is about {} tokens; its first 100 are shown]",
            counter.text(&long)
        );
        assert!(cut.ends_with(&note), "{cut}");
        assert!(counter.text(&cut) < 140, "{}", counter.text(&cut));
        assert!(matches!(
            cut_tool_result(&counter, "short", 100),
            Cow::Borrowed("short")
        ));
        assert!(matches!(
            cut_tool_result(&counter, &long, 0),
            Cow::Borrowed(_)
        ));
    }
}
