//! agent-server as a library: the application factory, routes, middleware and telemetry, so that
//! the binary and the API tests start exactly the same server.

mod access;
mod admission;
mod agent_factory;
mod agents;
mod approvals;
mod backends;
pub mod cli;
mod dto;
mod error;
mod failure_log;
mod history_cache;
mod idempotency;
mod metrics;
mod middleware;
mod quota;
mod readiness;
mod retention;
mod routes;
mod runs;
mod shutdown;
mod startup;
pub mod telemetry;
mod turn;
mod webhooks;

pub use backends::{Backends, migrate};
pub use error::{ApiError, Cause, ErrorCode, StartupError, error_chain};
pub use shutdown::ShutdownTrigger;
pub use startup::{Application, ApplicationBuilder};
