//! A run's events as a reader sees them, wherever it runs: from its [`LiveRun`] when this process
//! executes it, else from the shared event log and, once the run has ended, its record. Numbered
//! as every run's stream is: 0 is the `run` event, then its steps from 1, then one terminal
//! event (`done` or `error`), so a reader resuming after event N (`Last-Event-ID`) on any
//! replica gets exactly the events after N.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_storage::{EventLog, RunRecord, RunStatus, RunStore};
use async_stream::stream;
use futures_util::Stream;

use super::live::{END_MARK, LiveEvent, LiveRun, StepEvent};
use super::waiting::open_calls_of;
use crate::error::{ApiError, ErrorCode};
use crate::turn::Finished;

/// One event of a run and its number.
#[derive(Debug, Clone)]
pub(crate) struct Numbered {
    pub(crate) seq: u64,
    pub(crate) event: LiveEvent,
}

/// How often a reader on another replica looks for new events.
const POLL: Duration = Duration::from_millis(100);
/// Events read from the log per round trip.
const BATCH: usize = 256;
/// More than any run's log holds (`runs.max_events` is at most a million).
const WHOLE_LOG: usize = 1_000_000;

/// The events of `run` numbered after `after` (all but the `run` event when None: the caller
/// writes that one), ending with its terminal event. `live` is the run when this process executes
/// it.
pub(crate) fn events(
    run: RunRecord,
    live: Option<Arc<LiveRun>>,
    log: Arc<dyn EventLog>,
    runs: Arc<dyn RunStore>,
    after: Option<u64>,
) -> impl Stream<Item = Numbered> {
    let after = after.unwrap_or(0);
    stream! {
        if let Some(live) = live {
            let mut watcher = live.watch();
            let mut seq = 0;
            loop {
                let events = watcher.next().await;
                if events.is_empty() {
                    return;
                }
                for event in events {
                    seq += 1;
                    let terminal = !matches!(event, LiveEvent::Step(_));
                    if seq > after {
                        yield Numbered { seq, event };
                    }
                    if terminal {
                        return;
                    }
                }
            }
        }
        // Another replica runs it (or ran it): its steps from the log, its end from its record.
        // From event `after` itself: it may be the end mark, which says nothing is left.
        let mut last = after.saturating_sub(1);
        let mut end: Option<u64> = None;
        let mut record = run;
        loop {
            // A waiting run's events end with what it waits for (an answer resumes it apart).
            let ended = !record.status.is_active() || record.status == RunStatus::RequiresAction;
            loop {
                let batch = match log.read(&record.id, Some(last), BATCH).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::warn!(run = %record.id, %error, "reading a run's event log failed");
                        Vec::new()
                    }
                };
                let full = batch.len() == BATCH;
                for logged in batch {
                    last = logged.seq;
                    if logged.data == END_MARK {
                        end = Some(logged.seq);
                        continue;
                    }
                    if logged.seq <= after {
                        continue;
                    }
                    match serde_json::from_str::<StepEvent>(&logged.data) {
                        Ok(step) => yield Numbered { seq: logged.seq, event: LiveEvent::Step(step) },
                        Err(error) => tracing::warn!(run = %record.id, %error, "an unreadable event in a run's log"),
                    }
                }
                if !full {
                    break;
                }
            }
            if ended {
                // A run that logged no step ends with event 1.
                let seq = match end {
                    Some(seq) => seq,
                    None => match log.read(&record.id, None, WHOLE_LOG).await {
                        Ok(logged) => match logged.last() {
                            // Nothing logged (a foreground run's steps stay with its replica):
                            // its end follows whatever the reader saw.
                            None => after + 1,
                            Some(mark) if mark.data == END_MARK => mark.seq,
                            // Steps but no end mark: the log lost its end; the next number is it.
                            Some(step) => step.seq + 1,
                        },
                        Err(_) => last + 1,
                    },
                };
                if seq > after {
                    yield Numbered { seq, event: terminal(&record) };
                }
                return;
            }
            tokio::time::sleep(POLL).await;
            match runs.run(&record.id).await {
                Ok(Some(now)) => record = now,
                Ok(None) => return,
                Err(error) => tracing::warn!(run = %record.id, %error, "reading a run failed; retrying"),
            }
        }
    }
}

/// Whether the events of `run` have expired (it ended longer than `retention` ago).
pub(crate) fn expired(run: &RunRecord, retention: Duration) -> bool {
    run.finished_at
        .and_then(|finished| SystemTime::now().duration_since(finished).ok())
        .is_some_and(|since| since > retention)
}

/// The terminal event of an ended (or waiting) run, from its record: a waiting run's is the
/// action it asks for.
fn terminal(run: &RunRecord) -> LiveEvent {
    match (run.status, &run.error) {
        (RunStatus::Completed | RunStatus::RequiresAction, _) => LiveEvent::Done(Finished {
            id: uuid::Uuid::nil(),
            created: run
                .finished_at
                .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_secs()),
            text: run.output_text.clone().unwrap_or_default(),
            session: run
                .session
                .as_ref()
                .map(|session| session.local().to_owned()),
            usage: run.usage,
            agent: None,
            model: None,
            context: None,
            run_id: run.id.clone(),
            waiting: run
                .action
                .as_ref()
                .map(|action| open_calls_of(&action.pending))
                .unwrap_or_default(),
        }),
        (_, error) => {
            let (code, message) = error.as_ref().map_or(
                (ErrorCode::InternalError, "the run ended".to_owned()),
                |error| {
                    let code =
                        serde_json::from_value(serde_json::Value::String(error.code.clone()))
                            .unwrap_or(ErrorCode::InternalError);
                    (code, error.message.clone())
                },
            );
            LiveEvent::Failed(Arc::new(ApiError::Reported {
                status: actix_web::http::StatusCode::CONFLICT,
                code,
                message,
                retry_after: None,
            }))
        }
    }
}
