//! The `RunStore` contract: a run's life, one active run per session, and a completed run always
//! having its turn stored (a cancelled or lost one never).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_core::{Message, SessionId, TokenUsage, Turn};
use agent_storage::{
    ConversationStore, Ended, MemoryStorage, NewRun, QueuedRun, RUN_LOST, RunCompletion, RunCursor,
    RunEnd, RunOrigin, RunStatus, RunStore, SessionLocks, StorageError, TurnRecord,
};

use crate::{contract, until};

type Stores = (
    Arc<dyn ConversationStore>,
    Arc<dyn RunStore>,
    Arc<dyn SessionLocks>,
);

async fn memory() -> Stores {
    let storage = Arc::new(MemoryStorage::new());
    (storage.clone(), storage.clone(), storage)
}

async fn postgres() -> Stores {
    let store = Arc::new(test_support::postgres_store().await);
    (
        store.clone(),
        store,
        Arc::new(test_support::redis_coordination()),
    )
}

contract!(
    [
        a_run_starts_in_progress_and_completes_with_its_turn,
        a_session_has_one_active_run_and_another_is_busy_naming_it,
        a_cancelled_run_stores_nothing_and_ends_once,
        a_run_whose_lease_expired_is_failed_as_lost_when_its_session_is_wanted,
        a_racing_cancel_and_completion_agree,
        a_run_without_a_record_is_recorded_by_its_end_or_later_in_progress,
        an_opened_session_names_its_active_run_and_settling_fails_it_only_once_lost,
        a_stateless_run_completes_with_its_usage_and_a_cancelled_one_counts_nothing,
        runs_are_listed_per_session_newest_first_in_pages,
        a_session_with_an_active_run_is_neither_deleted_nor_swept,
        queued_runs_are_claimed_once_oldest_first_with_their_input,
        the_queue_refuses_past_its_caps_and_a_busy_session,
        a_cancelled_queued_run_is_never_claimed,
        leases_are_renewed_by_their_holder_only_and_expired_ones_are_failed_as_lost,
    ];
    memory_backend => memory().await,
    postgres_backend => postgres().await,
);

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

fn session(name: &str) -> SessionId {
    SessionId::parse(&unique(name)).unwrap().owned_by("alice")
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

fn turn(text: &str) -> Turn {
    Turn {
        context_tokens: Vec::new(),
        messages: vec![
            Message::user(text),
            Message::assistant(format!("echo: {text}")),
        ],
        usage: TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
        },
    }
}

fn completing(id: &str) -> TurnRecord<'_> {
    TurnRecord {
        run: Some(RunCompletion {
            id,
            output_text: "the answer",
            origin: None,
        }),
        ..TurnRecord::default()
    }
}

const CANCEL: RunEnd<'static> = RunEnd::Cancelled {
    code: "cancelled",
    message: "cancelled by its caller",
};

async fn a_run_starts_in_progress_and_completes_with_its_turn((store, runs, _): Stores) {
    let chat = session("chat");
    let id = run_id();
    let started = runs.start_run(new_run(&id, Some(&chat))).await.unwrap();
    assert_eq!(started.status, RunStatus::InProgress);
    assert_eq!(started.session.as_ref(), Some(&chat));
    assert_eq!(started.owner, "alice");
    assert!(started.started_at.is_some() && started.finished_at.is_none());
    assert!(started.lease_expires_at.is_some());

    let (info, _) = store
        .append_turn_recording(&chat, 0, &turn("hi"), completing(&id))
        .await
        .unwrap();
    assert_eq!(info.turn_count, 1);
    let done = runs.run(&id).await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output_text.as_deref(), Some("the answer"));
    assert_eq!(done.usage.total(), 15);
    assert!(done.finished_at.is_some() && done.lease_expires_at.is_none());
    assert_eq!(done.error, None);
    assert_eq!(runs.run(&run_id()).await.unwrap(), None);
    // A finished run cannot be ended again.
    assert!(
        matches!(runs.end_run(&id, CANCEL).await.unwrap(), Ended::Already(run) if run.status == RunStatus::Completed)
    );
    assert_eq!(
        runs.end_run(&run_id(), CANCEL).await.unwrap(),
        Ended::Missing
    );
}

async fn a_session_has_one_active_run_and_another_is_busy_naming_it((_, runs, _): Stores) {
    let chat = session("busy");
    let (first, second) = (run_id(), run_id());
    runs.start_run(new_run(&first, Some(&chat))).await.unwrap();
    let busy = runs
        .start_run(new_run(&second, Some(&chat)))
        .await
        .unwrap_err();
    assert!(
        matches!(&busy, StorageError::SessionBusy { run, .. } if *run == first),
        "{busy:?}"
    );
    // Other sessions, and conversations without one, are not held by it.
    runs.start_run(new_run(&run_id(), Some(&session("other"))))
        .await
        .unwrap();
    let (free_one, free_two) = (run_id(), run_id());
    runs.start_run(new_run(&free_one, None)).await.unwrap();
    runs.start_run(new_run(&free_two, None)).await.unwrap();

    let failed = RunEnd::Failed {
        code: "model_error",
        message: "the model failed",
    };
    let Ended::Now(ended) = runs.end_run(&first, failed).await.unwrap() else {
        panic!("the run was active");
    };
    assert_eq!(ended.status, RunStatus::Failed);
    assert_eq!(ended.error.unwrap().code, "model_error");
    runs.start_run(new_run(&second, Some(&chat))).await.unwrap();
}

async fn a_cancelled_run_stores_nothing_and_ends_once((store, runs, _): Stores) {
    let chat = session("cancelled");
    let id = run_id();
    runs.start_run(new_run(&id, Some(&chat))).await.unwrap();
    let Ended::Now(cancelled) = runs.end_run(&id, CANCEL).await.unwrap() else {
        panic!("the run was active");
    };
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());

    let refused = store
        .append_turn_recording(&chat, 0, &turn("too late"), completing(&id))
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
    assert_eq!(store.session(&chat).await.unwrap(), None, "nothing stored");
    let again = runs.end_run(&id, CANCEL).await.unwrap();
    assert!(matches!(again, Ended::Already(run) if run.status == RunStatus::Cancelled));

    // On a session with turns, the cancelled run's turn leaves it as it was.
    let later = run_id();
    runs.start_run(new_run(&later, Some(&chat))).await.unwrap();
    store
        .append_turn_recording(&chat, 0, &turn("first"), completing(&later))
        .await
        .unwrap();
    let last = run_id();
    runs.start_run(new_run(&last, Some(&chat))).await.unwrap();
    runs.end_run(&last, CANCEL).await.unwrap();
    store
        .append_turn_recording(&chat, 2, &turn("second"), completing(&last))
        .await
        .unwrap_err();
    let info = store.session(&chat).await.unwrap().unwrap();
    assert_eq!((info.turn_count, info.next_sequence), (1, 2));
}

async fn a_run_whose_lease_expired_is_failed_as_lost_when_its_session_is_wanted(
    (store, runs, _): Stores,
) {
    let chat = session("lost");
    let lost = run_id();
    let short = NewRun {
        lease: Duration::from_millis(200),
        ..new_run(&lost, Some(&chat))
    };
    runs.start_run(short).await.unwrap();
    let next = run_id();
    until(Duration::from_secs(10), || async {
        runs.start_run(new_run(&next, Some(&chat))).await.is_ok()
    })
    .await;
    let failed = runs.run(&lost).await.unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.unwrap().code, RUN_LOST);
    // Its executor, if it still runs somewhere, cannot store its turn.
    let refused = store
        .append_turn_recording(&chat, 0, &turn("zombie"), completing(&lost))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        StorageError::RunEnded {
            status: RunStatus::Failed,
            ..
        }
    ));
    assert_eq!(store.session(&chat).await.unwrap(), None);
}

/// A run the store has no record of (a turn's, recorded when it ends or once it has run a while):
/// its turn's store records it completed, with its owner, session, start and usage; its end
/// records it ended; recorded later in progress, it keeps its start and holds its session.
async fn a_run_without_a_record_is_recorded_by_its_end_or_later_in_progress(
    (store, runs, _): Stores,
) {
    let started_at = SystemTime::now() - Duration::from_secs(3);
    let origin = Some(RunOrigin {
        owner: "alice",
        started_at,
    });
    let chat = session("unrecorded");
    let id = run_id();
    let record = TurnRecord {
        run: Some(RunCompletion {
            id: &id,
            output_text: "the answer",
            origin,
        }),
        ..TurnRecord::default()
    };
    store
        .append_turn_recording(&chat, 0, &turn("hi"), record)
        .await
        .unwrap();
    let done = runs.run(&id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.owner.as_str(), done.session.as_ref()),
        (RunStatus::Completed, "alice", Some(&chat))
    );
    assert_eq!(done.output_text.as_deref(), Some("the answer"));
    assert_eq!(done.usage.total(), 15);
    let since = |at: SystemTime| at.duration_since(started_at).unwrap_or_default();
    assert!(
        since(done.created_at) < Duration::from_millis(1),
        "{done:?}"
    );
    assert!(
        done.finished_at
            .is_some_and(|at| since(at) >= Duration::from_secs(2))
    );
    assert!(done.lease_expires_at.is_none() && !done.background);

    // A stale turn (the session moved on) stores nothing and records no run.
    let stale = run_id();
    let record = TurnRecord {
        run: Some(RunCompletion {
            id: &stale,
            output_text: "stale",
            origin,
        }),
        ..TurnRecord::default()
    };
    let refused = store
        .append_turn_recording(&chat, 0, &turn("stale"), record)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StorageError::Conflict { .. }),
        "{refused:?}"
    );
    assert_eq!(runs.run(&stale).await.unwrap(), None);

    // Without a session: completed with its usage counted.
    let stateless = run_id();
    let completion = RunCompletion {
        id: &stateless,
        output_text: "done",
        origin,
    };
    store
        .count_usage(
            &unique("stateless"),
            None,
            turn("x").usage,
            Some(completion),
        )
        .await
        .unwrap();
    let done = runs.run(&stateless).await.unwrap().unwrap();
    assert_eq!((done.status, done.session), (RunStatus::Completed, None));

    // Ended without a turn: recorded ended, once.
    let cancelled = run_id();
    let ended = runs
        .record_run_end(new_run(&cancelled, Some(&chat)), CANCEL)
        .await
        .unwrap();
    assert!(
        matches!(&ended, Ended::Now(run) if run.status == RunStatus::Cancelled && run.error.is_some())
    );
    let again = runs
        .record_run_end(new_run(&cancelled, Some(&chat)), CANCEL)
        .await
        .unwrap();
    assert!(matches!(again, Ended::Already(run) if run.status == RunStatus::Cancelled));

    // Recorded in progress later: kept start, leased; skipped when recorded already or when its
    // session has another active run.
    let (late, other, busy) = (run_id(), run_id(), run_id());
    let held = session("held");
    runs.start_run(new_run(&other, Some(&held))).await.unwrap();
    let late_run = NewRun {
        started_at,
        ..new_run(&late, Some(&chat))
    };
    let recorded = runs
        .record_runs(&[
            late_run,
            new_run(&id, Some(&chat)),
            new_run(&busy, Some(&held)),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, std::slice::from_ref(&late));
    let in_progress = runs.run(&late).await.unwrap().unwrap();
    assert_eq!(in_progress.status, RunStatus::InProgress);
    assert!(in_progress.lease_expires_at.is_some());
    assert!(since(in_progress.created_at) < Duration::from_millis(1));
    assert_eq!(runs.run(&busy).await.unwrap(), None);
    // Recorded, it completes as any run in progress does.
    store
        .append_turn_recording(&chat, 2, &turn("later"), completing(&late))
        .await
        .unwrap();
    assert_eq!(
        runs.run(&late).await.unwrap().unwrap().status,
        RunStatus::Completed
    );
}

/// Opening a session names its active run; settling the session for another run is busy while
/// that run's lease holds, and fails it as lost once expired.
async fn an_opened_session_names_its_active_run_and_settling_fails_it_only_once_lost(
    (store, runs, _): Stores,
) {
    let chat = session("settle");
    let opened = store.open_session(&chat, 10).await.unwrap();
    assert_eq!(opened.active_run, None);
    runs.settle_session(&chat).await.unwrap();
    let active = run_id();
    let short = NewRun {
        lease: Duration::from_millis(300),
        ..new_run(&active, Some(&chat))
    };
    runs.start_run(short).await.unwrap();
    let opened = store.open_session(&chat, 10).await.unwrap();
    assert_eq!(opened.active_run.as_deref(), Some(active.as_str()));
    let busy = runs.settle_session(&chat).await.unwrap_err();
    assert!(
        matches!(&busy, StorageError::SessionBusy { run, .. } if *run == active),
        "{busy:?}"
    );
    until(Duration::from_secs(10), || async {
        runs.settle_session(&chat).await.is_ok()
    })
    .await;
    let lost = runs.run(&active).await.unwrap().unwrap();
    assert_eq!(lost.error.unwrap().code, RUN_LOST);
    assert_eq!(
        store.open_session(&chat, 10).await.unwrap().active_run,
        None
    );
}

/// A cancel racing the store of the run's turn: either the turn is stored and the run completed
/// (the cancel finds it finished), or the run is cancelled and nothing is stored. Never both.
async fn a_racing_cancel_and_completion_agree((store, runs, _): Stores) {
    for round in 0..20 {
        let chat = session(&format!("race{round}"));
        let id = run_id();
        runs.start_run(new_run(&id, Some(&chat))).await.unwrap();
        let the_turn = turn("race");
        let (stored, cancelled) = tokio::join!(
            store.append_turn_recording(&chat, 0, &the_turn, completing(&id)),
            runs.end_run(&id, CANCEL),
        );
        let run = runs.run(&id).await.unwrap().unwrap();
        let session = store.session(&chat).await.unwrap();
        match (stored, cancelled.unwrap()) {
            (Ok(_), Ended::Already(_)) => {
                assert_eq!(run.status, RunStatus::Completed);
                assert_eq!(session.unwrap().turn_count, 1);
            }
            (Err(StorageError::RunEnded { .. }), Ended::Now(_)) => {
                assert_eq!(run.status, RunStatus::Cancelled);
                assert_eq!(session, None);
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

async fn a_stateless_run_completes_with_its_usage_and_a_cancelled_one_counts_nothing(
    (store, runs, _): Stores,
) {
    let caller = unique("stateless");
    let tokens = TokenUsage {
        prompt_tokens: 7,
        completion_tokens: 3,
    };
    let id = run_id();
    runs.start_run(new_run(&id, None)).await.unwrap();
    let completion = RunCompletion {
        id: &id,
        output_text: "done",
        origin: None,
    };
    store
        .count_usage(&caller, None, tokens, Some(completion))
        .await
        .unwrap();
    let done = runs.run(&id).await.unwrap().unwrap();
    assert_eq!((done.status, done.usage), (RunStatus::Completed, tokens));

    let cancelled = run_id();
    runs.start_run(new_run(&cancelled, None)).await.unwrap();
    runs.end_run(&cancelled, CANCEL).await.unwrap();
    let completion = RunCompletion {
        id: &cancelled,
        output_text: "late",
        origin: None,
    };
    let refused = store
        .count_usage(&caller, None, tokens, Some(completion))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StorageError::RunEnded { .. }),
        "{refused:?}"
    );
    let today = chrono::Utc::now().date_naive();
    let usage = store.usage(Some(&caller), today, today).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].turns, usage[0].usage), (1, tokens));
}

async fn runs_are_listed_per_session_newest_first_in_pages((store, runs, _): Stores) {
    let chat = session("listed");
    let mut ids = Vec::new();
    for sequence in 0..5u64 {
        let id = run_id();
        runs.start_run(new_run(&id, Some(&chat))).await.unwrap();
        store
            .append_turn_recording(&chat, sequence * 2, &turn("next"), completing(&id))
            .await
            .unwrap();
        ids.push(id);
        // Distinct creation times keep the expected order independent of the ids' tiebreak.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    runs.start_run(new_run(&run_id(), Some(&session("elsewhere"))))
        .await
        .unwrap();
    ids.reverse();
    let first = runs.session_runs(&chat, None, 3).await.unwrap();
    let listed: Vec<&str> = first.iter().map(|run| run.id.as_str()).collect();
    assert_eq!(listed, ids[..3]);
    let last = first.last().unwrap();
    let cursor = RunCursor {
        created_at: last.created_at,
        id: last.id.clone(),
    };
    let rest = runs.session_runs(&chat, Some(&cursor), 3).await.unwrap();
    let listed: Vec<&str> = rest.iter().map(|run| run.id.as_str()).collect();
    assert_eq!(listed, ids[3..]);
}

async fn a_session_with_an_active_run_is_neither_deleted_nor_swept((store, runs, locks): Stores) {
    let chat = session("held");
    let first = run_id();
    runs.start_run(new_run(&first, Some(&chat))).await.unwrap();
    store
        .append_turn_recording(&chat, 0, &turn("one"), completing(&first))
        .await
        .unwrap();
    // A failed first turn of a session that never came to exist leaves an orphan run.
    let never = session("never");
    let orphan = run_id();
    runs.start_run(new_run(&orphan, Some(&never)))
        .await
        .unwrap();
    let failed = RunEnd::Failed {
        code: "model_error",
        message: "the model failed",
    };
    runs.end_run(&orphan, failed).await.unwrap();
    let active = run_id();
    runs.start_run(new_run(&active, Some(&chat))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = std::time::SystemTime::now();

    let refused = store.delete_session(&chat).await.unwrap_err();
    assert!(
        matches!(&refused, StorageError::SessionBusy { run, .. } if *run == active),
        "{refused:?}"
    );
    store
        .sweep_idle(cutoff, 100, &locks)
        .await
        .unwrap()
        .unwrap();
    assert!(store.session(&chat).await.unwrap().is_some(), "not swept");
    assert!(runs.run(&first).await.unwrap().is_some());
    assert_eq!(
        runs.run(&orphan).await.unwrap(),
        None,
        "the orphan is swept"
    );

    runs.end_run(&active, CANCEL).await.unwrap();
    assert!(store.delete_session(&chat).await.unwrap());
    for id in [&first, &active] {
        assert_eq!(
            runs.run(id).await.unwrap(),
            None,
            "deleted with its session"
        );
    }
    assert!(runs.session_runs(&chat, None, 10).await.unwrap().is_empty());
}

fn queued<'a>(id: &'a str, owner: &'a str, session: Option<&'a SessionId>) -> QueuedRun<'a> {
    QueuedRun {
        id,
        owner,
        session,
        input: r#"{"message":"later"}"#,
        max_per_owner: 2,
        max_total: 3,
    }
}

async fn queued_runs_are_claimed_once_oldest_first_with_their_input((_, runs, _): Stores) {
    let (first, second) = (run_id(), run_id());
    let chat = session("queued");
    let record = runs
        .enqueue_run(queued(&first, "alice", Some(&chat)))
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Queued);
    assert!(record.background && record.started_at.is_none());
    tokio::time::sleep(Duration::from_millis(5)).await;
    runs.enqueue_run(queued(&second, "bob", None))
        .await
        .unwrap();

    // Two replicas claim at once: each run is taken once, the oldest first.
    let lease = Duration::from_secs(30);
    let (a, b) = tokio::join!(
        runs.claim_run("replica-1", lease),
        runs.claim_run("replica-2", lease)
    );
    let mut claimed: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    claimed.sort_by_key(|claimed| claimed.record.created_at);
    let ids: Vec<&str> = claimed.iter().map(|c| c.record.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    for claimed in &claimed {
        assert_eq!(claimed.record.status, RunStatus::InProgress);
        assert!(claimed.record.started_at.is_some() && claimed.record.lease_expires_at.is_some());
        let input: serde_json::Value = serde_json::from_str(&claimed.input).unwrap();
        assert_eq!(input["message"], "later");
    }
    assert_eq!(runs.claim_run("replica-1", lease).await.unwrap(), None);
    // The input stays with the run (a background response shows its request from it).
    let kept = runs.run_input(&first).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&kept).unwrap()["message"],
        "later"
    );
    assert_eq!(runs.run_input(&run_id()).await.unwrap(), None);
    // The claimed run still holds its session.
    let busy = runs.start_run(new_run(&run_id(), Some(&chat))).await;
    assert!(matches!(busy, Err(StorageError::SessionBusy { run, .. }) if run == first));
}

/// `refused` is the queue's refusal: by its owner's cap (`per_owner`) or the total's, at `queued`.
fn assert_full(
    refused: &Result<agent_storage::RunRecord, StorageError>,
    per_owner: bool,
    queued: usize,
) {
    let expected = (per_owner, queued);
    assert!(
        matches!(refused, Err(StorageError::QueueFull { per_owner, queued }) if (*per_owner, *queued) == expected),
        "{refused:?}"
    );
}

async fn the_queue_refuses_past_its_caps_and_a_busy_session((_, runs, _): Stores) {
    let chat = session("capped");
    let held = run_id();
    runs.enqueue_run(queued(&held, "alice", Some(&chat)))
        .await
        .unwrap();
    let busy = runs
        .enqueue_run(queued(&run_id(), "alice", Some(&chat)))
        .await;
    assert!(matches!(busy, Err(StorageError::SessionBusy { run, .. }) if run == held));
    runs.enqueue_run(queued(&run_id(), "alice", None))
        .await
        .unwrap();
    let mine = runs.enqueue_run(queued(&run_id(), "alice", None)).await;
    assert_full(&mine, true, 2);
    let bobs = run_id();
    runs.enqueue_run(queued(&bobs, "bob", None)).await.unwrap();
    let full = runs.enqueue_run(queued(&run_id(), "carol", None)).await;
    assert_full(&full, false, 3);
    // A claimed run leaves the queue: there is room again.
    runs.claim_run("replica-1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    runs.enqueue_run(queued(&run_id(), "carol", None))
        .await
        .unwrap();
    // So does a cancelled one.
    let full = runs.enqueue_run(queued(&run_id(), "dave", None)).await;
    assert_full(&full, false, 3);
    runs.end_run(&bobs, CANCEL).await.unwrap();
    runs.enqueue_run(queued(&run_id(), "dave", None))
        .await
        .unwrap();
}

async fn a_cancelled_queued_run_is_never_claimed((_, runs, _): Stores) {
    let id = run_id();
    runs.enqueue_run(queued(&id, "alice", None)).await.unwrap();
    let ended = runs
        .end_run(
            &id,
            RunEnd::Cancelled {
                code: "run_cancelled",
                message: "cancelled",
            },
        )
        .await
        .unwrap();
    assert!(matches!(ended, Ended::Now(record) if record.status == RunStatus::Cancelled));
    assert_eq!(
        runs.claim_run("replica-1", Duration::from_secs(30))
            .await
            .unwrap(),
        None
    );
}

async fn leases_are_renewed_by_their_holder_only_and_expired_ones_are_failed_as_lost(
    (_, runs, _): Stores,
) {
    let (mine, theirs) = (run_id(), run_id());
    let short = Duration::from_millis(200);
    let mut run = new_run(&mine, None);
    run.lease = short;
    runs.start_run(run).await.unwrap();
    let mut run = new_run(&theirs, None);
    run.holder = "replica-2";
    run.lease = short;
    runs.start_run(run).await.unwrap();

    let both = [mine.clone(), theirs.clone()];
    let renewed = runs
        .renew_leases("replica-1", &both, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(renewed, std::slice::from_ref(&mine));
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Only the run whose lease expired more than the grace ago, and never the sweeper's own.
    let grace = Duration::from_millis(100);
    assert!(
        runs.fail_lost_runs("replica-2", grace, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let lost = runs.fail_lost_runs("replica-1", grace, 10).await.unwrap();
    let lost: Vec<(&str, RunStatus)> = lost.iter().map(|r| (r.id.as_str(), r.status)).collect();
    assert_eq!(lost, [(theirs.as_str(), RunStatus::Failed)]);
    let record = runs.run(&theirs).await.unwrap().unwrap();
    assert_eq!(record.error.unwrap().code, RUN_LOST);
    assert!(
        runs.fail_lost_runs("replica-1", grace, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A lost run's lease is not renewed: its holder learns it ended elsewhere.
    let renewed = runs
        .renew_leases("replica-2", &both, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(renewed.is_empty());
    assert_eq!(
        runs.run(&mine).await.unwrap().unwrap().status,
        RunStatus::InProgress
    );
}
