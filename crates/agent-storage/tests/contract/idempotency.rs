//! The `IdempotencyStore` contract.

use std::sync::Arc;
use std::time::Duration;

use agent_storage::{IdempotencyBegin, IdempotencyStore, MemoryStorage};

use crate::backend;

type Records = Arc<dyn IdempotencyStore>;

const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(3600);

async fn memory() -> Records {
    Arc::new(MemoryStorage::new())
}

async fn postgres() -> Records {
    Arc::new(test_support::postgres_store().await)
}

backend!(memory_backend, memory().await;
    a_key_goes_from_started_to_in_progress_to_completed,
    the_same_key_with_another_body_is_a_mismatch,
    an_abandoned_key_can_run_again,
    a_claim_whose_request_vanished_lapses_after_its_lease,
    concurrent_claims_of_one_key_start_exactly_once,
);
backend!(postgres_backend, postgres().await;
    a_key_goes_from_started_to_in_progress_to_completed,
    the_same_key_with_another_body_is_a_mismatch,
    an_abandoned_key_can_run_again,
    a_claim_whose_request_vanished_lapses_after_its_lease,
    concurrent_claims_of_one_key_start_exactly_once,
);

async fn a_key_goes_from_started_to_in_progress_to_completed(records: Records) {
    assert_eq!(
        records.begin("key-1", "body-a", LEASE).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        records.begin("key-1", "body-a", LEASE).await.unwrap(),
        IdempotencyBegin::InProgress
    );
    records
        .complete("key-1", r#"{"response":"hi"}"#, RETENTION)
        .await
        .unwrap();
    assert_eq!(
        records.begin("key-1", "body-a", LEASE).await.unwrap(),
        IdempotencyBegin::Completed(r#"{"response":"hi"}"#.into())
    );
    records.abandon("key-1").await.unwrap();
    assert!(
        matches!(
            records.begin("key-1", "body-a", LEASE).await.unwrap(),
            IdempotencyBegin::Completed(_)
        ),
        "abandon never drops a completed record"
    );
}

async fn the_same_key_with_another_body_is_a_mismatch(records: Records) {
    assert_eq!(
        records.begin("key-2", "body-a", LEASE).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        records.begin("key-2", "body-b", LEASE).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    records.complete("key-2", "done", RETENTION).await.unwrap();
    assert_eq!(
        records.begin("key-2", "body-b", LEASE).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
}

async fn an_abandoned_key_can_run_again(records: Records) {
    assert_eq!(
        records.begin("key-3", "body", LEASE).await.unwrap(),
        IdempotencyBegin::Started
    );
    records.abandon("key-3").await.unwrap();
    assert_eq!(
        records.begin("key-3", "body", LEASE).await.unwrap(),
        IdempotencyBegin::Started
    );
}

async fn a_claim_whose_request_vanished_lapses_after_its_lease(records: Records) {
    let lease = Duration::from_millis(200);
    assert_eq!(
        records.begin("key-4", "body", lease).await.unwrap(),
        IdempotencyBegin::Started
    );
    tokio::time::sleep(lease * 2).await;
    assert_eq!(
        records.begin("key-4", "body", LEASE).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        records.begin("key-4", "body", LEASE).await.unwrap(),
        IdempotencyBegin::InProgress
    );
}

async fn concurrent_claims_of_one_key_start_exactly_once(records: Records) {
    let claims: Vec<_> = (0..20)
        .map(|_| {
            let records = Arc::clone(&records);
            tokio::spawn(async move { records.begin("key-5", "body", LEASE).await.unwrap() })
        })
        .collect();
    let mut started = 0;
    for claim in claims {
        match claim.await.unwrap() {
            IdempotencyBegin::Started => started += 1,
            IdempotencyBegin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}
