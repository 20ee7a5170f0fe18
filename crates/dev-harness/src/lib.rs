//! The dev-only harness of the tests and the system checks (`cargo xtask`): throwaway Postgres
//! and Redis servers, the test tools from PyPI and npm (provisioned here), MCP servers from the
//! official SDKs, child processes stopped on drop, a minimal blocking HTTP client, and the
//! one load generator (async, thousands of connections). It depends on no other workspace crate,
//! so xtask stays quick to build.

// Progress lines are what a developer watching `cargo xtask test` wants to see.
#![allow(clippy::print_stdout)]

pub mod http;
pub mod load;
pub mod mcp;
pub mod process;
pub mod services;
pub mod sse;
pub mod test_tools;

pub use mcp::{McpServer, McpServerKind};
pub use process::{Spawned, free_port, wait_for_port};
pub use services::{Services, ThrowawayPostgres, ThrowawayRedis};
pub use test_tools::{TestTools, cargo_deny, system_program};
