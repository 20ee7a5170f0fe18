//! A `tools/call` result as the text of the tool message: the text blocks joined, or the
//! structured content as JSON when there is no text (servers that give both send the same result
//! twice: the SDKs serialise structured results as text for older clients); images, audio and
//! binary resources are summarised, never inlined as base64. The whole is cut to the server's size
//! cap, saying so.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::Value;

/// The tool message's text for `result`, at most `max_bytes` long (plus the note on cutting).
pub(crate) fn render(result: &CallToolResult, max_bytes: usize) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(result.content.len() + 1);
    let has_text = result
        .content
        .iter()
        .any(|block| matches!(block, ContentBlock::Text(_)));
    if let Some(structured) = result.structured_content.as_ref().filter(|_| !has_text) {
        parts.push(structured.to_string());
    }
    for block in &result.content {
        match block {
            ContentBlock::Text(text) => parts.push(text.text.clone()),
            ContentBlock::Image(image) => parts.push(format!(
                "[image: {}, {} bytes]",
                image.mime_type,
                decoded_len(&image.data)
            )),
            ContentBlock::Audio(audio) => parts.push(format!(
                "[audio: {}, {} bytes]",
                audio.mime_type,
                decoded_len(&audio.data)
            )),
            ContentBlock::Resource(embedded) => match &embedded.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    parts.push(format!("[resource {uri}]\n{text}"));
                }
                ResourceContents::BlobResourceContents {
                    uri,
                    mime_type,
                    blob,
                    ..
                } => parts.push(format!(
                    "[resource {uri}: {}, {} bytes]",
                    mime_type.as_deref().unwrap_or("binary"),
                    decoded_len(blob)
                )),
                other => parts.push(format!("[resource: {}]", kind(other))),
            },
            ContentBlock::ResourceLink(link) => {
                parts.push(format!("[resource link {}: {}]", link.uri, link.name));
            }
            other => parts.push(format!("[content: {}]", kind(other))),
        }
    }
    cap(parts.join("\n"), max_bytes)
}

/// A content block of a kind this version does not know, named by its JSON `type`.
fn kind(content: &impl serde::Serialize) -> String {
    serde_json::to_value(content)
        .ok()
        .and_then(|value| value.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The size of base64 `data` once decoded, without decoding it.
fn decoded_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|byte| *byte == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

/// `text` cut to `max_bytes` at a character boundary, with a note saying how much was left out.
fn cap(mut text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let total = text.len();
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(
        "\n[truncated: the result has {total} bytes, the limit is {max_bytes}]"
    ));
    text
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CallToolResult, ContentBlock};
    use serde_json::json;

    use super::*;

    fn result(value: serde_json::Value) -> CallToolResult {
        serde_json::from_value(value).expect("a CallToolResult")
    }

    #[test]
    fn text_blocks_are_joined() {
        let result = CallToolResult::success(vec![
            ContentBlock::text("first"),
            ContentBlock::text("second"),
        ]);
        assert_eq!(render(&result, 1000), "first\nsecond");
    }

    #[test]
    fn structured_content_is_json_when_there_is_no_text_and_not_repeated_when_there_is() {
        let alone = result(json!({"content": [], "structuredContent": {"sum": 5}}));
        assert_eq!(render(&alone, 1000), r#"{"sum":5}"#);
        let with_text = result(json!({
            "content": [{"type": "text", "text": "5"}],
            "structuredContent": {"result": 5}
        }));
        assert_eq!(render(&with_text, 1000), "5");
    }

    #[test]
    fn images_audio_and_blobs_are_summarised() {
        let result = result(json!({
            "content": [
                {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
                {"type": "audio", "data": "aGk=", "mimeType": "audio/wav"},
                {"type": "resource", "resource": {"uri": "file:///a.bin", "blob": "AAAA"}},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
                {"type": "resource_link", "uri": "file:///b", "name": "b"}
            ]
        }));
        assert_eq!(
            render(&result, 1000),
            "[image: image/png, 5 bytes]\n[audio: audio/wav, 2 bytes]\n\
             [resource file:///a.bin: binary, 3 bytes]\n[resource file:///a.txt]\nhello\n\
             [resource link file:///b: b]"
        );
    }

    #[test]
    fn a_long_result_is_cut_at_a_character_boundary_and_says_so() {
        let result = CallToolResult::success(vec![ContentBlock::text("é".repeat(100))]);
        let text = render(&result, 11);
        assert!(text.starts_with("ééééé\n[truncated: the result has 200 bytes, the limit is 11]"));
    }
}
