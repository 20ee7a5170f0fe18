//! The agent: conversation types (`Message`, `ToolCall`, `Turn`), the `ChatModel` and `Tool`
//! ports, and the bounded tool-calling loop over any OpenAI-compatible model.
//!
//! It knows no HTTP framework, no SQL and no Redis. Its contents arrive with the agent-core issue.
