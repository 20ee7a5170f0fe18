//! Storage benchmarks against the real servers (`DATABASE_URL`, `REDIS_URL`; `cargo xtask
//! bench-storage` starts them), with the in-memory implementations as the baseline in the same
//! run: append a turn, read a history window, lock acquire + release, a rate-limit check.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_core::{Message, SessionId, TokenUsage, Turn};
use agent_storage::{ConversationStore, MemoryStorage, RateLimiter, SessionLocks};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;

fn turn() -> Turn {
    Turn {
        context_tokens: Vec::new(),
        messages: vec![
            Message::user("What is 2+3*4?"),
            Message::assistant("2+3*4 is 14."),
        ],
        usage: TokenUsage {
            prompt_tokens: 42,
            completion_tokens: 7,
        },
    }
}

fn bench_conversations(
    criterion: &mut Criterion,
    runtime: &Runtime,
    name: &str,
    store: Arc<dyn ConversationStore>,
) {
    let append_id = SessionId::parse("bench-append").unwrap();
    let next = Arc::new(AtomicU64::new(
        runtime
            .block_on(store.ensure_session(&append_id))
            .unwrap()
            .next_sequence,
    ));
    criterion.bench_function(&format!("{name}/append_turn"), |bencher| {
        bencher.to_async(runtime).iter(|| {
            let (store, id, next) = (Arc::clone(&store), append_id.clone(), Arc::clone(&next));
            async move {
                let expected = next.fetch_add(2, Ordering::SeqCst);
                store.append_turn(&id, expected, &turn()).await.unwrap();
            }
        });
    });

    let read_id = SessionId::parse("bench-read").unwrap();
    runtime.block_on(async {
        store.ensure_session(&read_id).await.unwrap();
        for index in 0..50 {
            store
                .append_turn(&read_id, index * 2, &turn())
                .await
                .unwrap();
        }
    });
    criterion.bench_function(&format!("{name}/read_last_20_of_100"), |bencher| {
        bencher.to_async(runtime).iter(|| {
            let (store, id) = (Arc::clone(&store), read_id.clone());
            async move { assert_eq!(store.recent_messages(&id, 20).await.unwrap().len(), 20) }
        });
    });
}

fn bench_coordination(
    criterion: &mut Criterion,
    runtime: &Runtime,
    name: &str,
    locks: Arc<dyn SessionLocks>,
    limiter: Arc<dyn RateLimiter>,
) {
    let id = SessionId::parse("bench-lock").unwrap();
    criterion.bench_function(&format!("{name}/lock_acquire_release"), |bencher| {
        bencher.to_async(runtime).iter(|| {
            let (locks, id) = (Arc::clone(&locks), id.clone());
            async move {
                let lease = locks
                    .try_acquire(&id, Duration::from_secs(10))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(locks.release(&lease).await.unwrap());
            }
        });
    });
    criterion.bench_function(&format!("{name}/rate_limit_check"), |bencher| {
        bencher.to_async(runtime).iter(|| {
            let limiter = Arc::clone(&limiter);
            async move {
                limiter
                    .check("bench-client", u32::MAX, Duration::from_secs(60))
                    .await
                    .unwrap()
            }
        });
    });
}

fn storage(criterion: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let memory = Arc::new(MemoryStorage::new());
    bench_conversations(criterion, &runtime, "memory", memory.clone());
    bench_coordination(criterion, &runtime, "memory", memory.clone(), memory);

    let postgres = Arc::new(runtime.block_on(test_support::postgres_store()));
    bench_conversations(criterion, &runtime, "postgres", postgres);
    let redis = Arc::new(test_support::redis_coordination());
    bench_coordination(criterion, &runtime, "redis", redis.clone(), redis);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = storage
}
criterion_main!(benches);
