//! Session ids: server-generated UUIDs, or a client's own id of 1 to 128 of `[A-Za-z0-9._-]`,
//! other than `.` and `..` (URL clients rewrite those path segments, so such a session could
//! not be read back by `GET /sessions/{id}`).

use std::fmt;

/// A validated session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

/// Why a text is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a session id is 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', other than '.' and '..'"
)]
pub struct InvalidSessionId;

impl SessionId {
    pub const MAX_LENGTH: usize = 128;

    /// The rule as a regular expression (without look-around, so every JSON Schema validator
    /// and generator takes it): an id starting with a character other than `.`, or with one `.`
    /// and then another character, or with `..` and at least one more character.
    pub const PATTERN: &str = r"^([A-Za-z0-9_-][A-Za-z0-9._-]{0,127}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,126}|\.\.[A-Za-z0-9._-]{1,126})$";

    pub fn parse(text: &str) -> Result<Self, InvalidSessionId> {
        let valid = (1..=Self::MAX_LENGTH).contains(&text.len())
            && text != "."
            && text != ".."
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidSessionId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::SessionId;

    #[test]
    fn session_ids_are_short_and_made_of_safe_characters() {
        let cases = [
            ("3f2c9a1e-5b7d-4c1a-9e8f-0a1b2c3d4e5f", true),
            ("user_42.chat-1", true),
            ("a", true),
            ("", false),
            ("../etc/passwd", false),
            ("x'; DROP TABLE sessions; --", false),
            ("white space", false),
            ("é", false),
            ("nul\0byte", false),
            (".", false),
            ("..", false),
            ("...", true),
            (".a", true),
            ("..a", true),
            ("a..", true),
        ];
        for (text, valid) in cases {
            assert_eq!(SessionId::parse(text).is_ok(), valid, "{text:?}");
        }
        assert!(SessionId::parse(&"a".repeat(128)).is_ok());
        assert!(SessionId::parse(&"a".repeat(129)).is_err());
    }

    /// The published pattern (in `/openapi.json`) and `parse` agree on every string of up to four
    /// characters over an alphabet with the edge cases, and at the length limits.
    #[test]
    fn the_pattern_says_exactly_what_parse_accepts() {
        let pattern = regex::Regex::new(SessionId::PATTERN).unwrap();
        let alphabet = ['a', '.', '-', '_', '9', ' ', '/', 'é'];
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|text| alphabet.iter().map(move |c| format!("{text}{c}")))
                .collect();
            texts.extend(longer);
        }
        texts.dedup();
        for length in [127, 128, 129] {
            for start in ["", ".", ".."] {
                texts.push(format!("{start}{}", "a".repeat(length - start.len())));
            }
        }
        for text in &texts {
            assert_eq!(
                pattern.is_match(text),
                SessionId::parse(text).is_ok(),
                "{text:?}"
            );
        }
    }
}
