//! The `WebhookOutbox` contract: a background run's terminal state writes its event with it (a
//! foreground run's writes none), events are taken once while held, and each attempt is kept.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_storage::{
    MemoryStorage, NewRun, QueuedRun, RunEnd, RunStore, WebhookEvent, WebhookOutbox,
};

use crate::contract;

type Stores = (Arc<dyn RunStore>, Arc<dyn WebhookOutbox>);

async fn memory() -> Stores {
    let storage = Arc::new(MemoryStorage::new());
    (storage.clone(), storage)
}

async fn postgres() -> Stores {
    let store = Arc::new(test_support::postgres_store().await);
    (store.clone(), store)
}

contract!(
    [
        a_background_runs_end_writes_its_event_and_a_foreground_runs_none,
        events_are_held_while_taken_and_retried_or_finished_as_told,
    ];
    memory_backend => memory().await,
    postgres_backend => postgres().await,
);

fn run_id() -> String {
    format!("run_{}", uuid::Uuid::new_v4().simple())
}

fn queued<'a>(id: &'a str, input: &'a str) -> QueuedRun<'a> {
    QueuedRun {
        id,
        owner: "alice",
        session: None,
        input,
        max_per_owner: 100,
        max_total: 100,
    }
}

const FAILED: RunEnd<'static> = RunEnd::Failed {
    code: "model_unavailable",
    message: "the model failed",
};

const HOLD: Duration = Duration::from_secs(60);

async fn due(outbox: &Arc<dyn WebhookOutbox>) -> Vec<WebhookEvent> {
    outbox.due_webhook_events(10, HOLD).await.unwrap()
}

async fn a_background_runs_end_writes_its_event_and_a_foreground_runs_none((runs, outbox): Stores) {
    // A foreground run ends: no event.
    let foreground = run_id();
    runs.start_run(NewRun {
        id: &foreground,
        owner: "alice",
        session: None,
        background: false,
        holder: "replica-1",
        lease: Duration::from_secs(30),
        started_at: std::time::SystemTime::now(),
    })
    .await
    .unwrap();
    runs.end_run(&foreground, FAILED).await.unwrap();
    assert!(due(&outbox).await.is_empty());

    // A background run (cancelled while queued) and a background response (failed).
    let plain = run_id();
    runs.enqueue_run(queued(&plain, r#"{"message":"m"}"#))
        .await
        .unwrap();
    runs.end_run(
        &plain,
        RunEnd::Cancelled {
            code: "run_cancelled",
            message: "cancelled",
        },
    )
    .await
    .unwrap();
    let response = run_id();
    let input = r#"{"message":"m","response":{"id":"resp_x","created_at":1,"parameters":{}}}"#;
    runs.enqueue_run(queued(&response, input)).await.unwrap();
    runs.claim_run("replica-1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    runs.end_run(&response, FAILED).await.unwrap();
    // Ending again writes nothing more.
    runs.end_run(&response, FAILED).await.unwrap();

    let mut events = due(&outbox).await;
    events.sort_by_key(|event| event.kind.clone());
    let seen: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|event| {
            (
                event.kind.as_str(),
                event.run_id.as_str(),
                event.subject.as_str(),
                event.owner.as_str(),
            )
        })
        .collect();
    let subject = format!("resp_{}", &response["run_".len()..]);
    assert_eq!(
        seen,
        [
            (
                "response.cancelled",
                plain.as_str(),
                plain.as_str(),
                "alice"
            ),
            (
                "response.failed",
                response.as_str(),
                subject.as_str(),
                "alice"
            ),
        ]
    );
    for event in &events {
        assert!(
            event.id.starts_with("evt_") && event.id.len() == 36,
            "{}",
            event.id
        );
        assert_eq!((event.attempts, event.delivered_to.len()), (0, 0));
    }
}

async fn events_are_held_while_taken_and_retried_or_finished_as_told((runs, outbox): Stores) {
    let id = run_id();
    runs.enqueue_run(queued(&id, r#"{"message":"m"}"#))
        .await
        .unwrap();
    runs.end_run(&id, FAILED).await.unwrap();
    let taken = due(&outbox).await;
    assert_eq!(taken.len(), 1);
    // Held: another sender does not take it.
    assert!(due(&outbox).await.is_empty());

    let delivered = vec!["http://a.example/hook".to_owned()];
    outbox
        .webhook_attempted(&taken[0].id, &delivered, Some(Duration::ZERO))
        .await
        .unwrap();
    let again = due(&outbox).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].attempts, &again[0].delivered_to), (1, &delivered));
    assert_eq!(again[0].id, taken[0].id);

    outbox
        .webhook_attempted(&taken[0].id, &delivered, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(due(&outbox).await.is_empty());
    let purged = outbox
        .purge_webhook_events(SystemTime::now())
        .await
        .unwrap();
    assert_eq!(purged, 1);
}
