//! The published request rules (`/openapi.json`) agree with the validation.

use super::{AgentRequest, MESSAGE_PATTERN};

fn accepted(message: &str) -> bool {
    AgentRequest {
        message: message.to_owned(),
        session_id: None,
        response_format: None,
        background: false,
        tools: None,
        agent: None,
    }
    .checked(100, "anonymous")
    .is_ok()
}

#[test]
fn the_message_pattern_says_exactly_what_validation_accepts() {
    let pattern = regex::Regex::new(MESSAGE_PATTERN).unwrap();
    // Every White_Space character, characters other validators call white space but Unicode
    // does not (BOM, information separators, zero-width space), NUL, and plain text.
    let mut characters: Vec<char> = (0..=0x3000_u32)
        .filter_map(char::from_u32)
        .filter(|c| c.is_whitespace())
        .collect();
    characters.extend([
        '\u{feff}', '\u{1c}', '\u{1f}', '\u{200b}', '\0', 'a', 'é', '😀',
    ]);
    for first in &characters {
        for second in &characters {
            for message in [first.to_string(), format!("{first}{second}")] {
                assert_eq!(
                    pattern.is_match(&message),
                    accepted(&message),
                    "{message:?}"
                );
            }
        }
    }
}

#[test]
fn the_cursor_pattern_says_exactly_what_parse_cursor_accepts_and_cursors_round_trip() {
    use super::{CURSOR_PATTERN, cursor_text, parse_cursor};
    let pattern = regex::Regex::new(&CURSOR_PATTERN).unwrap();
    let cases = [
        "1764460000123456789.plans",
        "0.a",
        "9999999999999999999.x",
        "99999999999999999999.x",
        "1.",
        ".plans",
        "1.plans.v2",
        "1..",
        "1.a b",
        "abc.plans",
        "",
    ];
    for text in cases {
        assert_eq!(
            pattern.is_match(text),
            parse_cursor(text, "alice").is_ok(),
            "{text:?}"
        );
    }
    let cursor = parse_cursor("1764460000123456789.plans", "alice").unwrap();
    assert_eq!(cursor.id.as_str(), "alice:plans");
    assert_eq!(cursor_text(&cursor), "1764460000123456789.plans");
}
