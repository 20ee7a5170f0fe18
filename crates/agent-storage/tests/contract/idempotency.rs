//! The `IdempotencyStore` contract.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::{Message, SessionId, TokenUsage, Turn};
use agent_storage::{
    ConversationStore, IdempotencyBegin, IdempotencyCompletion, IdempotencyStore, MemoryStorage,
    StorageError, TurnRecord,
};

use crate::{contract, until};

type Records = Arc<dyn IdempotencyStore>;

const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(3600);

async fn memory() -> Records {
    Arc::new(MemoryStorage::new())
}

async fn postgres() -> Records {
    Arc::new(test_support::postgres_store().await)
}

contract!(
    [
        a_key_goes_from_started_to_in_progress_to_completed,
        the_same_key_with_another_body_is_a_mismatch,
        an_abandoned_key_can_run_again,
        a_claim_whose_request_vanished_lapses_after_its_lease,
        concurrent_claims_of_one_key_start_exactly_once,
    ];
    memory_backend => memory().await,
    postgres_backend => postgres().await,
);

/// One store holding both conversations and idempotency records.
type Both = (Arc<dyn ConversationStore>, Records);

async fn memory_both() -> Both {
    let store = Arc::new(MemoryStorage::new());
    (store.clone(), store)
}

async fn postgres_both() -> Both {
    let store = Arc::new(test_support::postgres_store().await);
    (store.clone(), store)
}

contract!(
    [
        a_turn_stored_with_its_claim_completes_it_or_says_it_did_not,
        a_first_turn_creating_its_session_completes_its_claim_too,
    ];
    memory_with_turns => memory_both().await,
    postgres_with_turns => postgres_both().await,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_completes_the_claim_in_the_turns_own_statement() {
    let (conversations, records) = postgres_both().await;
    for (key, ensure) in [("pg-atomic", true), ("pg-atomic-new", false)] {
        let (_, completed) = store_with_claim(&conversations, &records, key, ensure).await;
        assert!(
            completed,
            "Postgres completes the claim with the turn: a crash between the two cannot run it twice"
        );
    }
}

/// Stores a one-exchange turn in a new session while holding a claim on `key`; with `ensure` the
/// session is created first, else the turn creates it.
async fn store_with_claim(
    conversations: &Arc<dyn ConversationStore>,
    records: &Records,
    key: &str,
    ensure: bool,
) -> (SessionId, bool) {
    let session = SessionId::parse(&format!("{key}-{}", uuid::Uuid::new_v4().simple())).unwrap();
    if ensure {
        conversations.ensure_session(&session).await.unwrap();
    }
    assert_eq!(
        records.begin(key, "body", LEASE).await.unwrap(),
        IdempotencyBegin::Started
    );
    let turn = Turn {
        context_tokens: Vec::new(),
        messages: vec![Message::user("hello"), Message::assistant("hi")],
        usage: TokenUsage::default(),
    };
    let completion = TurnRecord {
        idempotency: Some(IdempotencyCompletion {
            key,
            response: r#"{"response":"hi"}"#,
            retention: RETENTION,
        }),
        response: None,
        run: None,
        agent: None,
        summary: None,
    };
    // A stale writer stores nothing and completes nothing.
    let stale = conversations
        .append_turn_recording(&session, 5, &turn, completion)
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StorageError::Conflict { .. } | StorageError::SessionNotFound(_)
        ),
        "{stale:?}"
    );
    assert_eq!(
        records.begin(key, "body", LEASE).await.unwrap(),
        IdempotencyBegin::InProgress
    );
    let (info, completed) = conversations
        .append_turn_recording(&session, 0, &turn, completion)
        .await
        .unwrap();
    assert_eq!(info.next_sequence, 2);
    (session, completed)
}

async fn a_turn_stored_with_its_claim_completes_it_or_says_it_did_not(
    (conversations, records): Both,
) {
    claim_follows_the_turn(&conversations, &records, "with-turn", true).await;
}

async fn a_first_turn_creating_its_session_completes_its_claim_too((conversations, records): Both) {
    claim_follows_the_turn(&conversations, &records, "creating-turn", false).await;
}

async fn claim_follows_the_turn(
    conversations: &Arc<dyn ConversationStore>,
    records: &Records,
    key: &str,
    ensure: bool,
) {
    let (session, completed) = store_with_claim(conversations, records, key, ensure).await;
    let expected = if completed {
        IdempotencyBegin::Completed(r#"{"response":"hi"}"#.into())
    } else {
        IdempotencyBegin::InProgress
    };
    assert_eq!(records.begin(key, "body", LEASE).await.unwrap(), expected);
    assert_eq!(
        conversations
            .recent_messages(&session, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

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
    let lease = Duration::from_millis(500);
    let started = Instant::now();
    assert_eq!(
        records.begin("key-4", "body", lease).await.unwrap(),
        IdempotencyBegin::Started
    );
    let again = records.begin("key-4", "body", LEASE).await.unwrap();
    // Asserted only when the answer came within the lease (a stalled machine proves nothing).
    if started.elapsed() < lease {
        assert_eq!(
            again,
            IdempotencyBegin::InProgress,
            "claimed until its lease"
        );
    }
    until(Duration::from_secs(10), || {
        let records = Arc::clone(&records);
        async move {
            records.begin("key-4", "body", LEASE).await.unwrap() == IdempotencyBegin::Started
        }
    })
    .await;
    assert!(started.elapsed() >= lease, "not lapsed before its lease");
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
