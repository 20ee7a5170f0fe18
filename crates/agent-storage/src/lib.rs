//! Storage behind traits: the conversation store (Postgres), per-session locks and rate limits
//! (Redis), idempotency records, and in-memory implementations of each.
//!
//! No diesel or redis type appears in its public API. Its contents arrive with the storage issue.
