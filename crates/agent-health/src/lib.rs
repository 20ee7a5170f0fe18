//! Liveness, readiness and startup state for the service.
//!
//! A check is a name, a [`Criticality`] and an async function bounded by a timeout; this crate
//! knows nothing about what it checks. [`Health::readiness`] runs every check concurrently, caches
//! the result briefly so probe storms do not hammer dependencies, and folds it with the startup
//! gate and the draining flag into one [`Readiness`].

mod check;
mod error;
mod registry;
#[cfg(test)]
mod tests;

pub use check::{Criticality, HealthCheck, ProbeError};
pub use error::CheckError;
pub use registry::{CheckOutcome, Health, NotReadyReason, Readiness, ReadinessStatus};
