//! Which tools an agent has: names or globs (`tickets__*`) over the registry's tools, applied
//! where a turn takes its tools, so a tool outside them is neither offered nor run.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::ToolError;

/// An agent's tool patterns, compiled (globset: `*`, `?`, `[…]`; a name is a pattern too).
#[derive(Debug, Clone)]
pub struct ToolFilter {
    patterns: Vec<String>,
    set: GlobSet,
}

impl ToolFilter {
    /// Compiles `patterns`; an invalid glob is refused with its problem.
    pub fn new(patterns: &[String]) -> Result<Self, ToolError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = Glob::new(pattern).map_err(|error| ToolError::InvalidFilter {
                pattern: pattern.clone(),
                problem: error.kind().to_string(),
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|error| ToolError::InvalidFilter {
            pattern: patterns.join(", "),
            problem: error.to_string(),
        })?;
        Ok(Self {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// Whether the tool `name` is one of them.
    pub fn allows(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The patterns that could name no tool of a registry with the fixed tools `fixed` and MCP
    /// tools named `<prefix>__<tool>` for each of `mcp_prefixes` (an MCP server's tools are known
    /// only once it answers, so a pattern within its prefix is taken on trust).
    pub fn unmatched<'a>(
        &'a self,
        fixed: &'a [&str],
        mcp_prefixes: &'a [&str],
    ) -> impl Iterator<Item = &'a str> {
        self.patterns.iter().map(String::as_str).filter(|pattern| {
            let matcher = Glob::new(pattern).map(|glob| glob.compile_matcher());
            let Ok(matcher) = matcher else {
                return true;
            };
            let fixed_match = fixed.iter().any(|name| matcher.is_match(name));
            let literal = pattern
                .find(['*', '?', '[', '{', '\\'])
                .map_or(*pattern, |end| &pattern[..end]);
            let mcp_match = mcp_prefixes.iter().any(|prefix| {
                let tools = format!("{prefix}__");
                literal.starts_with(&tools) || tools.starts_with(literal)
            });
            !fixed_match && !mcp_match
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> ToolFilter {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        ToolFilter::new(&patterns).expect("valid patterns")
    }

    #[test]
    fn names_and_globs_match_tool_names() {
        let filter = filter(&["calculator", "tickets__*"]);
        assert!(filter.allows("calculator"));
        assert!(filter.allows("tickets__open"));
        assert!(!filter.allows("current_time"));
        assert!(!filter.allows("docs__search"));
        assert!(!filter.allows("calculator2"));
    }

    #[test]
    fn an_invalid_glob_is_refused() {
        let error = ToolFilter::new(&["tickets__[".to_owned()]).unwrap_err();
        assert!(error.to_string().contains("tickets__["), "{error}");
    }

    #[test]
    fn patterns_that_can_match_nothing_are_reported() {
        let filter = filter(&["calculator", "tickets__*", "docs__search", "t*", "nothing"]);
        let unmatched: Vec<&str> = filter
            .unmatched(&["calculator", "current_time"], &["tickets"])
            .collect();
        assert_eq!(unmatched, ["docs__search", "nothing"]);
    }
}
