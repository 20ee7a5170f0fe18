//! The `ConversationStore` contract.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Message, Role, SessionId, TokenUsage, ToolCall, Turn};
use agent_storage::{
    ConversationStore, MAX_HISTORY_WINDOW, MemoryStorage, SessionLocks, StorageError, acquire_lock,
};

use crate::contract;

type Stores = (Arc<dyn ConversationStore>, Arc<dyn SessionLocks>);

fn session(name: &str) -> SessionId {
    SessionId::parse(&format!("{name}-{}", uuid_suffix())).unwrap()
}

fn uuid_suffix() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string()
}

fn tool_turn(question: &str) -> Turn {
    Turn {
        context_tokens: Vec::new(),
        messages: vec![
            Message::user(question),
            Message::assistant_tool_calls(
                "",
                vec![ToolCall {
                    id: "call_1".into(),
                    name: "calculator".into(),
                    arguments: r#"{"expression":"2+3*4"}"#.into(),
                }],
            ),
            Message::tool_result("call_1", "14"),
            Message::assistant("2+3*4 is 14."),
        ],
        usage: TokenUsage {
            prompt_tokens: 120,
            completion_tokens: 30,
        },
    }
}

fn simple_turn(text: &str) -> Turn {
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

async fn memory() -> Stores {
    let storage = Arc::new(MemoryStorage::new());
    (storage.clone(), storage)
}

async fn postgres() -> Stores {
    (
        Arc::new(test_support::postgres_store().await),
        Arc::new(test_support::redis_coordination()),
    )
}

contract!(
    [
        a_response_is_kept_with_its_turn_and_deleted_with_its_session,
        turns_that_store_nothing_are_counted_too,
        the_sweep_deletes_only_idle_sessions_and_never_one_with_a_turn_in_progress,
        the_sweep_deletes_the_oldest_first_in_batches,
        usage_per_caller_adds_up_to_the_stored_turns,
        usage_is_counted_per_agent_and_a_quota_sums_them,
        sessions_are_listed_per_owner_newest_first_in_pages_that_skip_and_repeat_nothing,
        ensure_session_creates_an_empty_session_once,
        concurrent_ensures_of_a_new_session_agree,
        open_session_creates_then_returns_the_window,
        a_turn_is_stored_in_order_with_tool_calls_and_usage,
        a_stale_sequence_is_a_conflict_and_stores_nothing,
        a_first_turn_creates_its_session,
        a_session_belongs_to_the_agent_of_its_first_recorded_turn,
        each_message_keeps_the_context_tokens_it_was_counted_with,
        a_summary_is_kept_with_its_turn_and_replaced_by_the_next,
        a_later_turn_on_a_missing_session_is_not_found,
        racing_first_turns_of_a_new_session_store_one,
        recent_messages_returns_the_last_n_in_order,
        delete_removes_the_session_and_its_messages,
        fifty_concurrent_appends_through_the_lock_lose_nothing,
    ];
    memory_backend => memory().await,
    postgres_backend => postgres().await,
);

async fn ensure_session_creates_an_empty_session_once((store, _): Stores) {
    let id = session("new");
    assert_eq!(store.session(&id).await.unwrap(), None);
    let created = store.ensure_session(&id).await.unwrap();
    assert_eq!(
        (created.next_sequence, created.turn_count, created.usage),
        (0, 0, TokenUsage::default())
    );
    let again = store.ensure_session(&id).await.unwrap();
    assert_eq!(again, created, "a second ensure returns the same session");
    assert_eq!(store.session(&id).await.unwrap(), Some(created));
}

async fn concurrent_ensures_of_a_new_session_agree((store, _): Stores) {
    let id = session("race");
    let calls: Vec<_> = (0..20)
        .map(|call| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                if call % 2 == 0 {
                    store.ensure_session(&id).await.unwrap()
                } else {
                    store.open_session(&id, 10).await.unwrap().info
                }
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for call in calls {
        let info = call.await.unwrap();
        assert_eq!(info.next_sequence, 0);
        seen.insert(info.created_at);
    }
    assert_eq!(seen.len(), 1, "every caller sees the one session created");
}

async fn open_session_creates_then_returns_the_window((store, _): Stores) {
    let id = session("open");
    let opened = store.open_session(&id, 3).await.unwrap();
    let (created, history) = (opened.info, opened.messages);
    assert_eq!((created.next_sequence, history.len()), (0, 0));
    assert_eq!(opened.active_run, None);
    assert_eq!(store.session(&id).await.unwrap(), Some(created));
    for turn in 0..3 {
        store
            .append_turn(&id, turn * 2, &simple_turn(&format!("m{turn}")))
            .await
            .unwrap();
    }
    let opened = store.open_session(&id, 3).await.unwrap();
    let (info, history) = (opened.info, opened.messages);
    assert_eq!((info.next_sequence, info.turn_count), (6, 3));
    let sequences: Vec<u64> = history.iter().map(|message| message.sequence).collect();
    assert_eq!(sequences, [3, 4, 5]);
    assert_eq!(history[2].message, Message::assistant("echo: m2"));
    assert_eq!(store.session(&id).await.unwrap(), Some(info));
}

async fn a_turn_is_stored_in_order_with_tool_calls_and_usage((store, _): Stores) {
    let id = session("turn");
    store.ensure_session(&id).await.unwrap();
    let turn = tool_turn("what is 2+3*4?");
    let info = store.append_turn(&id, 0, &turn).await.unwrap();
    assert_eq!((info.next_sequence, info.turn_count), (4, 1));
    assert_eq!(
        info.usage,
        TokenUsage {
            prompt_tokens: 120,
            completion_tokens: 30
        }
    );

    let second = simple_turn("thanks");
    let info = store.append_turn(&id, 4, &second).await.unwrap();
    assert_eq!(
        (info.next_sequence, info.turn_count, info.usage.total()),
        (6, 2, 165)
    );

    let stored = store.recent_messages(&id, 100).await.unwrap();
    let sequences: Vec<u64> = stored.iter().map(|message| message.sequence).collect();
    assert_eq!(sequences, [0, 1, 2, 3, 4, 5]);
    let messages: Vec<Message> = stored
        .iter()
        .map(|message| message.message.clone())
        .collect();
    let expected: Vec<Message> = turn
        .messages
        .iter()
        .chain(&second.messages)
        .cloned()
        .collect();
    assert_eq!(
        messages, expected,
        "roles, content, tool calls and tool call ids round-trip"
    );
    let tokens: Vec<Option<u64>> = stored.iter().map(|message| message.tokens).collect();
    assert_eq!(
        tokens,
        [None, None, None, Some(150), None, Some(15)],
        "a turn's tokens on its last message"
    );
    assert_eq!(stored[1].message.role, Role::Assistant);
}

async fn a_stale_sequence_is_a_conflict_and_stores_nothing((store, _): Stores) {
    let id = session("stale");
    store.ensure_session(&id).await.unwrap();
    store
        .append_turn(&id, 0, &simple_turn("first"))
        .await
        .unwrap();
    let error = store
        .append_turn(&id, 0, &simple_turn("stale"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            StorageError::Conflict {
                expected: 0,
                actual: 2,
                ..
            }
        ),
        "{error:?}"
    );
    let info = store.session(&id).await.unwrap().unwrap();
    assert_eq!((info.next_sequence, info.turn_count), (2, 1));
    assert_eq!(store.recent_messages(&id, 100).await.unwrap().len(), 2);
}

/// Postgres only: text cannot hold NUL, so the second message's insert fails. The session row
/// must not have advanced (the update and the insert are one statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failed_insert_leaves_the_session_unchanged() {
    let (store, _) = postgres().await;
    let id = session("atomic");
    store.ensure_session(&id).await.unwrap();
    store
        .append_turn(&id, 0, &simple_turn("first"))
        .await
        .unwrap();
    let mut broken = tool_turn("second");
    broken.messages[3].content = "nul \0 inside".into();
    let error = store.append_turn(&id, 2, &broken).await.unwrap_err();
    assert!(matches!(error, StorageError::Backend { .. }), "{error:?}");
    let info = store.session(&id).await.unwrap().unwrap();
    assert_eq!(
        (info.next_sequence, info.turn_count, info.usage.total()),
        (2, 1, 15)
    );
    assert_eq!(store.recent_messages(&id, 100).await.unwrap().len(), 2);
}

async fn a_first_turn_creates_its_session((store, _): Stores) {
    let id = session("created-by-its-turn");
    let info = store
        .append_turn(&id, 0, &tool_turn("hello"))
        .await
        .unwrap();
    assert_eq!(
        (info.next_sequence, info.turn_count, info.usage.total()),
        (4, 1, 150)
    );
    assert_eq!(store.session(&id).await.unwrap(), Some(info));
    let stored = store.recent_messages(&id, 100).await.unwrap();
    let sequences: Vec<u64> = stored.iter().map(|message| message.sequence).collect();
    assert_eq!(sequences, [0, 1, 2, 3]);
    assert_eq!(stored[1].message.tool_calls.len(), 1);
    assert_eq!(stored[3].tokens, Some(150));
    // The next turn continues it as usual.
    let info = store
        .append_turn(&id, 4, &simple_turn("again"))
        .await
        .unwrap();
    assert_eq!((info.next_sequence, info.turn_count), (6, 2));
}

async fn each_message_keeps_the_context_tokens_it_was_counted_with((store, _): Stores) {
    let id = session("context-tokens");
    let counted = Turn {
        context_tokens: vec![9, 30, 4, 12],
        ..tool_turn("counted")
    };
    store.append_turn(&id, 0, &counted).await.unwrap();
    // A turn whose agent counted nothing stores none.
    store
        .append_turn(&id, 4, &simple_turn("not counted"))
        .await
        .unwrap();
    let expected = [Some(9), Some(30), Some(4), Some(12), None, None];
    let recent = store.recent_messages(&id, 10).await.unwrap();
    let counts: Vec<Option<u64>> = recent.iter().map(|stored| stored.context_tokens).collect();
    assert_eq!(counts, expected);
    let opened = store.open_session(&id, 10).await.unwrap();
    let counts: Vec<Option<u64>> = opened
        .messages
        .iter()
        .map(|stored| stored.context_tokens)
        .collect();
    assert_eq!(counts, expected, "as a turn opens the session");
    // The turn's usage stays on its last message, apart from the counts.
    assert_eq!(recent[3].tokens, Some(150));
}

async fn a_summary_is_kept_with_its_turn_and_replaced_by_the_next((store, _): Stores) {
    let with = |text, through| agent_storage::TurnRecord {
        summary: Some(agent_storage::SummaryRecord { text, through }),
        ..Default::default()
    };
    let id = session("summarised");
    for turn in 0..3 {
        store
            .append_turn(&id, 2 * turn, &simple_turn(&format!("turn {turn}")))
            .await
            .unwrap();
    }
    assert_eq!(store.session(&id).await.unwrap().unwrap().summary, None);
    let (info, _) = store
        .append_turn_recording(&id, 6, &simple_turn("turn 3"), with("The first two.", 4))
        .await
        .unwrap();
    let first = agent_storage::SessionSummary {
        text: "The first two.".into(),
        through: 4,
    };
    assert_eq!(info.summary.as_ref(), Some(&first));
    // Kept: a turn without a compaction leaves it; every message stays stored.
    store
        .append_turn(&id, 8, &simple_turn("turn 4"))
        .await
        .unwrap();
    let opened = store.open_session(&id, 100).await.unwrap();
    assert_eq!(opened.info.summary.as_ref(), Some(&first));
    assert_eq!(opened.messages.len(), 10);
    assert_eq!(
        store.session(&id).await.unwrap().unwrap().summary.as_ref(),
        Some(&first)
    );
    // A stale writer changes nothing, summary included.
    let stale = store
        .append_turn_recording(&id, 8, &simple_turn("late"), with("Stale.", 8))
        .await;
    assert!(
        matches!(stale, Err(StorageError::Conflict { .. })),
        "{stale:?}"
    );
    let (info, _) = store
        .append_turn_recording(&id, 10, &simple_turn("turn 5"), with("The first four.", 8))
        .await
        .unwrap();
    assert_eq!(info.summary.map(|summary| summary.through), Some(8));
    // A first turn may bring one too (its request's own history compacted).
    let id = session("summarised-at-once");
    let (info, _) = store
        .append_turn_recording(&id, 0, &simple_turn("one"), with("Given before.", 0))
        .await
        .unwrap();
    assert_eq!(
        info.summary.map(|summary| summary.text),
        Some("Given before.".into())
    );
}

async fn a_session_belongs_to_the_agent_of_its_first_recorded_turn((store, _): Stores) {
    let of = |agent| agent_storage::TurnRecord {
        agent,
        ..Default::default()
    };
    // A new session takes its first turn's agent, and keeps it.
    let id = session("agent-of-first-turn");
    let (info, _) = store
        .append_turn_recording(&id, 0, &simple_turn("one"), of(Some("support")))
        .await
        .unwrap();
    assert_eq!(info.agent.as_deref(), Some("support"));
    let (info, _) = store
        .append_turn_recording(&id, 2, &simple_turn("two"), of(Some("research")))
        .await
        .unwrap();
    assert_eq!(info.agent.as_deref(), Some("support"), "it keeps its agent");
    let opened = store.open_session(&id, 10).await.unwrap();
    assert_eq!(opened.info.agent.as_deref(), Some("support"));
    assert_eq!(
        store.session(&id).await.unwrap().unwrap().agent.as_deref(),
        Some("support")
    );
    // One stored before agents were named (or opened before its first turn) gets its next
    // turn's.
    let id = session("agent-set-later");
    store
        .append_turn(&id, 0, &simple_turn("one"))
        .await
        .unwrap();
    assert_eq!(store.ensure_session(&id).await.unwrap().agent, None);
    let (info, _) = store
        .append_turn_recording(&id, 2, &simple_turn("two"), of(Some("research")))
        .await
        .unwrap();
    assert_eq!(info.agent.as_deref(), Some("research"));
    let opened = store
        .ensure_session(&session("opened-first"))
        .await
        .unwrap();
    assert_eq!(opened.agent, None);
    let (info, _) = store
        .append_turn_recording(&opened.id, 0, &simple_turn("one"), of(Some("support")))
        .await
        .unwrap();
    assert_eq!(info.agent.as_deref(), Some("support"));
}

async fn a_later_turn_on_a_missing_session_is_not_found((store, _): Stores) {
    let id = session("missing");
    let error = store
        .append_turn(&id, 2, &simple_turn("hello"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::SessionNotFound(_)),
        "{error:?}"
    );
    assert_eq!(store.session(&id).await.unwrap(), None);
}

async fn racing_first_turns_of_a_new_session_store_one((store, _): Stores) {
    let id = session("racing-first-turns");
    let attempts = (0..10).map(|index| {
        let store = Arc::clone(&store);
        let id = id.clone();
        tokio::spawn(async move {
            store
                .append_turn(&id, 0, &simple_turn(&format!("first {index}")))
                .await
        })
    });
    let results: Vec<_> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let stored: Vec<_> = results.iter().filter(|result| result.is_ok()).collect();
    assert_eq!(stored.len(), 1, "{results:?}");
    for result in &results {
        if let Err(error) = result {
            assert!(
                matches!(
                    error,
                    StorageError::Conflict {
                        expected: 0,
                        actual: 2,
                        ..
                    }
                ),
                "{error:?}"
            );
        }
    }
    let messages = store.recent_messages(&id, 100).await.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[1].message.content,
        format!("echo: {}", messages[0].message.content)
    );
    let info = store.session(&id).await.unwrap().unwrap();
    assert_eq!((info.next_sequence, info.turn_count), (2, 1));
}

async fn recent_messages_returns_the_last_n_in_order((store, _): Stores) {
    let id = session("window");
    store.ensure_session(&id).await.unwrap();
    for turn in 0..5 {
        store
            .append_turn(&id, turn * 2, &simple_turn(&format!("m{turn}")))
            .await
            .unwrap();
    }
    let last_three: Vec<u64> = store
        .recent_messages(&id, 3)
        .await
        .unwrap()
        .iter()
        .map(|message| message.sequence)
        .collect();
    assert_eq!(last_three, [7, 8, 9]);
    assert!(store.recent_messages(&id, 0).await.unwrap().is_empty());
    assert_eq!(
        store
            .recent_messages(&id, MAX_HISTORY_WINDOW * 10)
            .await
            .unwrap()
            .len(),
        10
    );
    assert!(
        store
            .recent_messages(&session("none"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn delete_removes_the_session_and_its_messages((store, _): Stores) {
    let id = session("delete");
    let other = session("keep");
    for session in [&id, &other] {
        store.ensure_session(session).await.unwrap();
        store
            .append_turn(session, 0, &simple_turn("hello"))
            .await
            .unwrap();
    }
    assert!(store.delete_session(&id).await.unwrap());
    assert_eq!(store.session(&id).await.unwrap(), None);
    assert!(store.recent_messages(&id, 10).await.unwrap().is_empty());
    assert!(
        !store.delete_session(&id).await.unwrap(),
        "a second delete finds nothing"
    );
    assert_eq!(
        store.recent_messages(&other, 10).await.unwrap().len(),
        2,
        "other sessions stay"
    );
    // The id can be used again from scratch.
    assert_eq!(store.ensure_session(&id).await.unwrap().next_sequence, 0);
}

async fn fifty_concurrent_appends_through_the_lock_lose_nothing((store, locks): Stores) {
    let id = session("concurrent");
    store.ensure_session(&id).await.unwrap();
    let writers: Vec<_> = (0..50)
        .map(|writer| {
            let (store, locks, id) = (Arc::clone(&store), Arc::clone(&locks), id.clone());
            tokio::spawn(async move {
                let guard = acquire_lock(
                    &locks,
                    &id,
                    Duration::from_secs(10),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
                let next = store.session(&id).await.unwrap().unwrap().next_sequence;
                store
                    .append_turn(&id, next, &simple_turn(&format!("writer {writer}")))
                    .await
                    .unwrap();
                assert!(
                    guard.release().await.unwrap(),
                    "the lock was held throughout"
                );
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let info = store.session(&id).await.unwrap().unwrap();
    assert_eq!((info.turn_count, info.next_sequence), (50, 100));
    let stored = store.recent_messages(&id, 1000).await.unwrap();
    let sequences: Vec<u64> = stored.iter().map(|message| message.sequence).collect();
    assert_eq!(
        sequences,
        (0..100).collect::<Vec<u64>>(),
        "consecutive, no gaps"
    );
    let writers: BTreeSet<String> = stored
        .iter()
        .filter(|message| message.message.role == Role::User)
        .map(|message| message.message.content.clone())
        .collect();
    assert_eq!(writers.len(), 50, "every writer's turn is there once");
}

/// Pages of a listing neither skip nor repeat sessions while new ones are created and old ones
/// continued between pages; only the owner's sessions are listed.
async fn sessions_are_listed_per_owner_newest_first_in_pages_that_skip_and_repeat_nothing(
    (store, _): Stores,
) {
    let suffix = uuid_suffix();
    let (owner, other) = (format!("lister{suffix}"), format!("other{suffix}"));
    let owned = |owner: &str, n: usize| SessionId::parse(&format!("s{n}")).unwrap().owned_by(owner);
    let mut created = Vec::new();
    for n in 0..12 {
        let id = owned(&owner, n);
        store.append_turn(&id, 0, &simple_turn("hi")).await.unwrap();
        created.push(id);
        if n % 4 == 0 {
            store
                .append_turn(&owned(&other, n), 0, &simple_turn("hi"))
                .await
                .unwrap();
        }
    }
    let mut listed = Vec::new();
    let mut after = None;
    for page in 0.. {
        let sessions = store
            .list_sessions(&owner, after.as_ref(), 5)
            .await
            .unwrap();
        assert!(sessions.len() <= 5);
        // Between pages: a new session, and the oldest one continued.
        store
            .append_turn(&owned(&owner, 100 + page), 0, &simple_turn("new"))
            .await
            .unwrap();
        let oldest = store.session(&created[0]).await.unwrap().unwrap();
        store
            .append_turn(&created[0], oldest.next_sequence, &simple_turn("again"))
            .await
            .unwrap();
        let Some(last) = sessions.last() else { break };
        after = Some(last.cursor());
        listed.extend(sessions.into_iter().map(|info| info.id));
    }
    created.reverse();
    assert_eq!(listed, created, "newest first, each once, the owner's only");
    assert!(
        store
            .list_sessions("nobody", None, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A caller's day is split by agent (the stored turns' and the stateless ones'); the day's
/// tokens a quota checks are every agent's.
async fn usage_is_counted_per_agent_and_a_quota_sums_them((store, _): Stores) {
    let caller = format!("agents{}", uuid_suffix());
    let of = |agent| agent_storage::TurnRecord {
        agent,
        ..Default::default()
    };
    for (name, agent) in [("a", "support"), ("b", "support"), ("c", "research")] {
        let id = SessionId::parse(name).unwrap().owned_by(&caller);
        store
            .append_turn_recording(&id, 0, &simple_turn("hi"), of(Some(agent)))
            .await
            .unwrap();
    }
    let tokens = TokenUsage {
        prompt_tokens: 7,
        completion_tokens: 3,
    };
    store
        .count_usage(&caller, Some("research"), tokens, None)
        .await
        .unwrap();
    store
        .count_usage(&caller, None, tokens, None)
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let rows = store.usage(Some(&caller), today, today).await.unwrap();
    let split: Vec<(Option<&str>, u64)> = rows
        .iter()
        .map(|row| (row.agent.as_deref(), row.turns))
        .collect();
    assert_eq!(
        split,
        [(None, 1), (Some("research"), 2), (Some("support"), 2)]
    );
    let total: u64 = rows.iter().map(|row| row.usage.total()).sum();
    assert_eq!(store.tokens_used(&caller, today).await.unwrap(), total);
}

/// Usage is counted with each stored turn: after 50 concurrent turns of two callers (some of them
/// refused as conflicts, which count nothing), each caller's day adds up to its sessions' totals.
async fn usage_per_caller_adds_up_to_the_stored_turns((store, _): Stores) {
    let suffix = uuid_suffix();
    let callers = [format!("payer{suffix}"), format!("other{suffix}")];
    let turns = (0..50).map(|n| {
        let store = Arc::clone(&store);
        let id = SessionId::parse(&format!("u{}", n % 10))
            .unwrap()
            .owned_by(&callers[n % 2]);
        async move {
            // Racing first turns of a session: one of them is stored, the rest conflict.
            store
                .append_turn(&id, 0, &simple_turn("count me"))
                .await
                .is_ok()
        }
    });
    let stored = futures_util::future::join_all(turns)
        .await
        .into_iter()
        .filter(|stored| *stored)
        .count();
    assert_eq!(stored, 10, "one first turn per session");
    let today = chrono::Utc::now().date_naive();
    let day_before = today.pred_opt().unwrap();
    for caller in &callers {
        // (Yesterday too: the turns may straddle midnight UTC.)
        let rows = store.usage(Some(caller), day_before, today).await.unwrap();
        assert!(rows.iter().all(|row| &row.owner == caller), "{rows:?}");
        let mut counted = (0, TokenUsage::default());
        for row in &rows {
            counted.0 += row.turns;
            counted.1 += row.usage;
        }
        let mut expected = (0, TokenUsage::default());
        for listed in store.list_sessions(caller, None, 100).await.unwrap() {
            expected.0 += listed.turn_count;
            expected.1 += listed.usage;
        }
        assert_eq!(counted, expected, "{caller}");
        assert_eq!(counted.0, 5, "{caller}");
    }
    let everyone = store.usage(None, day_before, today).await.unwrap();
    assert!(
        callers
            .iter()
            .all(|caller| everyone.iter().any(|row| &row.owner == caller))
    );
    let long_ago = today - chrono::Days::new(30);
    assert!(
        store
            .usage(Some(&callers[0]), long_ago, long_ago)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The retention sweep deletes the sessions idle since before the cutoff, with their messages,
/// and no other: not one continued since, not one with a turn in progress (its lock held, as a
/// request holds it), which the next sweep deletes once it is free. Usage is kept, and the sweep
/// leaves no lock behind.
async fn the_sweep_deletes_only_idle_sessions_and_never_one_with_a_turn_in_progress(
    (store, locks): Stores,
) {
    let turn = || simple_turn("keep me?");
    let [idle_one, idle_two, continued, in_progress, fresh] =
        ["idle1", "idle2", "continued", "busy", "fresh"].map(session);
    for id in [&idle_one, &idle_two, &continued, &in_progress] {
        store.append_turn(id, 0, &turn()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append_turn(&continued, 2, &turn()).await.unwrap();
    store.append_turn(&fresh, 0, &turn()).await.unwrap();
    let today = chrono::Utc::now().date_naive();
    let usage_before = store
        .usage(None, today.pred_opt().unwrap(), today)
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    let turn_in_progress = acquire_lock(&locks, &in_progress, ttl, Duration::ZERO)
        .await
        .unwrap();

    let sweep = store
        .sweep_idle(cutoff, 100, &locks)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sweep.candidates, sweep.deleted, sweep.busy), (3, 2, 1));
    for id in [&idle_one, &idle_two] {
        assert_eq!(store.session(id).await.unwrap(), None, "{id}");
        assert!(store.recent_messages(id, 100).await.unwrap().is_empty());
        let relocked = acquire_lock(&locks, id, ttl, Duration::ZERO).await;
        assert!(relocked.is_ok(), "the sweep released the lock of {id}");
    }
    assert_eq!(
        store.session(&continued).await.unwrap().unwrap().turn_count,
        2
    );
    assert_eq!(
        store.recent_messages(&continued, 100).await.unwrap().len(),
        4
    );
    for id in [&in_progress, &fresh] {
        assert!(store.session(id).await.unwrap().is_some(), "{id}");
    }
    let usage_after = store
        .usage(None, today.pred_opt().unwrap(), today)
        .await
        .unwrap();
    assert_eq!(usage_after, usage_before, "usage outlives its sessions");

    turn_in_progress.release().await.unwrap();
    let sweep = store
        .sweep_idle(cutoff, 100, &locks)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sweep.candidates, sweep.deleted, sweep.busy), (1, 1, 0));
    assert_eq!(store.session(&in_progress).await.unwrap(), None);
    let sweep = store
        .sweep_idle(cutoff, 100, &locks)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sweep,
        agent_storage::Sweep::default(),
        "nothing idle is left"
    );
}

/// A batch deletes at most its limit, the longest idle first.
async fn the_sweep_deletes_the_oldest_first_in_batches((store, locks): Stores) {
    let ids: Vec<SessionId> = (0..5).map(|n| session(&format!("old{n}"))).collect();
    for id in &ids {
        store.append_turn(id, 0, &simple_turn("old")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cutoff = std::time::SystemTime::now();
    let first = store.sweep_idle(cutoff, 2, &locks).await.unwrap().unwrap();
    assert_eq!((first.candidates, first.deleted), (2, 2));
    let remaining: Vec<bool> = futures_util::future::join_all(
        ids.iter()
            .map(|id| async { store.session(id).await.unwrap().is_some() }),
    )
    .await;
    assert_eq!(remaining, [false, false, true, true, true]);
    let second = store.sweep_idle(cutoff, 2, &locks).await.unwrap().unwrap();
    let third = store.sweep_idle(cutoff, 2, &locks).await.unwrap().unwrap();
    assert_eq!((second.deleted, third.candidates, third.deleted), (2, 1, 1));
}

/// While another replica holds the sweep's advisory lock, a sweep does nothing and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_sweeps_at_a_time_in_postgres() {
    use diesel::sql_types::BigInt;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let url = test_support::fresh_database_url().await;
    let store =
        agent_storage::PostgresStore::connect(&test_support::postgres_options(&url)).unwrap();
    store.migrate().await.unwrap();
    let locks: Arc<dyn SessionLocks> = Arc::new(test_support::redis_coordination());
    let idle = session("idle");
    store
        .append_turn(&idle, 0, &simple_turn("old"))
        .await
        .unwrap();
    let cutoff = std::time::SystemTime::now();
    let mut other_replica = AsyncPgConnection::establish(&url).await.unwrap();
    let lock = |sql| {
        diesel::sql_query(sql).bind::<BigInt, _>(agent_storage::PostgresStore::RETENTION_LOCK)
    };
    lock("SELECT pg_advisory_lock($1)")
        .execute(&mut other_replica)
        .await
        .unwrap();
    assert_eq!(store.sweep_idle(cutoff, 10, &locks).await.unwrap(), None);
    assert!(store.session(&idle).await.unwrap().is_some());
    lock("SELECT pg_advisory_unlock($1)")
        .execute(&mut other_replica)
        .await
        .unwrap();
    let sweep = store.sweep_idle(cutoff, 10, &locks).await.unwrap().unwrap();
    assert_eq!(sweep.deleted, 1);
}

/// A turn that stores no messages (stateless) still counts in its caller's usage of the day,
/// beside stored turns.
async fn turns_that_store_nothing_are_counted_too((store, _): Stores) {
    let caller = format!("stateless{}", uuid_suffix());
    let tokens = TokenUsage {
        prompt_tokens: 100,
        completion_tokens: 7,
    };
    let counts = (0..20).map(|_| store.count_usage(&caller, None, tokens, None));
    for counted in futures_util::future::join_all(counts).await {
        counted.unwrap();
    }
    let stored = SessionId::parse("kept").unwrap().owned_by(&caller);
    store
        .append_turn(&stored, 0, &simple_turn("stored"))
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let rows = store
        .usage(Some(&caller), today.pred_opt().unwrap(), today)
        .await
        .unwrap();
    let turns: u64 = rows.iter().map(|row| row.turns).sum();
    let prompt: u64 = rows.iter().map(|row| row.usage.prompt_tokens).sum();
    let completion: u64 = rows.iter().map(|row| row.usage.completion_tokens).sum();
    assert_eq!((turns, prompt, completion), (21, 2010, 145));
    // (Yesterday too: the turns may straddle midnight UTC.)
    let used = store.tokens_used(&caller, today).await.unwrap()
        + store
            .tokens_used(&caller, today.pred_opt().unwrap())
            .await
            .unwrap();
    assert_eq!(used, 2010 + 145);
}

/// A response object is written by its turn's own store, at the session's place after the turn;
/// a turn that stores nothing keeps no response; deleting the session deletes its responses.
/// A response's parameters with every field set.
pub(crate) fn response_parameters() -> agent_storage::ResponseParameters {
    agent_storage::ResponseParameters {
        model: "agent".into(),
        instructions: Some("Be brief.".into()),
        previous_response_id: None,
        temperature: Some(0.5),
        top_p: None,
        max_output_tokens: Some(100),
        user: Some("end-user-7".into()),
        metadata: [("topic".to_owned(), "tests".to_owned())].into(),
        text_format: Some(serde_json::json!({ "type": "json_object" })),
    }
}

async fn a_response_is_kept_with_its_turn_and_deleted_with_its_session((store, _): Stores) {
    let id = session("responses");
    let parameters = response_parameters();
    let created_at = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let record = |response_id| agent_storage::TurnRecord {
        idempotency: None,
        run: None,
        agent: None,
        summary: None,
        response: Some(agent_storage::ResponseRecord {
            id: response_id,
            created_at,
            parameters: &parameters,
            output_text: "echo: one",
        }),
    };
    // Ids are the API's business: any text is kept.
    let first = "first response";
    let (info, _) = store
        .append_turn_recording(&id, 0, &simple_turn("one"), record(first))
        .await
        .unwrap();
    assert_eq!(info.next_sequence, 2);
    let kept = store.response(first).await.unwrap().unwrap();
    assert_eq!(
        kept,
        agent_storage::StoredResponse {
            id: first.to_owned(),
            session: id.clone(),
            sequence: 2,
            created_at,
            parameters: parameters.clone(),
            output_text: "echo: one".into(),
            usage: simple_turn("one").usage,
        }
    );
    // A stale turn stores nothing, and keeps no response.
    let stale = "stale response";
    let refused = store
        .append_turn_recording(&id, 0, &simple_turn("stale"), record(stale))
        .await;
    assert!(refused.is_err());
    assert_eq!(store.response(stale).await.unwrap(), None);
    let second = "second response";
    store
        .append_turn_recording(&id, 2, &simple_turn("two"), record(second))
        .await
        .unwrap();
    assert_eq!(store.response(second).await.unwrap().unwrap().sequence, 4);
    assert!(store.delete_session(&id).await.unwrap());
    assert_eq!(store.response(first).await.unwrap(), None);
    assert_eq!(store.response(second).await.unwrap(), None);
}
