//! Session ids: server-generated UUIDs, or a client's own id of 1 to 128 of `[A-Za-z0-9._-]`,
//! other than `.` and `..` (URL clients rewrite those path segments, so such a session could
//! not be read back by `GET /sessions/{id}`).
//!
//! Ids are per owner (the caller that uses them): the same id of two callers names two sessions,
//! stored as `owner:id` ([`SessionId::owned_by`]). The anonymous caller's ids are stored as they
//! are, so sessions made before callers had names stay the anonymous caller's.

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

    /// An id as stored: [`SessionId::parse`]'s, or `owner:id` with an owner of 1 to 64 of
    /// `[A-Za-z0-9._-]`.
    pub fn parse_stored(text: &str) -> Result<Self, InvalidSessionId> {
        let Some((owner, id)) = text.split_once(':') else {
            return Self::parse(text);
        };
        let owner_valid = (1..=64).contains(&owner.len())
            && owner
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
        if owner_valid {
            Ok(Self::parse(id)?.owned_by(owner))
        } else {
            Err(InvalidSessionId)
        }
    }

    /// The caller of requests made without API keys, who owns every session stored unscoped.
    pub const ANONYMOUS: &str = "anonymous";

    /// This id as `owner` uses it: `owner:id`, or the id itself for [`SessionId::ANONYMOUS`].
    /// `owner` is a caller name (no `:`), and `self` an id as the client gave it.
    #[must_use]
    pub fn owned_by(&self, owner: &str) -> Self {
        if owner == Self::ANONYMOUS {
            self.clone()
        } else {
            Self(format!("{owner}:{}", self.0))
        }
    }

    /// Whose session this is.
    pub fn owner(&self) -> &str {
        self.0
            .split_once(':')
            .map_or(Self::ANONYMOUS, |(owner, _)| owner)
    }

    /// The id as its owner knows it (without the owner).
    pub fn local(&self) -> &str {
        Self::local_part(&self.0)
    }

    /// [`SessionId::local`] of a stored id's text (as an error message carries it).
    pub fn local_part(stored: &str) -> &str {
        stored.split_once(':').map_or(stored, |(_, id)| id)
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

    #[test]
    fn ids_are_per_owner_and_the_anonymous_callers_are_stored_as_they_are() {
        let id = SessionId::parse("chat-1").unwrap();
        let alice = id.owned_by("alice");
        assert_eq!(alice.as_str(), "alice:chat-1");
        assert_eq!((alice.owner(), alice.local()), ("alice", "chat-1"));
        assert_ne!(alice, id.owned_by("bob"));
        let anonymous = id.owned_by(SessionId::ANONYMOUS);
        assert_eq!(anonymous, id);
        assert_eq!(
            (anonymous.owner(), anonymous.local()),
            ("anonymous", "chat-1")
        );
        assert!(
            SessionId::parse("alice:chat-1").is_err(),
            "a client cannot name another owner's session"
        );
        assert_eq!(SessionId::parse_stored("alice:chat-1"), Ok(alice));
        assert_eq!(SessionId::parse_stored("chat-1"), Ok(id));
        for corrupt in [":chat-1", "alice:", "a b:chat-1", "alice:x:y"] {
            assert!(SessionId::parse_stored(corrupt).is_err(), "{corrupt}");
        }
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
