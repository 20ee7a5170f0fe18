//! The environment as a figment provider that keeps every value a string.
//!
//! figment's own `Env` provider parses values, so `OPENAI_API_KEY=12345` would become an integer
//! and `007` would become `7`. Here each known variable (tutorial name, `AGENT_*` name, or
//! `<NAME>_FILE` for secrets) is read verbatim and typed later, by the validation in `load`.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use crate::error::ConfigError;
use crate::keys::{CONFIG_FILE_VARIABLE, KEYS};

/// Known configuration values found in the environment.
#[derive(Debug, Default)]
pub(crate) struct EnvValues {
    /// Key path → (the variable it came from, its raw value).
    values: BTreeMap<&'static str, (String, String)>,
    /// `AGENT_*` variables that match no key (likely typos).
    pub(crate) unknown: Vec<String>,
}

impl EnvValues {
    /// Collects the known variables. Empty values count as unset, as Compose passes them for
    /// variables listed without a value.
    pub(crate) fn collect(vars: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut found = Self::default();
        for key in KEYS {
            for name in key.env_names() {
                let direct = vars.get(&name).filter(|value| !value.is_empty());
                let file_name = format!("{name}_FILE");
                let from_file = if key.is_secret() {
                    vars.get(&file_name).filter(|value| !value.is_empty())
                } else {
                    None
                };
                let value = match (direct, from_file) {
                    (Some(_), Some(_)) => return Err(ConfigError::Ambiguous { variable: name }),
                    (Some(value), None) => Some((name, value.clone())),
                    (None, Some(path)) => Some((file_name, read_secret_file(&name, path)?)),
                    (None, None) => None,
                };
                if let Some(value) = value {
                    found.values.insert(key.path, value);
                    break;
                }
            }
        }
        found.unknown = vars
            .keys()
            .filter(|name| name.starts_with("AGENT_") && !is_known(name))
            .cloned()
            .collect();
        Ok(found)
    }

    /// The variable that set this key, if the environment set it.
    pub(crate) fn variable_for(&self, path: &str) -> Option<&str> {
        self.values.get(path).map(|(variable, _)| variable.as_str())
    }
}

fn is_known(name: &str) -> bool {
    name == CONFIG_FILE_VARIABLE
        || crate::keys::DEPLOYMENT_VARIABLES.contains(&name)
        || KEYS.iter().any(|key| {
            let prefixed = key.prefixed_env_name();
            name == prefixed || (key.is_secret() && name.strip_suffix("_FILE") == Some(&prefixed))
        })
}

/// Reads a secret file; one trailing newline (as editors and `echo` add) is not part of it.
fn read_secret_file(variable: &str, path: &str) -> Result<String, ConfigError> {
    let contents = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        variable: variable.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let trimmed = contents.strip_suffix('\n').unwrap_or(&contents);
    Ok(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned())
}

impl Provider for EnvValues {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (path, (_, value)) in &self.values {
            insert_nested(&mut root, path, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(root))
    }
}

pub(crate) fn insert_nested(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, child) = child {
                insert_nested(child, rest, value);
            }
        }
    }
}
