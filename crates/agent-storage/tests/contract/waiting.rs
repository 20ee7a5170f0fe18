//! The contract of runs that wait for the client: a run stops (recorded if it had no record),
//! keeps its session busy while it holds no lease, is answered over the version it was read at
//! (so of two answers at once one is written, and a stale one never), resumes once, and ends by
//! its turn, a cancel or its expiry, which frees its session and drops its pending state. Its
//! start of waiting and its end write webhook events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_core::{Message, SessionId, TokenUsage, Turn};
use agent_storage::{
    ACTION_EXPIRED, Answered, ConversationStore, Ended, MemoryStorage, NewRun, RunAnswer,
    RunCompletion, RunEnd, RunRecord, RunStatus, RunStore, StorageError, TurnRecord, WebhookOutbox,
};

use crate::contract;

type Stores = (
    Arc<dyn ConversationStore>,
    Arc<dyn RunStore>,
    Arc<dyn WebhookOutbox>,
);

async fn memory() -> Stores {
    let storage = Arc::new(MemoryStorage::new());
    (storage.clone(), storage.clone(), storage)
}

async fn postgres() -> Stores {
    let store = Arc::new(test_support::postgres_store().await);
    (store.clone(), store.clone(), store)
}

contract!(
    [
        a_waiting_run_keeps_its_session_busy_and_resumes_once,
        a_run_without_a_record_is_recorded_waiting_unless_it_cannot_be,
        a_waiting_run_is_cancelled_or_expires_and_frees_its_session,
        a_run_that_starts_waiting_and_ends_writes_webhook_events,
    ];
    memory_backend => memory().await,
    postgres_backend => postgres().await,
);

fn session(name: &str) -> SessionId {
    let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    SessionId::parse(&name).unwrap().owned_by("alice")
}

fn run_id() -> String {
    format!("run_{}", uuid::Uuid::new_v4().simple())
}

fn new_run<'a>(id: &'a str, session: Option<&'a SessionId>) -> NewRun<'a> {
    NewRun {
        id,
        owner: "alice",
        session,
        background: false,
        holder: "replica-1",
        lease: Duration::from_secs(60),
        started_at: SystemTime::now(),
    }
}

fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

const PENDING: &str = r#"{"calls":["call_1","call_2"],"answers":{}}"#;
const HALF: &str = r#"{"calls":["call_1","call_2"],"answers":{"call_1":"approve"}}"#;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// The run's action's version (it waits).
fn version(record: &RunRecord) -> u64 {
    record
        .action
        .as_ref()
        .expect("a waiting run has its action")
        .version
}

fn answer<'a>(id: &'a str, version: u64, resume: bool) -> RunAnswer<'a> {
    RunAnswer {
        id,
        version,
        pending: HALF,
        resume: resume.then_some(("replica-2", Duration::from_secs(60))),
    }
}

async fn a_waiting_run_keeps_its_session_busy_and_resumes_once((store, runs, _): Stores) {
    let chat = session("chat");
    let id = run_id();
    runs.start_run(new_run(&id, Some(&chat))).await.unwrap();
    let waiting = runs
        .suspend_run(new_run(&id, Some(&chat)), PENDING, in_an_hour())
        .await
        .unwrap();
    assert_eq!(waiting.status, RunStatus::RequiresAction);
    assert!(waiting.background, "a run that waits outlives its request");
    assert_eq!(
        waiting.lease_expires_at, None,
        "a waiting run holds no lease"
    );
    let action = waiting.action.clone().unwrap();
    assert_eq!(json(&action.pending), json(PENDING));
    assert_eq!(runs.run(&id).await.unwrap().unwrap(), waiting);

    // Its session is busy, naming it, for every way in.
    let busy = |error: StorageError| {
        assert!(
            matches!(&error, StorageError::SessionBusy { run, .. } if *run == id),
            "{error:?}"
        );
    };
    let other = run_id();
    busy(
        runs.start_run(new_run(&other, Some(&chat)))
            .await
            .unwrap_err(),
    );
    busy(runs.settle_session(&chat).await.unwrap_err());
    busy(store.delete_session(&chat).await.unwrap_err());
    let opened = store.open_session(&chat, 10).await.unwrap();
    assert_eq!(opened.active_run.as_deref(), Some(id.as_str()));
    let listed = runs.session_runs(&chat, None, 10).await.unwrap();
    assert_eq!(listed, vec![waiting.clone()]);

    // Answered in part: written over its version, under a new one; a stale answer is not.
    let v1 = version(&waiting);
    let Answered::Now(half) = runs.answer_run(answer(&id, v1, false)).await.unwrap() else {
        panic!("an answer over the current version is written");
    };
    assert_eq!(half.status, RunStatus::RequiresAction);
    assert_eq!(json(&half.action.as_ref().unwrap().pending), json(HALF));
    let v2 = version(&half);
    assert_ne!(v2, v1);
    assert!(matches!(
        runs.answer_run(answer(&id, v1, true)).await.unwrap(),
        Answered::Moved(run) if run.status == RunStatus::RequiresAction
    ));

    // Two resumes at once from the same version: one is written.
    let (first, second) = tokio::join!(
        runs.answer_run(answer(&id, v2, true)),
        runs.answer_run(answer(&id, v2, true))
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    let resumed: Vec<&RunRecord> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Answered::Now(run) => Some(run),
            _ => None,
        })
        .collect();
    assert_eq!(resumed.len(), 1, "{outcomes:?}");
    assert_eq!(resumed[0].status, RunStatus::InProgress);
    assert!(
        resumed[0].lease_expires_at.is_some(),
        "resumed, it is leased"
    );
    assert_eq!(resumed[0].action, None);
    assert!(
        outcomes
            .iter()
            .any(|outcome| matches!(outcome, Answered::Moved(_))),
        "{outcomes:?}"
    );
    assert!(matches!(
        runs.answer_run(answer("run_nobody", 1, true))
            .await
            .unwrap(),
        Answered::Missing
    ));

    // It completes with its turn, which frees the session.
    let turn = Turn {
        context_tokens: Vec::new(),
        messages: vec![Message::user("send it"), Message::assistant("sent")],
        usage: TokenUsage {
            prompt_tokens: 3,
            completion_tokens: 2,
        },
    };
    let record = TurnRecord {
        run: Some(RunCompletion {
            id: &id,
            output_text: "sent",
            origin: None,
        }),
        ..TurnRecord::default()
    };
    store
        .append_turn_recording(&chat, 0, &turn, record)
        .await
        .unwrap();
    let done = runs.run(&id).await.unwrap().unwrap();
    assert_eq!((done.status, done.action), (RunStatus::Completed, None));
    runs.start_run(new_run(&other, Some(&chat))).await.unwrap();
}

async fn a_run_without_a_record_is_recorded_waiting_unless_it_cannot_be((_, runs, _): Stores) {
    // Never recorded (a foreground run is recorded when it ends): recorded waiting.
    let chat = session("chat");
    let id = run_id();
    let waiting = runs
        .suspend_run(new_run(&id, Some(&chat)), PENDING, in_an_hour())
        .await
        .unwrap();
    assert_eq!(
        (waiting.status, waiting.session.as_ref()),
        (RunStatus::RequiresAction, Some(&chat))
    );
    assert_eq!(runs.run(&id).await.unwrap().unwrap(), waiting);

    // Its session has another active run: refused, naming it, and nothing recorded.
    let late = run_id();
    let refused = runs
        .suspend_run(new_run(&late, Some(&chat)), PENDING, in_an_hour())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StorageError::SessionBusy { run, .. } if *run == id),
        "{refused:?}"
    );
    assert_eq!(runs.run(&late).await.unwrap(), None);

    // An ended run does not wait.
    let ended = run_id();
    runs.start_run(new_run(&ended, None)).await.unwrap();
    runs.end_run(&ended, CANCEL).await.unwrap();
    let refused = runs
        .suspend_run(new_run(&ended, None), PENDING, in_an_hour())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StorageError::RunEnded {
                status: RunStatus::Cancelled,
                ..
            }
        ),
        "{refused:?}"
    );
}

const CANCEL: RunEnd<'static> = RunEnd::Cancelled {
    code: "run_cancelled",
    message: "cancelled by its caller",
};

async fn a_waiting_run_is_cancelled_or_expires_and_frees_its_session((_, runs, _): Stores) {
    // Cancelled while waiting: ended once, its answer no longer written.
    let chat = session("chat");
    let id = run_id();
    let waiting = runs
        .suspend_run(new_run(&id, Some(&chat)), PENDING, in_an_hour())
        .await
        .unwrap();
    let Ended::Now(cancelled) = runs.end_run(&id, CANCEL).await.unwrap() else {
        panic!("a waiting run is active: cancelling ends it");
    };
    assert_eq!(
        (cancelled.status, &cancelled.action),
        (RunStatus::Cancelled, &None)
    );
    assert!(matches!(
        runs.answer_run(answer(&id, version(&waiting), true)).await.unwrap(),
        Answered::Moved(run) if run.status == RunStatus::Cancelled
    ));
    runs.start_run(new_run(&run_id(), Some(&chat)))
        .await
        .unwrap();

    // Expired: failed as `action_expired`; one still within its time waits on.
    let (stale, fresh) = (session("stale"), session("fresh"));
    let (old, young) = (run_id(), run_id());
    let past = SystemTime::now() - Duration::from_secs(1);
    runs.suspend_run(new_run(&old, Some(&stale)), PENDING, past)
        .await
        .unwrap();
    runs.suspend_run(new_run(&young, Some(&fresh)), PENDING, in_an_hour())
        .await
        .unwrap();
    let expired = runs.expire_actions(10).await.unwrap();
    let ids: Vec<&str> = expired.iter().map(|run| run.id.as_str()).collect();
    assert_eq!(ids, [old.as_str()]);
    let failed = runs.run(&old).await.unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.unwrap().code, ACTION_EXPIRED);
    assert_eq!(failed.action, None);
    assert!(runs.expire_actions(10).await.unwrap().is_empty(), "once");
    assert_eq!(
        runs.run(&young).await.unwrap().unwrap().status,
        RunStatus::RequiresAction
    );
    runs.start_run(new_run(&run_id(), Some(&stale)))
        .await
        .unwrap();
}

async fn a_run_that_starts_waiting_and_ends_writes_webhook_events((_, runs, outbox): Stores) {
    let id = run_id();
    runs.start_run(new_run(&id, None)).await.unwrap();
    runs.suspend_run(new_run(&id, None), PENDING, in_an_hour())
        .await
        .unwrap();
    let hold = Duration::from_secs(60);
    let events = outbox.due_webhook_events(10, hold).await.unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|event| (event.run_id.as_str(), event.kind.as_str()))
        .collect();
    assert_eq!(kinds, [(id.as_str(), "response.requires_action")]);
    for event in &events {
        outbox
            .webhook_attempted(&event.id, &[], None)
            .await
            .unwrap();
    }
    runs.end_run(&id, CANCEL).await.unwrap();
    let events = outbox.due_webhook_events(10, hold).await.unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|event| (event.run_id.as_str(), event.kind.as_str()))
        .collect();
    assert_eq!(kinds, [(id.as_str(), "response.cancelled")]);
}
