//! What an MCP tool is called in the agent: `<prefix>__<tool>` within OpenAI's function-name
//! rules (`[a-zA-Z0-9_-]{1,64}`). Other characters become `_`; a name too long is cut and given a
//! short hash of the whole name, so two long names that share a beginning stay apart. The hash is
//! FNV-1a: stable across processes, versions and replicas (they must all name a tool alike).

/// The longest function name OpenAI accepts.
pub(crate) const MAX_LEN: usize = 64;

/// The agent's name for `tool` of the server with `prefix`.
pub(crate) fn agent_name(prefix: &str, tool: &str) -> String {
    let full = format!("{prefix}__{tool}");
    let mut name: String = full
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '_' || character == '-' {
                character
            } else {
                '_'
            }
        })
        .collect();
    if name.len() > MAX_LEN {
        let suffix = format!("_{:08x}", fnv1a(full.as_bytes()) as u32);
        // Only ASCII is left, so any byte index is a character boundary.
        name.truncate(MAX_LEN - suffix.len());
        name.push_str(&suffix);
    }
    name
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        (1..=MAX_LEN).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn a_plain_name_is_prefixed_and_kept() {
        assert_eq!(agent_name("docs", "search"), "docs__search");
        assert_eq!(agent_name("fs", "read-file_2"), "fs__read-file_2");
    }

    #[test]
    fn characters_outside_the_rules_become_underscores() {
        let name = agent_name("gh", "repos.list/ünïcode tool");
        assert_eq!(name, "gh__repos_list__n_code_tool");
        assert!(valid(&name));
    }

    #[test]
    fn a_long_name_is_cut_with_a_hash_that_tells_apart_names_sharing_a_beginning() {
        let long = "a".repeat(80);
        let first = agent_name("server", &format!("{long}_one"));
        let second = agent_name("server", &format!("{long}_two"));
        assert_eq!(first.len(), MAX_LEN);
        assert!(valid(&first) && valid(&second));
        assert_ne!(first, second);
        assert!(first.starts_with("server__aaaa"));
        // Stable: the same input gives the same name (replicas agree).
        assert_eq!(first, agent_name("server", &format!("{long}_one")));
    }

    #[test]
    fn a_name_of_exactly_the_limit_is_not_cut() {
        let tool = "t".repeat(MAX_LEN - "p__".len());
        assert_eq!(agent_name("p", &tool), format!("p__{tool}"));
        assert_eq!(agent_name("p", &format!("{tool}x")).len(), MAX_LEN);
    }
}
