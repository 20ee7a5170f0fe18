//! Admission control: how many connections and turns one instance takes at once, sized from its
//! descriptor limit, and the fast `503 overloaded` beyond them.
//!
//! Every descriptor is budgeted: the pools (Postgres, Redis, probes), a fixed reserve (listener,
//! epoll, logs), each worker's idle model connections, one upstream call per turn in flight (plus
//! its parallel tool calls when HTTP tools are configured), the served connections, and a band of
//! connections accepted only to be refused. actix-web stops accepting at the sum (the kernel's
//! backlog holds the rest), so `accept` never fails with EMFILE and a pool can always reconnect.
//! A connection accepted beyond the served limit gets `503 overloaded` with `Retry-After` to its
//! first request that is not a probe, and is closed; the probes and `/metrics` always answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServiceRequest;
use agent_config::Settings;

use crate::error::{ApiError, ErrorCode};

/// Descriptors kept for what is not a connection or an upstream call: the listener, epoll and
/// event descriptors of the runtimes, standard streams, files the process opens.
const FIXED_RESERVE: u64 = 64;
/// Each worker: its runtime's few descriptors (epoll, events), one for the rounding up of its share
/// of the connection cap, and one for a connection it is still closing when the accept thread,
/// already counting it gone, accepts the next (issue 32 looked for what the budget missed).
const PER_WORKER: u64 = 6;
/// The auto-sized turn limit's ceiling: beyond it memory, not descriptors, is the bound.
const AUTO_TURNS_CEILING: usize = 10_000;
/// The auto-sized connection limit's ceiling.
const AUTO_CONNECTIONS_CEILING: usize = 100_000;

/// The process's descriptor limits, after raising the soft one to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptors {
    pub(crate) soft_before: u64,
    pub(crate) hard: u64,
    pub(crate) soft: u64,
}

impl Descriptors {
    /// Raises the soft limit to the hard limit, as far as the OS allows, and answers both.
    pub(crate) fn raise() -> Self {
        let (soft_before, hard) =
            rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
        let soft = rlimit::increase_nofile_limit(hard).unwrap_or(soft_before);
        Self {
            soft_before,
            hard,
            soft,
        }
    }
}

/// The limits in force, and how they were reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) connections: usize,
    /// Connections accepted beyond `connections` only to be refused.
    pub(crate) refusal_band: usize,
    /// Turns running at once.
    pub(crate) turns: usize,
    /// Descriptors kept for pools, upstream calls and the process itself.
    pub(crate) reserved: u64,
    /// Whether configured limits were lowered to fit the descriptors.
    pub(crate) lowered: bool,
    pub(crate) retry_after: Duration,
}

impl Limits {
    /// The limits for `settings` within `descriptors`.
    pub(crate) fn plan(settings: &Settings, descriptors: u64) -> Self {
        let storage = &settings.storage;
        let pools = if storage.database_url.is_some() {
            storage.pool_size as u64 + 2
        } else {
            0
        } + if storage.redis_url.is_some() {
            storage.redis_pool_size as u64 + 2
        } else {
            0
        };
        // Each worker keeps up to this many idle connections to the model server.
        let idle_upstream = agent_core::OpenAiModel::IDLE_CONNECTIONS as u64;
        let fixed =
            pools + FIXED_RESERVE + (PER_WORKER + idle_upstream) * settings.server.workers as u64;
        let available = descriptors.saturating_sub(fixed) as usize;
        // Each turn may hold one model call, plus its parallel tool calls when tools call out.
        let per_turn = 1 + if settings.http_tools.is_empty() {
            0
        } else {
            settings.turn.max_parallel_tools
        };
        // connections + connections/16 (band) + turns * per_turn <= available
        let (wanted_connections, wanted_turns) = (
            settings.server.max_connections,
            settings.server.max_turns_in_flight,
        );
        let auto_connections = {
            // With turns at half the connections: c * (1 + 1/16 + per_turn/2) <= available.
            let share = (available * 32) / (34 + 16 * per_turn);
            share.min(AUTO_CONNECTIONS_CEILING)
        };
        let mut connections = if wanted_connections == 0 {
            auto_connections
        } else {
            wanted_connections
        };
        let mut turns = if wanted_turns == 0 {
            (connections / 2).min(AUTO_TURNS_CEILING)
        } else {
            wanted_turns
        };
        let needed =
            |connections: usize, turns: usize| connections + band(connections) + turns * per_turn;
        let mut lowered = false;
        if needed(connections, turns) > available {
            lowered = true;
            // Scale both down in proportion until they fit.
            let scale = available as f64 / needed(connections, turns) as f64;
            connections = ((connections as f64 * scale) as usize).max(1);
            turns = ((turns as f64 * scale) as usize).max(1);
            while needed(connections, turns) > available && connections > 1 {
                connections -= 1;
            }
        }
        let connections = connections.max(1);
        Self {
            connections,
            refusal_band: band(connections),
            turns: turns.max(1),
            reserved: fixed,
            lowered,
            retry_after: settings.server.overload_retry_after,
        }
    }

    /// actix-web's per-worker connection cap: the served connections and the refusal band.
    pub(crate) fn per_worker_accepted(&self, workers: usize) -> usize {
        (self.connections + self.refusal_band).div_ceil(workers.max(1))
    }
}

/// Connections accepted beyond the served limit only to be refused: about 1/16 of it (at least
/// 16), so refusals keep up while a storm of new connections waits in the backlog.
fn band(connections: usize) -> usize {
    (connections / 16).max(16)
}

/// The counters every worker shares.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    connections: AtomicUsize,
    turns: AtomicUsize,
    refused_connections: AtomicU64,
    refused_turns: AtomicU64,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            connections: AtomicUsize::new(0),
            turns: AtomicUsize::new(0),
            refused_connections: AtomicU64::new(0),
            refused_turns: AtomicU64::new(0),
        })
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a new connection; it is served if within the limit, refused otherwise.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> ConnectionSlot {
        let open = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        ConnectionSlot {
            admission: Arc::clone(self),
            refused: open > self.limits.connections,
        }
    }

    /// A turn's slot, or `503 overloaded` when every one is taken.
    pub(crate) fn begin_turn(self: &Arc<Self>) -> Result<TurnSlot, ApiError> {
        let running = self.turns.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = TurnSlot {
            admission: Arc::clone(self),
        };
        if running > self.limits.turns {
            drop(slot);
            self.refused_turns.fetch_add(1, Ordering::Relaxed);
            return Err(self.overloaded("turns"));
        }
        Ok(slot)
    }

    /// Whether a turn would be admitted now (the dispatcher of background runs asks before it
    /// takes a queued run, so that looking takes no slot from a request).
    pub(crate) fn has_room(&self) -> bool {
        self.turns.load(Ordering::Relaxed) < self.limits.turns
    }

    /// A slot for a background run already taken from the queue: counted even if requests
    /// filled the last slots since [`Self::has_room`] (by one run per race at most).
    pub(crate) fn begin_taken_turn(self: &Arc<Self>) -> TurnSlot {
        self.turns.fetch_add(1, Ordering::Relaxed);
        TurnSlot {
            admission: Arc::clone(self),
        }
    }

    /// The answer to a request that is refused.
    pub(crate) fn overloaded(&self, what: &str) -> ApiError {
        ApiError::Unavailable {
            code: ErrorCode::Overloaded,
            message: format!("this instance is at its limit of {what}; retry shortly"),
            retry_after: Some(self.limits.retry_after),
            cause: None,
        }
    }

    /// Figures for `/metrics`: (connections open, turns running, connection refusals, turn
    /// refusals).
    pub(crate) fn figures(&self) -> (usize, usize, u64, u64) {
        (
            self.connections.load(Ordering::Relaxed),
            self.turns.load(Ordering::Relaxed),
            self.refused_connections.load(Ordering::Relaxed),
            self.refused_turns.load(Ordering::Relaxed),
        )
    }
}

/// The refusal of a request whose connection was accepted beyond the served limit (the caller
/// lets the probes through); the connection is then closed.
pub(crate) fn refusal(request: &ServiceRequest) -> Option<ApiError> {
    let slot = request.conn_data::<ConnectionSlot>()?;
    if !slot.refused {
        return None;
    }
    let admission = &slot.admission;
    admission
        .refused_connections
        .fetch_add(1, Ordering::Relaxed);
    Some(admission.overloaded("connections"))
}

/// Kept in a connection's data for as long as it is open.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    admission: Arc<Admission>,
    /// Accepted beyond the served limit: its requests other than the probes are refused.
    pub(crate) refused: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.admission.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a turn runs, stream or not.
#[derive(Debug)]
pub(crate) struct TurnSlot {
    admission: Arc<Admission>,
}

impl Drop for TurnSlot {
    fn drop(&mut self) {
        self.admission.turns.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let vars = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()));
        agent_config::load_from(vars).unwrap().settings
    }

    #[test]
    fn auto_limits_fit_the_descriptors_with_room_for_the_pools() {
        let settings = settings(&[
            ("DATABASE_URL", "postgres://db/agent"),
            ("REDIS_URL", "redis://cache"),
            ("WORKERS", "2"),
        ]);
        let limits = Limits::plan(&settings, 4096);
        let used = limits.connections + limits.refusal_band + limits.turns;
        assert!(used as u64 + limits.reserved <= 4096, "{limits:?}");
        assert!(
            used as u64 + limits.reserved > 4000,
            "the budget is used: {limits:?}"
        );
        // The pools with their probe connections, the fixed reserve, and per worker its runtime,
        // its rounding, a closing connection and its idle model connections.
        assert_eq!(limits.reserved, 18 + 18 + 64 + 2 * (6 + 64));
        assert_eq!(limits.turns, limits.connections / 2);
        assert!(!limits.lowered);
        let big = Limits::plan(&settings, 1 << 20);
        assert_eq!(
            (big.turns, big.connections),
            (AUTO_TURNS_CEILING, AUTO_CONNECTIONS_CEILING)
        );
    }

    #[test]
    fn configured_limits_are_kept_when_they_fit_and_lowered_when_not() {
        let fitting = settings(&[
            ("AGENT_SERVER__MAX_CONNECTIONS", "1000"),
            ("AGENT_SERVER__MAX_TURNS_IN_FLIGHT", "100"),
        ]);
        let limits = Limits::plan(&fitting, 20_000);
        assert_eq!(
            (limits.connections, limits.turns, limits.lowered),
            (1000, 100, false)
        );
        let too_many = settings(&[
            ("AGENT_SERVER__MAX_CONNECTIONS", "10000"),
            ("AGENT_SERVER__MAX_TURNS_IN_FLIGHT", "5000"),
        ]);
        let limits = Limits::plan(&too_many, 4096);
        assert!(limits.lowered);
        let used = limits.connections + limits.refusal_band + limits.turns;
        assert!(used as u64 + limits.reserved <= 4096, "{limits:?}");
        assert!(
            limits.connections > 2 * limits.turns - 10,
            "proportions kept: {limits:?}"
        );
    }

    #[test]
    fn a_turn_beyond_the_limit_is_refused_and_its_slot_given_back() {
        let limits = Limits {
            connections: 1,
            refusal_band: 16,
            turns: 2,
            reserved: 0,
            lowered: false,
            retry_after: Duration::from_secs(3),
        };
        let admission = Admission::new(limits);
        let first = admission.begin_turn().unwrap();
        let _second = admission.begin_turn().unwrap();
        let refused = admission.begin_turn().unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Overloaded);
        assert_eq!(refused.retry_after_seconds(), Some(3));
        assert_eq!(admission.figures(), (0, 2, 0, 1));
        drop(first);
        let _third = admission.begin_turn().unwrap();

        let served = admission.connection_opened();
        let beyond = admission.connection_opened();
        assert!(!served.refused && beyond.refused);
        drop((served, beyond));
        assert_eq!(admission.figures().0, 0);
    }
}
