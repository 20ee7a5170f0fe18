//! The history windows of sessions this instance stored a turn into, so that the next turn on the
//! same instance skips reading them back (a continuing turn's largest cost after the model).
//!
//! An entry is trusted only if no one else can have written the session since: every writer of a
//! session (a turn, `DELETE /sessions/{id}`, the retention sweep) holds its lock, and each lock
//! acquisition advances the session's fencing counter (Redis or in-process). An entry keeps the
//! fencing token of the lock its turn was stored under; the next turn's acquisition must answer
//! exactly the token after it, or the entry is dropped and the history read as before. Only
//! turns stored under a lock are kept: the first turn of a session the server named takes none,
//! and many such sessions never see a second turn (a burst of them must not fill the cache). A store answering
//! anything but success drops the entry too. The store's expected-sequence check stays the safety
//! net: if a lock store forgot its counters (Redis restored from an old snapshot) while another
//! instance wrote, the turn fails with a conflict rather than writing over that history.

use std::sync::Arc;

use agent_core::{Message, SessionId, Turn};
use agent_storage::{SessionInfo, StoredMessage};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// A history window shared between the cache and the turn that stores the next one: a turn's
/// new window reuses the old one's messages without copying them.
pub(crate) type Window = Arc<[Kept]>;

/// A message of a window, with what it takes of a model's context as its agent counted it
/// (none: not counted).
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    message: Arc<Message>,
    tokens: Option<u64>,
}

/// The history a turn is sent, the stored token counts of its messages, and (with the cache on)
/// its window as the cache keeps it.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) messages: Vec<Message>,
    pub(crate) tokens: Vec<Option<u64>>,
    pub(crate) window: Option<Window>,
}

/// What one session's entry holds.
#[derive(Debug, Clone)]
struct CachedHistory {
    /// The fencing token of the lock the stored turn held.
    fence: u64,
    /// The session as the store answered the append.
    info: SessionInfo,
    /// The last `window` messages stored, oldest first (see [`HistoryCache::store`]).
    history: Window,
}

/// Bounded by an estimate of the bytes its entries hold; None when switched off.
#[derive(Clone)]
pub(crate) struct HistoryCache {
    cache: Option<Arc<Cache<SessionId, CachedHistory, ByBytes>>>,
    window: usize,
}

impl std::fmt::Debug for HistoryCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HistoryCache")
            .field("entries", &self.cache.as_ref().map(|cache| cache.len()))
            .field("window", &self.window)
            .finish()
    }
}

/// An estimate of an entry's heap bytes: its texts and a fixed share per message.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

/// Heap and bookkeeping per message besides its texts.
const MESSAGE_OVERHEAD: u64 = 112;
/// Per entry besides its messages.
const ENTRY_OVERHEAD: u64 = 256;
/// The size of a typical entry, to size the table: a window of short messages.
const TYPICAL_ENTRY: u64 = 4096;

impl Weighter<SessionId, CachedHistory> for ByBytes {
    fn weight(&self, key: &SessionId, value: &CachedHistory) -> u64 {
        let messages: u64 = value
            .history
            .iter()
            .map(|Kept { message, .. }| {
                // Capacities: what the allocator holds, not what the texts use.
                let calls: usize = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        call.id.capacity() + call.name.capacity() + call.arguments.capacity() + 72
                    })
                    .sum();
                let reply = message.tool_call_id.as_ref().map_or(0, String::capacity);
                (message.content.capacity() + calls + reply) as u64 + MESSAGE_OVERHEAD
            })
            .sum();
        // Never 0: quick_cache keeps zero-weight entries beyond the bound.
        ENTRY_OVERHEAD + key.as_str().len() as u64 + messages
    }
}

impl History {
    /// Leaves out the messages the session's summary covers (it stands in for them); answers
    /// the sequence number of the first message left. A history is always the session's newest
    /// messages.
    pub(crate) fn after_summary(&mut self, info: &SessionInfo) -> u64 {
        let len = self.messages.len() as u64;
        let first = info.next_sequence.saturating_sub(len);
        let Some(summary) = &info.summary else {
            return first;
        };
        let covered = summary.through.saturating_sub(first).min(len) as usize;
        self.messages.drain(..covered);
        self.tokens.drain(..covered.min(self.tokens.len()));
        first + covered as u64
    }
}

impl HistoryCache {
    /// A cache holding at most about `bytes` of history (0: off) of windows of `window` messages.
    pub(crate) fn new(bytes: u64, window: usize) -> Self {
        let cache = (bytes > 0).then(|| {
            let entries = usize::try_from((bytes / TYPICAL_ENTRY).max(16)).unwrap_or(usize::MAX);
            Arc::new(Cache::with_weighter(entries, bytes, ByBytes))
        });
        Self { cache, window }
    }

    /// The session and history of `session` if the lock just taken with `fence` is the next one
    /// after the lock its entry was stored under.
    pub(crate) fn lookup(&self, session: &SessionId, fence: u64) -> Option<(SessionInfo, History)> {
        let entry = self.cache.as_ref()?.get(session)?;
        if entry.fence.checked_add(1) != Some(fence) {
            return None;
        }
        let window = without_leading_tool_results(entry.history);
        let messages = window
            .iter()
            .map(|kept| Message::clone(&kept.message))
            .collect();
        let tokens = window.iter().map(|kept| kept.tokens).collect();
        let history = History {
            messages,
            tokens,
            window: Some(window),
        };
        Some((entry.info, history))
    }

    /// The history a turn is sent from the window `stored` read from the store.
    pub(crate) fn read_back(&self, mut stored: Vec<StoredMessage>) -> History {
        let first_kept = first_kept(stored.iter().map(|stored| stored.message.role));
        stored.drain(..first_kept);
        let tokens = stored.iter().map(|stored| stored.context_tokens).collect();
        let messages: Vec<Message> = stored.into_iter().map(|stored| stored.message).collect();
        let window = self.cache.is_some().then(|| {
            messages
                .iter()
                .zip(&tokens)
                .map(|(message, &tokens)| Kept {
                    message: Arc::new(message.clone()),
                    tokens,
                })
                .collect()
        });
        History {
            messages,
            tokens,
            window,
        }
    }

    /// Forgets `session` (its store failed, or answered something unexpected).
    pub(crate) fn forget(&self, session: &SessionId) {
        if let Some(cache) = &self.cache {
            cache.remove(session);
        }
    }

    /// Keeps what the next turn of `session` sends after a turn was stored under the lock
    /// `fence`: the window `sent` the turn was sent followed by the `turn`'s messages (with their
    /// counts), cut to the window's last messages. Cutting a window that started after some tool
    /// results may leave tool results first again; the turn that reads it drops them, as it does
    /// for a window read from the store, so both are the same.
    pub(crate) fn store(
        &self,
        session: &SessionId,
        fence: u64,
        info: SessionInfo,
        sent: &Window,
        turn: Turn,
    ) {
        let Some(cache) = &self.cache else {
            return;
        };
        let skip = (sent.len() + turn.messages.len()).saturating_sub(self.window);
        let counts = turn.context_tokens;
        let added = turn
            .messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| Kept {
                message: Arc::new(message),
                tokens: counts.get(index).copied(),
            });
        let history: Window = sent.iter().cloned().chain(added).skip(skip).collect();
        cache.insert(
            session.clone(),
            CachedHistory {
                fence,
                info,
                history,
            },
        );
    }
}

pub(crate) use agent_core::context::first_kept;

fn without_leading_tool_results(window: Window) -> Window {
    match first_kept(window.iter().map(|kept| kept.message.role)) {
        0 => window,
        first => window[first..].into(),
    }
}
