//! The agent: conversation types (`Message`, `ToolCall`, `Turn`), and (with the agent-core issue)
//! the `ChatModel` and `Tool` ports and the bounded tool-calling loop.
//!
//! It knows no HTTP framework, no SQL and no Redis.

mod conversation;
mod session_id;

pub use conversation::{Message, Role, TokenUsage, ToolCall, Turn};
pub use session_id::{InvalidSessionId, SessionId};
