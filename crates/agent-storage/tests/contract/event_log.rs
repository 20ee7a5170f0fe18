//! The `EventLog` contract: a run's events in order, read after any number, capped, and gone
//! once kept long enough.

use std::sync::Arc;
use std::time::Duration;

use agent_storage::{EventLog, LoggedEvent, MemoryStorage};

use crate::{contract, until};

async fn memory() -> Arc<dyn EventLog> {
    Arc::new(MemoryStorage::new())
}

async fn redis() -> Arc<dyn EventLog> {
    Arc::new(test_support::redis_coordination())
}

contract!(
    [
        events_are_read_in_order_after_any_number,
        a_retried_append_adds_nothing_twice,
        a_log_keeps_its_last_events_up_to_its_cap,
        a_log_expires_after_it_was_kept,
    ];
    memory_backend => memory().await,
    redis_backend => redis().await,
);

const KEEP: Duration = Duration::from_secs(60);

fn run() -> String {
    format!("run_{}", uuid::Uuid::new_v4().simple())
}

fn events(numbers: std::ops::Range<u64>) -> Vec<LoggedEvent> {
    numbers
        .map(|seq| LoggedEvent {
            seq,
            data: format!(r#"{{"n":{seq}}}"#),
        })
        .collect()
}

fn numbers(events: &[LoggedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.seq).collect()
}

async fn events_are_read_in_order_after_any_number(log: Arc<dyn EventLog>) {
    let (one, other) = (run(), run());
    log.append(&one, &events(0..3), 100, KEEP).await.unwrap();
    log.append(&one, &events(3..5), 100, KEEP).await.unwrap();
    log.append(&other, &events(0..1), 100, KEEP).await.unwrap();
    let all = log.read(&one, None, 100).await.unwrap();
    assert_eq!(all, events(0..5));
    assert_eq!(
        numbers(&log.read(&one, Some(2), 100).await.unwrap()),
        [3, 4]
    );
    assert_eq!(numbers(&log.read(&one, Some(0), 2).await.unwrap()), [1, 2]);
    assert!(log.read(&one, Some(4), 100).await.unwrap().is_empty());
    assert!(log.read(&run(), None, 100).await.unwrap().is_empty());
    assert_eq!(numbers(&log.read(&other, None, 100).await.unwrap()), [0]);
}

async fn a_retried_append_adds_nothing_twice(log: Arc<dyn EventLog>) {
    let one = run();
    log.append(&one, &events(0..3), 100, KEEP).await.unwrap();
    log.append(&one, &events(1..4), 100, KEEP).await.unwrap();
    assert_eq!(
        numbers(&log.read(&one, None, 100).await.unwrap()),
        [0, 1, 2, 3]
    );
}

async fn a_log_keeps_its_last_events_up_to_its_cap(log: Arc<dyn EventLog>) {
    let one = run();
    // Redis trims approximately (whole macro nodes), so the cap is checked on many events.
    for batch in 0..30u64 {
        let range = batch * 100..(batch + 1) * 100;
        log.append(&one, &events(range), 500, KEEP).await.unwrap();
    }
    let kept = log.read(&one, None, 10_000).await.unwrap();
    assert!(kept.len() >= 500 && kept.len() < 1500, "{}", kept.len());
    assert_eq!(kept.last().unwrap().seq, 2999);
    let first = kept[0].seq;
    assert_eq!(numbers(&kept), (first..3000).collect::<Vec<_>>());
}

async fn a_log_expires_after_it_was_kept(log: Arc<dyn EventLog>) {
    let one = run();
    log.append(&one, &events(0..2), 100, Duration::from_millis(100))
        .await
        .unwrap();
    until(Duration::from_secs(10), || async {
        log.read(&one, None, 100).await.unwrap().is_empty()
    })
    .await;
}
