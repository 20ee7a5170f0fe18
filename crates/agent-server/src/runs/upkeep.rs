//! What keeps runs from getting stuck, one task per process: it records the runs this process
//! executes that have run for [`RECORD_AFTER`] without a record (every second, all in one
//! statement, in progress and leased), renews the leases of the recorded ones (checked every
//! quarter lease, renewed once half is left; a run no longer held was ended elsewhere,
//! cancelled on another replica or failed as lost, and is stopped here), fails the runs whose
//! executor is gone (lease expired more than one lease ago: every few seconds, on every
//! replica, each run once), and records again the run ends the store missed while it was
//! unavailable.
//!
//! The bound: a dead replica's runs are failed as `run_lost` within two leases plus a sweep
//! period (10 s + 10 s + 5 s with the defaults), and at once when their session is wanted after
//! one lease. The grace of one lease keeps a live run whose renewals failed for a while (its
//! store was down) from being failed by another replica as soon as the store is back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agent_storage::{NewRun, RunStore};
use metrics::Counter;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::RunRegistry;
use super::live::{CancelReason, RECORD_AFTER, Recording};

/// How often the task wakes (the recording of missed ends).
const TICK: Duration = Duration::from_secs(1);
/// How often lost runs are looked for (±20 %, so replicas drift apart).
const SWEEP: Duration = Duration::from_secs(5);
/// Lost runs failed per sweep at most.
const SWEEP_BATCH: usize = 100;
/// Runs recorded per tick, and leases renewed per statement, at most.
const BATCH: usize = 256;

/// The upkeep's task (see the module doc). Runs until aborted.
pub(crate) fn spawn(
    registry: Arc<RunRegistry>,
    store: Arc<dyn RunStore>,
    lease: Duration,
    lost: Counter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let renew_every = lease / 4;
        let mut next_renewal = Instant::now() + renew_every;
        let mut next_sweep = Instant::now() + jittered(SWEEP);
        let mut every = tokio::time::interval(TICK.min(renew_every));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            registry.record_all_missed(store.as_ref()).await;
            record(&registry, store.as_ref(), lease).await;
            let now = Instant::now();
            if now >= next_renewal {
                next_renewal = now + renew_every;
                renew(&registry, store.as_ref(), lease).await;
            }
            if now >= next_sweep {
                next_sweep = now + jittered(SWEEP);
                sweep(&registry, store.as_ref(), lease, &lost).await;
            }
        }
    })
}

fn jittered(period: Duration) -> Duration {
    period.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Records the runs that have run for [`RECORD_AFTER`] without a record, oldest first, at most
/// [`BATCH`] a tick: under a burst of long turns the recording lags (they are recorded when they
/// end at the latest) rather than one statement writing thousands of rows. One whose turn is being
/// stored or ended meanwhile is left to that (it is recorded by it).
async fn record(registry: &RunRegistry, store: &dyn RunStore, lease: Duration) {
    let mut due = registry.unrecorded_since(RECORD_AFTER);
    due.sort_unstable_by_key(|run| run.started_at);
    let recordings: Vec<Recording<'_>> = due
        .iter()
        .filter_map(|run| run.try_recording())
        .filter(|recording| !recording.is_recorded())
        .take(BATCH)
        .collect();
    if recordings.is_empty() {
        return;
    }
    let runs: Vec<NewRun<'_>> = recordings
        .iter()
        .map(|recording| recording.run().new_run(registry.holder(), lease))
        .collect();
    match store.record_runs(&runs).await {
        Ok(recorded) => {
            let recorded: HashSet<String> = recorded.into_iter().collect();
            for recording in &recordings {
                if recorded.contains(&recording.run().id) {
                    recording.mark();
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, runs = runs.len(), "recording runs in progress failed; retrying");
        }
    }
}

/// Renews this process's leases, [`BATCH`] runs a statement (each statement locks its rows until
/// it commits, and a turn storing its run waits for that); stops the runs that were ended
/// elsewhere.
async fn renew(registry: &RunRegistry, store: &dyn RunStore, lease: Duration) {
    for running in registry.recorded_ids().chunks(BATCH) {
        match store.renew_leases(registry.holder(), running, lease).await {
            Ok(renewed) => {
                let renewed: HashSet<String> = renewed.into_iter().collect();
                for id in running.iter().filter(|id| !renewed.contains(*id)) {
                    // Ended in the store by someone else: nothing of it may be stored now.
                    if registry.cancel(id, CancelReason::Requested) {
                        tracing::info!(run = %id, "a run ended elsewhere was stopped here");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, runs = running.len(), "renewing run leases failed; retrying");
                return;
            }
        }
    }
}

/// Fails the runs whose executor is gone, and those that waited for the client too long.
async fn sweep(registry: &RunRegistry, store: &dyn RunStore, lease: Duration, lost: &Counter) {
    match store.expire_actions(SWEEP_BATCH).await {
        Ok(expired) if !expired.is_empty() => {
            let ids: Vec<&str> = expired.iter().map(|run| run.id.as_str()).collect();
            tracing::info!(runs = ?ids, "failed runs whose wait for the client expired");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "looking for expired waiting runs failed; retrying"),
    }
    match store
        .fail_lost_runs(registry.holder(), lease, SWEEP_BATCH)
        .await
    {
        Ok(failed) if !failed.is_empty() => {
            lost.increment(failed.len() as u64);
            let ids: Vec<&str> = failed.iter().map(|run| run.id.as_str()).collect();
            tracing::warn!(runs = ?ids, "failed runs whose executor is gone as run_lost");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "looking for lost runs failed; retrying"),
    }
}
