//! Fitting a conversation into a model's context: which earlier messages a request can hold. A
//! history is cut only between whole turns (a turn starts with its user message), so a tool call
//! is never separated from its result; a window that starts inside a turn loses its leading tool
//! results ([`first_kept`], the one rule for every window); a tool result too long on its own is
//! cut with a note the model reads.

use std::borrow::Cow;

use crate::conversation::{Message, Role};
use crate::error::AgentError;
use crate::tokens::{REPLY_PRIMING, TokenCounter};

/// What a history over the budget becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextStrategy {
    /// The newest whole turns that fit are sent.
    #[default]
    Truncate,
    /// The oldest turns are summarised by a model call (truncated meanwhile).
    Compact,
    /// The turn is refused ([`AgentError::ContextLengthExceeded`]).
    Fail,
}

impl ContextStrategy {
    /// Its name in settings (`truncate`, `compact`, `fail`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "truncate" => Some(Self::Truncate),
            "compact" => Some(Self::Compact),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }
}

/// How an agent's requests are kept within its model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextPolicy {
    /// Tokens a request may hold (instructions, tools, history, the turn's messages); 0: no
    /// budget (nothing is counted until the model refuses a request as too long).
    pub max_input_tokens: u64,
    pub strategy: ContextStrategy,
    /// The newest turns never summarised.
    pub keep_recent_turns: usize,
    /// Tokens of one tool result beyond which it is cut with a note (0: never).
    pub max_tool_result_tokens: u64,
}

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

/// What a request holds before its messages: the tokens of the system prompt and the tools
/// offered, as the agent counts them (it keeps the counts of its own).
pub(crate) type Fixed<'f> = &'f (dyn Fn(TokenCounter) -> u64 + Sync);

/// The context of one turn's model calls as it is fitted to the budget: `context` is `head`
/// messages never left out (the system prompt, the request's instructions), then the history's
/// kept messages, then the turn's own. Counting starts with a budget, or when the model refuses a
/// request as too long (then the budget becomes three quarters of what was refused, once).
#[derive(Debug)]
pub(crate) struct Window<'a> {
    /// The model whose tokenizer counts (loaded on first use).
    model: &'a str,
    counter: Option<TokenCounter>,
    policy: ContextPolicy,
    /// The system prompt's messages (0 or 1), counted by the agent with its tools.
    prompt_len: usize,
    head: usize,
    /// Of the history still in `context`.
    history_len: usize,
    /// The counts of `context[head..]` while counting (empty before); tokens of the head and
    /// the tools in `fixed`.
    counts: Vec<u64>,
    fixed: u64,
    counting: bool,
    /// Messages of the history left out so far.
    left_out: usize,
    healed: bool,
    /// Where the session's summary is in `context` (in the head), if it has one.
    summary_at: Option<usize>,
    compacted: bool,
}

impl<'a> Window<'a> {
    /// The window of a context of `head` messages never left out (the session's summary at
    /// `summary_at` among them) followed by `history_len` messages of history (and then the
    /// turn's own).
    pub(crate) fn new(
        model: &'a str,
        policy: ContextPolicy,
        prompt_len: usize,
        head: usize,
        history_len: usize,
        summary_at: Option<usize>,
    ) -> Self {
        Self {
            model,
            counter: None,
            policy,
            prompt_len,
            head,
            history_len,
            counts: Vec::new(),
            fixed: 0,
            counting: false,
            left_out: 0,
            healed: false,
            summary_at,
            compacted: false,
        }
    }

    /// The model's tokenizer, loaded on first use.
    pub(crate) fn counter(&mut self) -> TokenCounter {
        *self
            .counter
            .get_or_insert_with(|| TokenCounter::for_model(self.model))
    }

    /// Counts `context` (the history's messages from `known` where given); `fixed` counts the
    /// system prompt and the tools offered.
    fn start_counting(&mut self, context: &[Message], known: &[Option<u64>], fixed: Fixed<'_>) {
        if self.counting {
            return;
        }
        let counter = self.counter();
        self.fixed = context[self.prompt_len..self.head]
            .iter()
            .map(|message| counter.message(message))
            .sum::<u64>()
            + fixed(counter)
            + REPLY_PRIMING;
        // Counting starts before any history is left out: `known` lines up with the history.
        self.counts = context[self.head..]
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let stored = (index < self.history_len)
                    .then(|| known.get(index).copied().flatten())
                    .flatten();
                stored.unwrap_or_else(|| counter.message(message))
            })
            .collect();
        self.counting = true;
    }

    /// The history messages a compaction covers now, and their whole turns: the turns before
    /// the newest `keep_recent_turns`, among the first `compactable` (stored) ones. None unless
    /// the strategy is `compact`, the request is over the budget, and no compaction ran yet.
    pub(crate) fn turns_to_compact(
        &mut self,
        context: &[Message],
        known: &[Option<u64>],
        fixed: Fixed<'_>,
        compactable: usize,
    ) -> Option<(usize, usize)> {
        let budget = self.policy.max_input_tokens;
        if self.policy.strategy != ContextStrategy::Compact || budget == 0 || self.compacted {
            return None;
        }
        self.start_counting(context, known, fixed);
        if self.tokens() <= budget || self.left_out > 0 {
            return None;
        }
        let history = &context[self.head..self.head + self.history_len];
        let starts: Vec<usize> = history
            .iter()
            .enumerate()
            .filter(|(index, message)| message.role == Role::User && *index <= compactable)
            .map(|(index, _)| index)
            .collect();
        let all_turns = history.iter().filter(|m| m.role == Role::User).count();
        let keep = self.policy.keep_recent_turns;
        // The start of the oldest kept turn, clamped to the stored messages.
        let kept_from = all_turns.checked_sub(keep).filter(|&turns| turns > 0)?;
        let covered = starts.get(kept_from).copied().or(starts.last().copied())?;
        let turns = starts.iter().filter(|&&start| start < covered).count();
        (covered > 0 && turns > 0).then_some((covered, turns))
    }

    /// The history messages from the window's start (those a compaction covers first).
    pub(crate) fn history<'c>(&self, context: &'c [Message], count: usize) -> &'c [Message] {
        &context[self.head..self.head + count.min(self.history_len)]
    }

    /// The budget (0: none).
    pub(crate) fn budget(&self) -> u64 {
        self.policy.max_input_tokens
    }

    /// Puts `summary` in place of the session's summary (or before the history) and the first
    /// `covered` history messages out of the context.
    pub(crate) fn compacted(
        &mut self,
        context: &mut Vec<Message>,
        summary: Message,
        covered: usize,
    ) {
        let counter = self.counter();
        context.drain(self.head..self.head + covered);
        self.counts.drain(..covered);
        self.history_len -= covered;
        self.fixed += counter.message(&summary);
        match self.summary_at {
            Some(at) => {
                self.fixed -= counter.message(&context[at]);
                context[at] = summary;
            }
            None => {
                context.insert(self.head, summary);
                self.summary_at = Some(self.head);
                self.head += 1;
            }
        }
        self.compacted = true;
    }

    /// A message added to the context after the history (the turn's own).
    pub(crate) fn pushed(&mut self, message: &Message) {
        if self.counting {
            let tokens = self.counter().message(message);
            self.counts.push(tokens);
        }
    }

    /// The tokens of the request `context` makes (while counting).
    pub(crate) fn tokens(&self) -> u64 {
        self.fixed + self.counts.iter().sum::<u64>()
    }

    /// History messages left out of the requests so far.
    pub(crate) fn left_out(&self) -> usize {
        self.left_out
    }

    /// The counts of the turn's own messages (empty while not counting).
    pub(crate) fn turn_counts(&self) -> Vec<u64> {
        self.counts
            .get(self.history_len..)
            .map(<[u64]>::to_vec)
            .unwrap_or_default()
    }

    /// A tool result as the context keeps it: cut to the policy's bound, which a budget clamps
    /// to half of itself (one result alone must not take the whole request).
    pub(crate) fn tool_result(&mut self, content: String) -> String {
        let half = self.policy.max_input_tokens / 2;
        let max = match (self.policy.max_tool_result_tokens, half) {
            (max, 0) => max,
            (0, half) => half,
            (max, half) => max.min(half),
        };
        if max == 0 {
            return content;
        }
        match cut_tool_result(&self.counter(), &content, max) {
            Cow::Borrowed(_) => content,
            Cow::Owned(cut) => cut,
        }
    }

    /// Before a model call: leaves the oldest history turns out of `context` until the request
    /// fits the budget; an error when even none of the history is enough (or the strategy
    /// refuses to leave any out).
    pub(crate) fn fit(
        &mut self,
        context: &mut Vec<Message>,
        known: &[Option<u64>],
        fixed: Fixed<'_>,
    ) -> Result<(), AgentError> {
        let budget = self.policy.max_input_tokens;
        if budget == 0 && !self.counting {
            return Ok(());
        }
        self.start_counting(context, known, fixed);
        if budget == 0 || self.tokens() <= budget {
            return Ok(());
        }
        let refused = AgentError::ContextLengthExceeded {
            tokens: self.tokens(),
            budget,
        };
        if self.policy.strategy == ContextStrategy::Fail {
            return Err(refused);
        }
        let own: u64 = self.counts[self.history_len..].iter().sum();
        let room = budget.saturating_sub(self.fixed + own);
        let history = &context[self.head..self.head + self.history_len];
        let fitted = newest_turns_within(history, &self.counts[..self.history_len], room);
        self.leave_out(context, fitted.start);
        if self.tokens() > budget {
            return Err(AgentError::ContextLengthExceeded {
                tokens: self.tokens(),
                budget,
            });
        }
        Ok(())
    }

    fn leave_out(&mut self, context: &mut Vec<Message>, messages: usize) {
        context.drain(self.head..self.head + messages);
        self.counts.drain(..messages);
        self.history_len -= messages;
        self.left_out += messages;
    }

    /// After the model refused `context` as too long: once per turn (never with `fail`), the
    /// budget becomes three quarters of what was sent and the context is fitted again. Answers
    /// whether to retry (false: the refusal stands).
    pub(crate) fn heal(
        &mut self,
        context: &mut Vec<Message>,
        known: &[Option<u64>],
        fixed: Fixed<'_>,
    ) -> bool {
        if self.healed || self.policy.strategy == ContextStrategy::Fail {
            return false;
        }
        self.healed = true;
        self.start_counting(context, known, fixed);
        let sent = self.tokens();
        self.policy.max_input_tokens = sent * 3 / 4;
        let before = self.left_out;
        // Nothing left out: the same request would be refused again.
        self.fit(context, known, fixed).is_ok() && self.left_out > before
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
