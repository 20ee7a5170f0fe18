//! API tests: each test starts the real application in-process on port 0 (see `helpers`), or
//! runs the built binary as a black box (see `cli`).

// Helpers outside #[test] functions may unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod agent;
mod agents;
mod approvals;
mod background;
mod bad_input;
mod callers;
mod cli;
mod client_shapes;
mod client_tools;
mod context;
mod cors;
mod dashboards;
mod errors;
mod helpers;
mod manifests;
mod mcp;
mod openai;
mod openapi;
mod overload;
mod pages;
mod probes;
mod properties;
mod retention;
mod runs;
mod shutdown;
mod storage;
mod waiting;
mod webhooks;
