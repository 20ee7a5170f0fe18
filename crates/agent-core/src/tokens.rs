//! Counting tokens: what a request to the model costs of its context window. Models of the
//! OpenAI families are counted with their own tokenizer (tiktoken-rs, whose ranks are inside the
//! crate: `o200k_base` for GPT-4o, 4.1, 5 and the o-series, `cl100k_base` for GPT-4 and 3.5), loaded
//! once per process on first use. Any other model is estimated: one token per 3 bytes of UTF-8,
//! rounded up. Against `o200k_base` that counts English prose half again high, Japanese a third
//! high, and code and JSON up to a fifth low (measured in the tests: 1.50, 1.30, 0.86, 0.82):
//! the stated bound of an estimate is −20 % to +55 %.
//! A message also costs the chat format's framing, counted as OpenAI's guide counts it.
//!
//! Cost (measured, release build): loading `o200k_base` takes 175 ms and 46 MiB of memory once per
//! process (`cl100k_base` 24 MiB more); counting a 22 KB tool result takes 0.7 ms. Counts are
//! meant to be made once per stored message, never per turn.

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::conversation::Message;
use crate::model::ToolSpec;

/// Tokens of a message's framing in the chat format (its role and separators).
pub const MESSAGE_OVERHEAD: u64 = 3;
/// Tokens that prime the model's reply, once per request.
pub const REPLY_PRIMING: u64 = 3;
/// Tokens of a tool call's framing (its id, type and name's place).
const TOOL_CALL_OVERHEAD: u64 = 8;
/// Tokens of a tool's framing in the request (beside its name, description and schema).
const TOOL_OVERHEAD: u64 = 8;

/// How a model's tokens are counted.
#[derive(Clone, Copy)]
pub struct TokenCounter {
    /// None: estimated.
    bpe: Option<&'static CoreBPE>,
    encoding: &'static str,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TokenCounter")
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl TokenCounter {
    /// The counter of `model` (an OpenAI model id, or any other: then an estimate).
    pub fn for_model(model: &str) -> Self {
        // A provider prefix (`openai/gpt-4o`, as gateways name models) is not part of the id.
        let id = model.rsplit('/').next().unwrap_or(model);
        match get_tokenizer(id) {
            Some(Tokenizer::O200kBase) => Self {
                bpe: Some(tiktoken_rs::o200k_base_singleton()),
                encoding: "o200k_base",
            },
            Some(Tokenizer::Cl100kBase) => Self {
                bpe: Some(tiktoken_rs::cl100k_base_singleton()),
                encoding: "cl100k_base",
            },
            _ => Self::estimate(),
        }
    }

    /// The estimate (see the module doc).
    pub fn estimate() -> Self {
        Self {
            bpe: None,
            encoding: "estimate",
        }
    }

    /// The tokenizer's name (`o200k_base`, `cl100k_base`), or `estimate`.
    pub fn encoding(&self) -> &'static str {
        self.encoding
    }

    /// Whether counts are exact (the model's own tokenizer) rather than estimated.
    pub fn is_exact(&self) -> bool {
        self.bpe.is_some()
    }

    /// The tokens of `text`.
    pub fn text(&self, text: &str) -> u64 {
        match self.bpe {
            // Special tokens' text in a message is text: encoded as ordinary bytes.
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => (text.len() as u64).div_ceil(3),
        }
    }

    /// The longest prefix of `text` (cut at a character boundary) of at most `max` tokens; none
    /// when the whole text fits.
    pub fn prefix<'a>(&self, text: &'a str, max: u64) -> Option<&'a str> {
        let mut end = match self.bpe {
            Some(bpe) => {
                let ranks = bpe.encode_ordinary(text);
                if ranks.len() as u64 <= max {
                    return None;
                }
                let keep = usize::try_from(max).unwrap_or(usize::MAX).min(ranks.len());
                // The tokens are a segmentation of the text's bytes: their bytes are its start.
                bpe.decode_bytes(&ranks[..keep])
                    .map_or(0, |bytes| bytes.len())
            }
            None => {
                if self.text(text) <= max {
                    return None;
                }
                usize::try_from(max.saturating_mul(3)).unwrap_or(usize::MAX)
            }
        };
        loop {
            end = end.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let prefix = &text[..end];
            // A cut piece may split into more tokens than it was part of: shrink until it fits.
            if end == 0 || self.text(prefix) <= max {
                return Some(prefix);
            }
            end -= (end / 10).max(1);
        }
    }

    /// The tokens a message takes in a request: its content, its tool calls' names and
    /// arguments, its tool result's call id, and the framing of each.
    pub fn message(&self, message: &Message) -> u64 {
        let calls: u64 = message
            .tool_calls
            .iter()
            .map(|call| TOOL_CALL_OVERHEAD + self.text(&call.name) + self.text(&call.arguments))
            .sum();
        let call_id = message
            .tool_call_id
            .as_deref()
            .map_or(0, |id| self.text(id));
        MESSAGE_OVERHEAD + self.text(&message.content) + calls + call_id
    }

    /// The tokens the tools offered take in a request (their names, descriptions and schemas).
    pub fn tools(&self, tools: &[ToolSpec]) -> u64 {
        tools
            .iter()
            .map(|tool| {
                TOOL_OVERHEAD
                    + self.text(&tool.name)
                    + self.text(&tool.description)
                    + self.text(&tool.parameters.to_string())
            })
            .sum()
    }

    /// The tokens of a whole request's input: its messages, its tools and the reply's priming.
    pub fn request(&self, messages: &[Message], tools: &[ToolSpec]) -> u64 {
        let messages: u64 = messages.iter().map(|message| self.message(message)).sum();
        messages + self.tools(tools) + REPLY_PRIMING
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ToolCall;

    #[test]
    fn openai_families_are_counted_with_their_own_tokenizer() {
        let cases = [
            ("gpt-4o-mini", "o200k_base"),
            ("gpt-4.1", "o200k_base"),
            ("openai/gpt-4o", "o200k_base"),
            ("gpt-4", "cl100k_base"),
            ("gpt-3.5-turbo", "cl100k_base"),
            ("claude-3-5-haiku", "estimate"),
            ("llama3.1:8b", "estimate"),
        ];
        for (model, encoding) in cases {
            let counter = TokenCounter::for_model(model);
            assert_eq!(counter.encoding(), encoding, "{model}");
            assert_eq!(counter.is_exact(), encoding != "estimate", "{model}");
        }
        // Known counts (tiktoken's own examples).
        let o200k = TokenCounter::for_model("gpt-4o");
        assert_eq!(o200k.text("hello world"), 2);
        assert_eq!(o200k.text("tiktoken is great!"), 6);
        let cl100k = TokenCounter::for_model("gpt-4");
        assert_eq!(cl100k.text("tiktoken is great!"), 6);
        assert_eq!(o200k.text(""), 0);
    }

    #[test]
    fn the_estimate_stays_within_its_stated_bound_of_the_real_count() {
        let exact = TokenCounter::for_model("gpt-4o");
        let estimate = TokenCounter::estimate();
        let prose = "The quick brown fox jumps over the lazy dog, and then it rests by the river \
                     for a while before going home to its den in the forest."
            .repeat(20);
        let code =
            r#"fn main() { let total: u64 = (1..=10).map(|n| n * n).sum(); println!("{total}"); }"#
                .repeat(20);
        let json =
            r#"{"order_id": 18342, "items": [{"sku": "A-113", "qty": 2}], "status": "shipped"}"#
                .repeat(20);
        let cjk = "東京の天気は晴れです。明日は雨が降るかもしれません。".repeat(20);
        for (kind, text, low, high) in [
            // Measured: 1.50, 0.86, 0.82, 1.30.
            ("prose", &prose, 1.3, 1.7),
            ("code", &code, 0.8, 1.0),
            ("json", &json, 0.78, 0.95),
            ("cjk", &cjk, 1.1, 1.5),
        ] {
            let ratio = estimate.text(text) as f64 / exact.text(text) as f64;
            assert!(
                (low..=high).contains(&ratio),
                "{kind}: estimate / exact = {ratio:.2}, outside {low}..{high}"
            );
        }
    }

    #[test]
    fn a_prefix_holds_at_most_the_tokens_asked_and_cuts_at_a_character() {
        let text =
            "東京の天気は晴れです。 The quick brown fox jumps over the lazy dog. ".repeat(50);
        for counter in [TokenCounter::for_model("gpt-4o"), TokenCounter::estimate()] {
            assert_eq!(counter.prefix(&text, counter.text(&text)), None, "it fits");
            for max in [0, 1, 7, 100, 500] {
                let prefix = counter.prefix(&text, max).unwrap();
                assert!(text.starts_with(prefix));
                assert!(counter.text(prefix) <= max, "{}: {max}", counter.encoding());
                if max >= 100 {
                    assert!(counter.text(prefix) + 10 >= max, "not much less than asked");
                }
            }
        }
    }

    #[test]
    fn a_message_counts_its_content_calls_and_framing() {
        let counter = TokenCounter::for_model("gpt-4o");
        let user = Message::user("hello world");
        assert_eq!(counter.message(&user), MESSAGE_OVERHEAD + 2);
        let call = Message::assistant_tool_calls(
            "",
            vec![ToolCall {
                id: "call_1".into(),
                name: "calculator".into(),
                arguments: r#"{"expression":"2+3"}"#.into(),
            }],
        );
        assert!(counter.message(&call) > MESSAGE_OVERHEAD + TOOL_CALL_OVERHEAD);
        let request = counter.request(&[user.clone(), call.clone()], &[]);
        assert_eq!(
            request,
            counter.message(&user) + counter.message(&call) + REPLY_PRIMING
        );
    }
}
