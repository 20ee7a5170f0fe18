//! agent-core tests: the loop with a scripted model (limits, concurrency, cancellation, tool
//! errors), the OpenAI-compatible model through the real async-openai client against a fake
//! server, the offline model, and turns that stop for the client (approvals, client tools).

#![allow(clippy::unwrap_used)]

mod agent_loop;
mod chain;
mod context;
mod http_tools;
mod offline;
mod openai;
mod scripted;
mod tokens;
mod waits;
