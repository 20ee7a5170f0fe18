//! The one error type of this crate: why the configuration cannot be used.

/// A configuration problem. `Display` is one line that names the variable (or file key) and the
/// problem, and never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is present but unusable.
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
    /// A required value is missing (production profile).
    #[error("{origin} is required in the production profile: {hint}")]
    Missing { origin: String, hint: String },
    /// Both `NAME` and `NAME_FILE` are set for one secret.
    #[error("{variable} and {variable}_FILE are both set; set only one of them")]
    Ambiguous { variable: String },
    /// `NAME_FILE` names a file that cannot be read.
    #[error("{variable}_FILE: cannot read the secret file {path}")]
    SecretFile {
        variable: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The TOML file (`AGENT_CONFIG`) is missing or malformed.
    #[error("AGENT_CONFIG: cannot use the configuration file {path}")]
    File {
        path: String,
        #[source]
        source: Box<figment::Error>,
    },
}
