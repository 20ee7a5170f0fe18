//! `require_approval` on a tool source (each `[[http_tools]]` and `[[mcp_servers]]` entry, and
//! `[builtin_tools]`), in the Responses API's syntax: `"always"`, `"never"`, `{ always = {
//! tool_names = [...] } }` (only these), `{ never = { tool_names = [...] } }` (all but these).

use figment::Figment;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::tables::invalid;

/// Which tools of a source need the client's approval before a call to one runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequireApproval {
    #[default]
    Never,
    Always,
    /// Only the tools named.
    Only(Vec<String>),
    /// Every tool but those named.
    Except(Vec<String>),
}

impl RequireApproval {
    /// Whether a call to `tool` (its name within its source: an MCP server's own name for it)
    /// needs approval.
    pub fn applies(&self, tool: &str) -> bool {
        match self {
            Self::Never => false,
            Self::Always => true,
            Self::Only(names) => names.iter().any(|name| name == tool),
            Self::Except(names) => !names.iter().any(|name| name == tool),
        }
    }

    pub fn is_never(&self) -> bool {
        matches!(self, Self::Never) || matches!(self, Self::Only(names) if names.is_empty())
    }

    /// The tool names it lists.
    pub fn names(&self) -> &[String] {
        match self {
            Self::Only(names) | Self::Except(names) => names,
            Self::Never | Self::Always => &[],
        }
    }
}

impl std::fmt::Display for RequireApproval {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Never => formatter.write_str("never"),
            Self::Always => formatter.write_str("always"),
            Self::Only(names) => write!(formatter, "only [{}]", names.join(", ")),
            Self::Except(names) => write!(formatter, "all but [{}]", names.join(", ")),
        }
    }
}

/// `require_approval` as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawApproval {
    Word(String),
    Filter(RawFilter),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilter {
    #[serde(default)]
    always: Option<RawNames>,
    #[serde(default)]
    never: Option<RawNames>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNames {
    tool_names: Vec<String>,
}

/// The policy `raw` declares for the entry at `origin`; `known`: the only tool names it may list,
/// when they are known before the tools are (an HTTP tool's own name).
pub(crate) fn parse(
    origin: &str,
    raw: Option<RawApproval>,
    known: Option<&[&str]>,
) -> Result<RequireApproval, ConfigError> {
    let policy = match raw {
        None => RequireApproval::Never,
        Some(RawApproval::Word(word)) => match word.as_str() {
            "always" => RequireApproval::Always,
            "never" => RequireApproval::Never,
            _ => {
                return Err(invalid(
                    origin,
                    format!(
                        "require_approval '{word}' is not \"always\", \"never\", {{ always = {{ \
                         tool_names = [...] }} }} or {{ never = {{ tool_names = [...] }} }}"
                    ),
                ));
            }
        },
        Some(RawApproval::Filter(RawFilter { always, never })) => {
            let (always, never) = (always.map(|n| n.tool_names), never.map(|n| n.tool_names));
            if let (Some(always), Some(never)) = (&always, &never)
                && let Some(both) = always.iter().find(|name| never.contains(name))
            {
                return Err(invalid(
                    origin,
                    format!("require_approval names '{both}' under both always and never"),
                ));
            }
            match (always, never) {
                (Some(always), _) => RequireApproval::Only(always),
                (None, Some(never)) => RequireApproval::Except(never),
                (None, None) => {
                    return Err(invalid(
                        origin,
                        "require_approval = {} names neither always nor never",
                    ));
                }
            }
        }
    };
    if let Some(empty) = policy.names().iter().find(|name| name.is_empty()) {
        return Err(invalid(
            origin,
            format!("require_approval lists an empty tool name ({empty:?})"),
        ));
    }
    if let Some(known) = known
        && let Some(unknown) = policy
            .names()
            .iter()
            .find(|name| !known.contains(&name.as_str()))
    {
        return Err(invalid(
            origin,
            format!(
                "require_approval names '{unknown}', which is not a tool of this entry ({})",
                known.join(", ")
            ),
        ));
    }
    Ok(policy)
}

/// The key of the built-in tools' table in the file.
pub(crate) const BUILTIN_KEY: &str = "builtin_tools";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuiltins {
    #[serde(default)]
    require_approval: Option<RawApproval>,
}

/// `[builtin_tools]`: which built-in tools need approval (their names are checked against the
/// built-in tools where those are known: at startup).
pub(crate) fn builtins(figment: &Figment, file: &str) -> Result<RequireApproval, ConfigError> {
    let origin = format!("{BUILTIN_KEY} in {file}");
    let Ok(value) = figment.find_value(BUILTIN_KEY) else {
        return Ok(RequireApproval::Never);
    };
    let raw: RawBuiltins = value.deserialize().map_err(|error| {
        invalid(
            &origin,
            format!("expected a [{BUILTIN_KEY}] table: {error}"),
        )
    })?;
    parse(&origin, raw.require_approval, None)
}
