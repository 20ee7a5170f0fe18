//! Server-sent events as the tests and the system checks read them: one reader, on
//! eventsource-stream (the parser agent-core's OpenAI client uses), for every stream they check.

use std::convert::Infallible;

use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt, stream};

/// One event: its name (`message` when the stream gave none), its data, and its `id:` (empty when
/// the stream gave none: the last one seen, as the spec's last event id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub id: String,
}

impl SseEvent {
    /// The data as JSON (`Null` when it is not JSON, such as `[DONE]`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_default()
    }
}

/// Every whole event of a response body, in order (comments such as keep-alives are not events;
/// an event cut off before its blank line is not one either).
pub fn events(body: &str) -> Vec<SseEvent> {
    let bytes = bytes::Bytes::copy_from_slice(body.as_bytes());
    stream::iter([Ok::<_, Infallible>(bytes)])
        .eventsource()
        .filter_map(|event| async move { event.ok() })
        .map(|event| SseEvent {
            event: event.event,
            data: event.data,
            id: event.id,
        })
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap_or_default()
}

/// The names of the events of `body`, in order.
pub fn names(body: &str) -> Vec<String> {
    events(body).into_iter().map(|event| event.event).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_unnamed_events_are_read_and_comments_and_cut_events_skipped() {
        let body = "event: delta\ndata: {\"text\":\"a\"}\n\n: keep-alive\n\ndata: [DONE]\n\nevent: cut\ndata: x";
        assert_eq!(
            events(body),
            [
                SseEvent {
                    event: "delta".into(),
                    data: "{\"text\":\"a\"}".into(),
                    id: String::new(),
                },
                SseEvent {
                    event: "message".into(),
                    data: "[DONE]".into(),
                    id: String::new(),
                },
            ]
        );
        assert_eq!(events(body)[0].json()["text"], "a");
    }
}
