//! Tests of every configuration rule: layering, tutorial names, `_FILE` secrets, validation
//! messages, profiles, redaction and unknown-variable warnings.

// figment::Jail closures return figment::Error, which is large; that is figment's API.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use figment::Jail;
use secrecy::ExposeSecret;

use crate::{
    ConfigError, Loaded, LogFormat, ModelProvider, Profile, load, load_from, load_server_address,
};

fn load_with(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load_from(
        vars.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    )
}

fn settings(vars: &[(&str, &str)]) -> crate::Settings {
    load_with(vars)
        .unwrap_or_else(|error| panic!("{vars:?} should load: {error}"))
        .settings
}

fn error(vars: &[(&str, &str)]) -> String {
    match load_with(vars) {
        Ok(_) => panic!("{vars:?} should be rejected"),
        Err(error) => error.to_string(),
    }
}

const PRODUCTION: &[(&str, &str)] = &[
    ("AGENT_PROFILE", "production"),
    ("DATABASE_URL", "postgres://agent:pw@db/agent"),
    ("REDIS_URL", "redis://cache:6379"),
    ("OPENAI_API_KEY", "sk-test"),
];

#[test]
fn with_nothing_set_the_embedded_defaults_apply() {
    let settings = settings(&[]);
    assert_eq!(settings.profile, Profile::Dev);
    assert_eq!(settings.server.host, "127.0.0.1");
    assert_eq!(settings.server.port, 8000);
    assert!(settings.server.workers >= 1);
    assert_eq!(settings.server.shutdown_delay, Duration::from_secs(1));
    assert_eq!(settings.server.drain_timeout, Duration::from_secs(8));
    assert!(
        settings.server.shutdown_delay + settings.server.drain_timeout < Duration::from_secs(10),
        "delay + drain must fit in Docker's default 10 s stop timeout"
    );
    assert_eq!(settings.model.name, "gpt-4o-mini");
    assert!(matches!(settings.model.provider, ModelProvider::Offline));
    assert!(settings.storage.database_url.is_none());
    assert!(settings.storage.redis_url.is_none());
    assert!(settings.api_keys.is_empty());
    assert!(settings.enable_streaming);
    assert!(!settings.log.enable_tracing);
    assert_eq!(settings.log.format, LogFormat::Auto);
}

#[test]
fn the_tutorials_variable_names_work_unchanged() {
    let settings = settings(&[
        ("HOST", "0.0.0.0"),
        ("PORT", "9001"),
        ("WORKERS", "3"),
        ("MODEL_NAME", "llama3"),
        ("TEMPERATURE", "0.2"),
        ("MAX_TOKENS", "512"),
        ("ENABLE_STREAMING", "false"),
        ("ENABLE_TRACING", "true"),
        ("OPENAI_API_KEY", "sk-abc"),
        ("OPENAI_BASE_URL", "http://localhost:11434/v1"),
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("REDIS_URL", "redis://localhost:6379"),
    ]);
    assert_eq!(settings.server.host, "0.0.0.0");
    assert_eq!(settings.server.port, 9001);
    assert_eq!(settings.server.workers, 3);
    assert_eq!(settings.model.name, "llama3");
    assert!((settings.model.temperature - 0.2).abs() < f32::EPSILON);
    assert_eq!(settings.model.max_tokens, 512);
    assert!(!settings.enable_streaming);
    assert!(settings.log.enable_tracing);
    let ModelProvider::OpenAiCompatible { base_url, api_key } = &settings.model.provider else {
        panic!("a configured key selects the OpenAI-compatible model");
    };
    assert_eq!(base_url.as_str(), "http://localhost:11434/v1");
    assert_eq!(
        api_key.as_ref().map(|key| key.expose_secret()),
        Some("sk-abc")
    );
    let storage = &settings.storage;
    assert_eq!(
        storage.database_url.as_ref().unwrap().expose_secret(),
        "postgres://u:p@localhost/db"
    );
    assert_eq!(
        storage.redis_url.as_ref().unwrap().expose_secret(),
        "redis://localhost:6379"
    );
}

#[test]
fn prefixed_names_reach_every_key_and_win_over_tutorial_names() {
    let settings = settings(&[
        ("PORT", "9001"),
        ("AGENT_SERVER__PORT", "9002"),
        ("AGENT_SERVER__DRAIN_TIMEOUT", "250ms"),
        ("AGENT_HEALTH__CACHE_TTL", "0s"),
        ("AGENT_LOG_FORMAT", "json"),
    ]);
    assert_eq!(settings.server.port, 9002);
    assert_eq!(settings.server.drain_timeout, Duration::from_millis(250));
    assert_eq!(settings.health.cache_ttl, Duration::ZERO);
    assert_eq!(settings.log.format, LogFormat::Json);
}

#[test]
fn empty_values_count_as_unset() {
    let settings = settings(&[("OPENAI_API_KEY", ""), ("DATABASE_URL", ""), ("PORT", "")]);
    assert!(matches!(settings.model.provider, ModelProvider::Offline));
    assert!(settings.storage.database_url.is_none());
    assert_eq!(settings.server.port, 8000);
}

#[test]
fn secrets_that_look_like_numbers_stay_verbatim() {
    let settings = settings(&[("OPENAI_API_KEY", "007"), ("AGENT_API_KEYS", "12345,00042")]);
    let ModelProvider::OpenAiCompatible {
        api_key: Some(key), ..
    } = &settings.model.provider
    else {
        panic!("expected the OpenAI-compatible model");
    };
    assert_eq!(key.expose_secret(), "007");
    let keys: Vec<&str> = settings
        .api_keys
        .iter()
        .map(|key| key.secret.expose_secret())
        .collect();
    assert_eq!(keys, ["12345", "00042"]);
}

#[test]
fn api_keys_are_comma_separated_and_none_may_be_empty() {
    let keys = settings(&[("AGENT_API_KEYS", "first-key, second-key")]).api_keys;
    let keys: Vec<(Option<&str>, &str)> = keys
        .iter()
        .map(|key| (key.caller.as_deref(), key.secret.expose_secret()))
        .collect();
    assert_eq!(keys, [(None, "first-key"), (None, "second-key")]);
    assert!(error(&[("AGENT_API_KEYS", "a,,b")]).starts_with("AGENT_API_KEYS: "));
    assert!(error(&[("AGENT_API_KEYS", "alice:")]).starts_with("AGENT_API_KEYS: "));
}

/// `name:key` names the caller; keys sharing a name are one caller. Text before a `:` that is not
/// a caller name is part of the key.
#[test]
fn api_keys_may_name_their_caller() {
    let keys = settings(&[(
        "AGENT_API_KEYS",
        "alice:key1, alice:key2,ci-bot:key:with:colons, plain, not a name:key",
    )])
    .api_keys;
    let keys: Vec<(Option<&str>, &str)> = keys
        .iter()
        .map(|key| (key.caller.as_deref(), key.secret.expose_secret()))
        .collect();
    assert_eq!(
        keys,
        [
            (Some("alice"), "key1"),
            (Some("alice"), "key2"),
            (Some("ci-bot"), "key:with:colons"),
            (None, "plain"),
            (None, "not a name:key"),
        ]
    );
    for (name, valid) in [
        ("a", true),
        ("A.b_c-9", true),
        ("", false),
        ("a b", false),
        (&"x".repeat(65), false),
    ] {
        assert_eq!(crate::ApiKey::is_caller_name(name), valid, "{name:?}");
    }
}

#[test]
fn invalid_values_stop_loading_with_one_line_naming_the_variable() {
    let cases = [
        ("PORT", "abc", "PORT: 'abc' is not a port number"),
        ("PORT", "70000", "PORT: '70000' is not a port number"),
        ("AGENT_SERVER__PORT", "-1", "AGENT_SERVER__PORT: "),
        ("HOST", "my host", "HOST: 'my host' is not an IP address"),
        ("WORKERS", "2000", "WORKERS: 2000 is out of range"),
        ("WORKERS", "many", "WORKERS: 'many' is not a whole number"),
        (
            "TEMPERATURE",
            "3",
            "TEMPERATURE: must be a number from 0 to 2",
        ),
        ("TEMPERATURE", "hot", "TEMPERATURE: 'hot' is not a number"),
        ("MAX_TOKENS", "0", "MAX_TOKENS: 0 is out of range"),
        (
            "ENABLE_STREAMING",
            "maybe",
            "ENABLE_STREAMING: 'maybe' is not true or false",
        ),
        (
            "ENABLE_TRACING",
            "2",
            "ENABLE_TRACING: '2' is not true or false",
        ),
        (
            "AGENT_SERVER__DRAIN_TIMEOUT",
            "forever",
            "AGENT_SERVER__DRAIN_TIMEOUT: 'forever' is not a duration",
        ),
        (
            "AGENT_SERVER__SHUTDOWN_DELAY",
            "2h",
            "AGENT_SERVER__SHUTDOWN_DELAY: '2h' is out of range",
        ),
        (
            "AGENT_HEALTH__CHECK_TIMEOUT",
            "0s",
            "AGENT_HEALTH__CHECK_TIMEOUT: '0s' is out of range",
        ),
        (
            "AGENT_PROFILE",
            "staging",
            "AGENT_PROFILE: 'staging' is not one of: dev, production",
        ),
        (
            "AGENT_LOG_FORMAT",
            "xml",
            "AGENT_LOG_FORMAT: 'xml' is not one of: auto, json, pretty",
        ),
        (
            "AGENT_MODEL__PROVIDER",
            "anthropic",
            "AGENT_MODEL__PROVIDER: 'anthropic' is not one of: auto, openai, offline",
        ),
        (
            "OPENAI_BASE_URL",
            "ftp://models",
            "OPENAI_BASE_URL: 'ftp://models' is not an http(s) URL",
        ),
        ("MODEL_NAME", " ", "MODEL_NAME: must not be empty"),
    ];
    for (variable, value, expected) in cases {
        let message = error(&[(variable, value)]);
        assert!(
            message.starts_with(expected),
            "{variable}={value}: got {message:?}"
        );
        assert!(
            !message.contains('\n'),
            "{variable}={value}: not one line: {message:?}"
        );
    }
}

#[test]
fn invalid_secrets_are_named_but_never_echoed() {
    let cases = [
        (
            "DATABASE_URL",
            "mysql://user:hunter2-secret@db/app",
            "DATABASE_URL: the scheme must be postgres://",
        ),
        (
            "DATABASE_URL",
            "hunter2-secret",
            "DATABASE_URL: not a valid URL",
        ),
        (
            "REDIS_URL",
            "http://:hunter2-secret@cache",
            "REDIS_URL: the scheme must be redis://",
        ),
        (
            "OPENAI_API_KEY",
            " hunter2-secret",
            "OPENAI_API_KEY: has leading or trailing white space",
        ),
    ];
    for (variable, value, expected) in cases {
        let message = error(&[(variable, value)]);
        assert!(message.starts_with(expected), "{variable}: got {message:?}");
        assert!(
            !message.contains("hunter2"),
            "{variable}: the secret leaked: {message:?}"
        );
    }
}

#[test]
fn the_production_profile_refuses_every_fallback() {
    let without = |name: &str| -> Vec<(&str, &str)> {
        PRODUCTION
            .iter()
            .copied()
            .filter(|(variable, _)| *variable != name)
            .collect()
    };
    let cases = [
        (
            "DATABASE_URL",
            "DATABASE_URL is required in the production profile",
        ),
        (
            "REDIS_URL",
            "REDIS_URL is required in the production profile",
        ),
        (
            "OPENAI_API_KEY",
            "OPENAI_API_KEY is required in the production profile",
        ),
    ];
    for (missing, expected) in cases {
        let message = error(&without(missing));
        assert!(
            message.starts_with(expected),
            "without {missing}: got {message:?}"
        );
    }
    let mut explicit_offline = PRODUCTION.to_vec();
    explicit_offline.push(("AGENT_MODEL__PROVIDER", "offline"));
    assert!(error(&explicit_offline).contains("offline model is for dev only"));

    let settings = settings(PRODUCTION);
    assert_eq!(settings.profile, Profile::Production);
    assert!(matches!(
        settings.model.provider,
        ModelProvider::OpenAiCompatible { .. }
    ));
}

#[test]
fn a_base_url_alone_selects_the_openai_compatible_model_without_a_key() {
    let local = settings(&[("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")]);
    let ModelProvider::OpenAiCompatible { base_url, api_key } = local.model.provider else {
        panic!("a base URL selects the OpenAI-compatible model");
    };
    assert_eq!(base_url.as_str(), "http://127.0.0.1:8080/v1");
    assert!(api_key.is_none());

    let forced = settings(&[
        ("OPENAI_API_KEY", "sk-x"),
        ("AGENT_MODEL__PROVIDER", "offline"),
    ]);
    assert!(matches!(forced.model.provider, ModelProvider::Offline));
}

#[test]
fn secrets_never_appear_in_debug_output_or_the_effective_listing() {
    let mut vars = PRODUCTION.to_vec();
    vars.push(("AGENT_API_KEYS", "service-key-hunter2"));
    let loaded = load_with(&vars).unwrap();
    let debug = format!("{:?}", loaded.settings);
    for secret in ["sk-test", "pw@db", "cache:6379", "service-key-hunter2"] {
        assert!(!debug.contains(secret), "{secret} leaked into {debug}");
    }
    let listing = format!("{:?}", loaded.effective);
    assert!(!listing.contains("hunter2") && !listing.contains("sk-test"));
    let database = loaded
        .effective
        .iter()
        .find(|value| value.key == "storage.database_url");
    let database = database.unwrap();
    assert_eq!(
        (database.value.as_str(), database.origin.as_str()),
        ("[redacted]", "DATABASE_URL")
    );
    let port = loaded
        .effective
        .iter()
        .find(|value| value.key == "server.port")
        .unwrap();
    assert_eq!(
        (port.value.as_str(), port.origin.as_str()),
        ("8000", "default")
    );
}

#[test]
fn unknown_agent_variables_are_reported_as_warnings() {
    let loaded = load_with(&[
        ("AGENT_SERVER__PROT", "9000"),
        ("AGENT_CONFIG", ""),
        ("AGENT_PROFILE", "dev"),
        ("UNRELATED", "x"),
    ])
    .unwrap();
    assert_eq!(
        loaded.warnings,
        ["unknown configuration variable AGENT_SERVER__PROT is ignored"]
    );
}

#[test]
fn secrets_are_read_from_file_variables() {
    Jail::expect_with(|jail| {
        // The suite runs with DATABASE_URL and REDIS_URL set; start from an empty environment.
        jail.clear_env();
        jail.create_file("openai-key", "sk-from-file\n")?;
        jail.create_file("api-keys", "k1,k2")?;
        jail.create_file("empty-keys", "\n")?;
        jail.set_env("OPENAI_API_KEY_FILE", "openai-key");
        jail.set_env("AGENT_API_KEYS_FILE", "api-keys");
        let loaded = load().map_err(|error| error.to_string())?;
        assert!(
            loaded
                .warnings
                .iter()
                .all(|warning| !warning.contains("_FILE"))
        );
        let ModelProvider::OpenAiCompatible {
            api_key: Some(key), ..
        } = &loaded.settings.model.provider
        else {
            panic!("a key from a file selects the OpenAI-compatible model");
        };
        assert_eq!(
            key.expose_secret(),
            "sk-from-file",
            "one trailing newline is dropped"
        );
        assert_eq!(loaded.settings.api_keys.len(), 2);
        jail.set_env("AGENT_API_KEYS_FILE", "empty-keys");
        assert!(
            load()
                .map_err(|error| error.to_string())?
                .settings
                .api_keys
                .is_empty(),
            "an empty key file means no keys"
        );
        let origin = loaded
            .effective
            .iter()
            .find(|value| value.key == "model.api_key")
            .unwrap();
        assert_eq!(origin.origin, "OPENAI_API_KEY_FILE");
        Ok(())
    });
}

#[test]
fn a_secret_set_twice_or_from_a_missing_file_is_an_error() {
    Jail::expect_with(|jail| {
        // The suite runs with DATABASE_URL and REDIS_URL set; start from an empty environment.
        jail.clear_env();
        jail.create_file("db-url", "postgres://u:p@h/d")?;
        jail.set_env("DATABASE_URL", "postgres://u:p@h/d");
        jail.set_env("DATABASE_URL_FILE", "db-url");
        let message = load()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "DATABASE_URL and DATABASE_URL_FILE are both set; set only one of them"
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        // The suite runs with DATABASE_URL and REDIS_URL set; start from an empty environment.
        jail.clear_env();
        jail.set_env("REDIS_URL_FILE", "/nonexistent/redis-url");
        let message = load()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "REDIS_URL_FILE: cannot read the secret file /nonexistent/redis-url"
        );
        Ok(())
    });
}

#[test]
fn a_toml_file_overrides_defaults_and_the_environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        // The suite runs with DATABASE_URL and REDIS_URL set; start from an empty environment.
        jail.clear_env();
        jail.create_file(
            "agent.toml",
            r#"
            profile = "dev"
            [server]
            port = 7000
            workers = 2
            [model]
            name = "from-file"
            temperature = 1
            [mystery]
            setting = true
            "#,
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        jail.set_env("MODEL_NAME", "from-env");
        let loaded = load().map_err(|error| error.to_string())?;
        assert_eq!(loaded.settings.server.port, 7000);
        assert_eq!(loaded.settings.server.workers, 2);
        assert_eq!(loaded.settings.model.name, "from-env");
        assert!((loaded.settings.model.temperature - 1.0).abs() < f32::EPSILON);
        assert_eq!(
            loaded.warnings,
            ["unknown configuration key mystery.setting in agent.toml is ignored"]
        );
        let port = loaded
            .effective
            .iter()
            .find(|value| value.key == "server.port")
            .unwrap();
        assert!(port.origin.ends_with("agent.toml"), "{port:?}");
        Ok(())
    });
}

#[test]
fn an_invalid_value_in_the_file_names_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        // The suite runs with DATABASE_URL and REDIS_URL set; start from an empty environment.
        jail.clear_env();
        jail.create_file("agent.toml", "[server]\nport = \"eighty\"\n")?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        let message = load()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.starts_with("server.port in "), "{message}");
        assert!(
            message.contains("agent.toml: 'eighty' is not a port number"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn a_missing_or_malformed_config_file_is_an_error() {
    let message = error(&[("AGENT_CONFIG", "/nonexistent/agent.toml")]);
    assert_eq!(
        message,
        "AGENT_CONFIG: cannot use the configuration file /nonexistent/agent.toml"
    );
    Jail::expect_with(|jail| {
        // The suite runs with DATABASE_URL and REDIS_URL set; start from an empty environment.
        jail.clear_env();
        jail.create_file("broken.toml", "[server\nport = 1")?;
        jail.set_env("AGENT_CONFIG", "broken.toml");
        let error = load().err().ok_or("a malformed file must be rejected")?;
        assert!(error.to_string().starts_with("AGENT_CONFIG: "), "{error}");
        Ok(())
    });
}

#[test]
fn the_listen_address_loads_even_when_other_settings_do_not() {
    let vars = [
        ("TEMPERATURE", "hot"),
        ("HOST", "0.0.0.0"),
        ("PORT", "8123"),
    ];
    let owned = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()));
    assert_eq!(
        load_server_address(owned).unwrap(),
        ("0.0.0.0".to_owned(), 8123)
    );
}

#[test]
fn env_example_lists_every_key_and_only_known_variables() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example");
    let text = std::fs::read_to_string(&path).unwrap();
    let listed: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains('='))
        .filter_map(|line| line.split('=').next())
        .collect();
    for key in crate::KEYS {
        assert!(
            listed.contains(&key.display_name().as_str()),
            "{} is missing",
            key.display_name()
        );
    }
    // Where the example gives a value, it is the declared default.
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let Some(key) = crate::KEYS.iter().find(|key| key.display_name() == name) else {
            continue;
        };
        if !value.is_empty() {
            assert_eq!(Some(value), key.default, "{name} in .env.example");
        }
    }
    let known: Vec<String> = crate::KEYS.iter().map(crate::Key::display_name).collect();
    for name in listed {
        let is_known = known.iter().any(|known| known == name)
            || ["AGENT_CONFIG", "RUST_LOG"].contains(&name)
            || crate::keys::DEPLOYMENT_VARIABLES.contains(&name);
        assert!(
            is_known,
            "{name} in .env.example is not a configuration variable"
        );
    }
    // Loading the example as it is must work: it is what `cargo xtask up` starts from.
    let vars = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    load_from(vars).unwrap();
}

#[test]
fn turn_limits_and_retry_settings_load_with_their_defaults_and_overrides() {
    let defaults = settings(&[]);
    assert_eq!(
        (defaults.turn.max_steps, defaults.turn.max_parallel_tools),
        (8, 4)
    );
    assert_eq!(defaults.model.max_attempts, 3);
    assert!(defaults.http_tools.is_empty());
    let custom = settings(&[
        ("AGENT_TURN__MAX_STEPS", "3"),
        ("AGENT_MODEL__RETRY_BUDGET", "0s"),
    ]);
    assert_eq!(custom.turn.max_steps, 3);
    assert_eq!(custom.model.retry_budget, Duration::ZERO);
    assert!(
        error(&[("AGENT_TURN__MAX_PARALLEL_TOOLS", "0")])
            .starts_with("AGENT_TURN__MAX_PARALLEL_TOOLS: 0 is out of range")
    );
}

#[test]
fn http_tools_are_read_from_the_file_with_secret_headers_from_files() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("weather-key", "key-from-file\n")?;
        jail.create_file(
            "agent.toml",
            r#"
            [[http_tools]]
            name = "weather"
            description = "Weather for a city."
            url = "https://weather.example/api"
            parameters = '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'
            headers = { "X-Api-Key" = { file = "weather-key" }, Accept = "application/json" }

            [[http_tools]]
            name = "stock"
            description = "A stock price."
            url = "http://stocks.internal/price"
            method = "get"
            timeout = "2s"
            parameters = { type = "object", properties = { symbol = { type = "string" } } }
            "#,
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        let loaded = load().map_err(|error| error.to_string())?;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let tools = &loaded.settings.http_tools;
        assert_eq!(tools.len(), 2);
        assert_eq!(
            (tools[0].method.as_str(), tools[0].timeout),
            ("POST", Duration::from_secs(10))
        );
        assert_eq!(tools[0].parameters["required"][0], "city");
        let key = tools[0]
            .headers
            .iter()
            .find(|(name, _)| name == "X-Api-Key")
            .unwrap();
        assert_eq!(key.1.expose_secret(), "key-from-file");
        assert_eq!(
            (tools[1].method.as_str(), tools[1].timeout),
            ("GET", Duration::from_secs(2))
        );
        assert_eq!(
            tools[1].parameters["properties"]["symbol"]["type"],
            "string"
        );
        assert!(!format!("{:?}", loaded.settings).contains("key-from-file"));
        Ok(())
    });
}

#[test]
fn invalid_http_tools_name_the_tool_and_the_problem() {
    let cases = [
        (
            "name = \"bad name\"\nurl = \"https://x.example\"",
            "name must be 1 to 64",
        ),
        (
            "name = \"t\"\nurl = \"file:///etc/passwd\"",
            "is not an http(s) URL",
        ),
        (
            "name = \"t\"\nurl = \"https://x.example\"\nmethod = \"DELETE\"",
            "is not GET or POST",
        ),
        (
            "name = \"t\"\nurl = \"https://x.example\"\nheaders = { A = { file = \"/nonexistent\" } }",
            "header A: cannot read",
        ),
    ];
    for (body, expected) in cases {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let table = format!(
                "[[http_tools]]\n{body}\ndescription = \"d\"\nparameters = {{ type = \"object\" }}\n"
            );
            jail.create_file("agent.toml", &table)?;
            jail.set_env("AGENT_CONFIG", "agent.toml");
            let message = load()
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(message.starts_with("http_tools[0]"), "{message}");
            assert!(message.contains(expected), "{message}");
            Ok(())
        });
    }
}

/// Every declared key is read and validated under its own name: a key declared but never read,
/// or read as another kind than declared, fails here.
#[test]
fn every_declared_key_is_validated_under_its_own_name() {
    use crate::keys::Kind;
    for key in crate::KEYS {
        let bad = match key.kind {
            Kind::Bool => "maybe",
            Kind::Int { .. } | Kind::Float { .. } | Kind::Port => "not-a-number",
            Kind::Duration { .. } => "forever",
            Kind::Choice(_) => "none-of-these",
            Kind::Host => "no such host",
            Kind::HttpUrl => "ftp://example.com",
            Kind::SecretUrl(_) => "nope://example.com",
            Kind::SecretList => "a,,b",
            // Any text is valid; a secret with surrounding blanks is refused.
            Kind::Secret => " padded ",
            Kind::Text => continue,
            Kind::Headers
            | Kind::Names
            | Kind::JsonSchema
            | Kind::WebhookSecrets
            | Kind::Approval
            | Kind::Context => {
                panic!("{} is a table entry's kind", key.path)
            }
        };
        let name = key.prefixed_env_name();
        // The base URL is only read when a model server is configured.
        let message = error(&[(name.as_str(), bad), ("OPENAI_API_KEY", "sk-test")]);
        assert!(
            message.starts_with(&format!("{name}: ")),
            "{name}={bad:?}: got {message:?}"
        );
    }
}

#[test]
fn every_key_with_a_default_loads_it_and_config_check_shows_it() {
    let loaded = load_from(Vec::<(String, String)>::new()).unwrap();
    for key in crate::KEYS {
        let shown = loaded
            .effective
            .iter()
            .find(|value| value.key == key.path)
            .unwrap();
        match key.default {
            Some(default) => assert_eq!(
                (shown.value.as_str(), shown.origin.as_str()),
                (default, "default"),
                "{}",
                key.path
            ),
            None => assert_eq!(shown.value, "(unset)", "{}", key.path),
        }
    }
}

/// `docs/configuration.md` holds the references generated from the declarations: the keys, and
/// the fields of `[[http_tools]]` and `[[mcp_servers]]` entries. With `UPDATE_DOCS=1` this test
/// rewrites them instead of failing.
#[test]
fn the_configuration_reference_matches_the_declarations() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let tables = [
        ("keys", crate::reference_table()),
        (
            "http_tools",
            crate::keys::entries_table(crate::keys::HTTP_TOOL_FIELDS),
        ),
        (
            "mcp_servers",
            crate::keys::entries_table(crate::keys::MCP_SERVER_FIELDS),
        ),
        (
            "webhooks",
            crate::keys::entries_table(crate::keys::WEBHOOK_FIELDS),
        ),
        (
            "builtin_tools",
            crate::keys::entries_table(crate::keys::BUILTIN_TOOL_FIELDS),
        ),
        (
            "agents",
            crate::keys::entries_table(crate::keys::AGENT_FIELDS),
        ),
        (
            "models",
            crate::keys::entries_table(crate::keys::MODEL_FIELDS),
        ),
    ];
    let mut stale = Vec::new();
    for (name, expected) in tables {
        let (begin, end) = (
            format!("<!-- {name}:begin -->\n"),
            format!("<!-- {name}:end -->"),
        );
        let start = text.find(&begin).expect("the begin marker") + begin.len();
        let stop = text.find(&end).expect("the end marker");
        if text[start..stop] != expected {
            stale.push(name);
            text = format!("{}{expected}{}", &text[..start], &text[stop..]);
        }
    }
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, text).unwrap();
    } else {
        panic!(
            "docs/configuration.md is out of date ({stale:?}): run `UPDATE_DOCS=1 cargo test -p agent-config`"
        );
    }
}

#[test]
fn cors_is_off_unless_origins_are_listed_and_never_any_origin_with_credentials() {
    assert_eq!(settings(&[]).api.cors, None);
    let cors = settings(&[(
        "AGENT_API__CORS_ALLOWED_ORIGINS",
        "https://app.example.com, http://localhost:3000",
    )])
    .api
    .cors
    .unwrap();
    assert_eq!(
        cors.origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert!(cors.allows("http://localhost:3000") && !cors.allows("https://evil.example"));
    assert_eq!(cors.methods, ["GET", "POST", "DELETE"]);
    let any = settings(&[("AGENT_API__CORS_ALLOWED_ORIGINS", "*")])
        .api
        .cors
        .unwrap();
    assert!(any.allows("https://anything.example"));
    for (origins, credentials) in [
        ("*", "true"),
        ("*, https://a.example", "false"),
        ("https://a.example/path", "false"),
        ("ftp://a.example", "false"),
        ("a.example", "false"),
    ] {
        let problem = error(&[
            ("AGENT_API__CORS_ALLOWED_ORIGINS", origins),
            ("AGENT_API__CORS_ALLOW_CREDENTIALS", credentials),
        ]);
        assert!(
            problem.starts_with("AGENT_API__CORS_ALLOWED_ORIGINS: "),
            "{origins}: {problem}"
        );
    }
    for (name, value) in [
        ("AGENT_API__CORS_ALLOWED_METHODS", "GET, PO ST"),
        (
            "AGENT_API__CORS_ALLOWED_HEADERS",
            "authorization, bad:header",
        ),
    ] {
        let problem = error(&[(name, value), ("AGENT_API__CORS_ALLOWED_ORIGINS", "*")]);
        assert!(problem.starts_with(&format!("{name}: ")), "{problem}");
    }
}

#[test]
fn quotas_have_a_default_and_named_callers_may_have_their_own() {
    let none = settings(&[]).api.quotas;
    assert!(!none.any() && none.of("alice").is_none());
    let quotas = settings(&[
        ("AGENT_API__DAILY_TOKEN_QUOTA", "1000"),
        ("AGENT_API__DAILY_TOKEN_QUOTAS", "ci:50, ops:0"),
    ])
    .api
    .quotas;
    assert_eq!(quotas.of("alice"), Some(1000));
    assert_eq!(quotas.of("ci"), Some(50));
    assert_eq!(quotas.of("ops"), None, "0 is no quota for that caller");
    let only_named = settings(&[("AGENT_API__DAILY_TOKEN_QUOTAS", "ci:50")])
        .api
        .quotas;
    assert!(only_named.any());
    assert_eq!(
        (only_named.of("ci"), only_named.of("alice")),
        (Some(50), None)
    );
    for value in ["ci", "ci:many", "bad name:5", "ci:5,ci:6", "ci:-1"] {
        let problem = error(&[("AGENT_API__DAILY_TOKEN_QUOTAS", value)]);
        assert!(
            problem.starts_with("AGENT_API__DAILY_TOKEN_QUOTAS: "),
            "{value}: {problem}"
        );
    }
}

#[test]
fn retention_is_off_by_default_and_zero_turns_it_off() {
    let storage = settings(&[]).storage;
    assert_eq!(storage.retention(), None);
    assert_eq!(storage.retention_sweep_interval, Duration::from_secs(60));
    assert_eq!(
        settings(&[("AGENT_STORAGE__SESSION_RETENTION", "0s")])
            .storage
            .retention(),
        None
    );
    let storage = settings(&[
        ("AGENT_STORAGE__SESSION_RETENTION", "30d"),
        ("AGENT_STORAGE__RETENTION_SWEEP_INTERVAL", "5m"),
    ])
    .storage;
    assert_eq!(
        storage.retention(),
        Some(Duration::from_secs(30 * 24 * 3600))
    );
    assert_eq!(storage.retention_sweep_interval, Duration::from_secs(300));
}

#[test]
fn mcp_servers_are_read_from_the_file_with_secret_headers_from_files() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("docs-token", "Bearer token-from-file\n")?;
        jail.create_file(
            "agent.toml",
            r#"
            [[mcp_servers]]
            name = "docs"
            url = "https://mcp.example/mcp"
            headers = { Authorization = { file = "docs-token" } }
            required = true

            [[mcp_servers]]
            name = "everything"
            url = "http://127.0.0.1:3001/mcp"
            prefix = "ev"
            tools = ["echo", "add"]
            timeout = "2s"
            connect_timeout = "500ms"
            max_result_bytes = 1000
            refresh_interval = "10s"
            "#,
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        let loaded = load().map_err(|error| error.to_string())?;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let servers = &loaded.settings.mcp_servers;
        assert_eq!(servers.len(), 2);
        let docs = &servers[0];
        assert_eq!((docs.prefix.as_str(), docs.required), ("docs", true));
        assert_eq!(
            (docs.timeout, docs.connect_timeout, docs.tools.clone()),
            (Duration::from_secs(30), Duration::from_secs(5), None)
        );
        // Tool messages are capped like HTTP tools' responses unless the server says otherwise.
        assert_eq!(
            (docs.max_result_bytes, docs.refresh_interval),
            (65536, Duration::from_secs(300))
        );
        assert_eq!(docs.headers[0].1.expose_secret(), "Bearer token-from-file");
        let everything = &servers[1];
        assert_eq!(
            (everything.prefix.as_str(), everything.required),
            ("ev", false)
        );
        assert_eq!(
            (everything.timeout, everything.connect_timeout),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        assert_eq!(
            (everything.max_result_bytes, everything.refresh_interval),
            (1000, Duration::from_secs(10))
        );
        assert_eq!(
            everything.tools.as_deref(),
            Some(&["echo".to_owned(), "add".to_owned()][..])
        );
        assert!(!format!("{:?}", loaded.settings).contains("token-from-file"));
        Ok(())
    });
}

#[test]
fn invalid_mcp_servers_name_the_server_and_the_problem() {
    let cases = [
        (
            "name = \"bad name\"\nurl = \"https://x.example\"",
            "name must be 1 to 64",
        ),
        (
            "name = \"s\"\nurl = \"stdio://server\"",
            "is not an http(s) URL",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\nprefix = \"a.b\"",
            "prefix must be 1 to 64",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\ntimeout = \"soon\"",
            "timeout 'soon' is not a duration",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\ntools = [\"\"]",
            "tools[0] is empty",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\nmax_result_bytes = 0",
            "max_result_bytes must be 1 to",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\nrefresh_interval = \"10ms\"",
            "refresh_interval must be 1s to 1day",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\ncommand = \"npx server\"",
            "unknown field: found `command`",
        ),
        (
            "name = \"s\"\nurl = \"https://x.example\"\nheaders = { Authorization = { file = \"/nonexistent\" } }",
            "header Authorization: cannot read",
        ),
    ];
    for (body, expected) in cases {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("agent.toml", &format!("[[mcp_servers]]\n{body}\n"))?;
            jail.set_env("AGENT_CONFIG", "agent.toml");
            let message = load()
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(message.starts_with("mcp_servers"), "{message}");
            assert!(message.contains(expected), "{expected}: {message}");
            Ok(())
        });
    }
    // Two servers whose tools would share a prefix.
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "agent.toml",
            "[[mcp_servers]]\nname = \"a\"\nurl = \"https://a.example\"\nprefix = \"p\"\n\
             [[mcp_servers]]\nname = \"b\"\nurl = \"https://b.example\"\nprefix = \"p\"\n",
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        let message = load()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            message.starts_with("mcp_servers[1] (b)")
                && message.contains("MCP server a has the same prefix 'p'"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn traces_are_exported_only_with_an_endpoint_and_not_when_tracing_is_disabled() {
    assert!(settings(&[]).traces.is_none());
    let base = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
    let traces = base.traces.expect("an endpoint turns traces on");
    assert_eq!(traces.endpoint.as_str(), "http://collector:4318/v1/traces");
    assert_eq!(traces.service_name, "agent-server");
    assert_eq!(
        traces.sampler,
        crate::TraceSampler {
            parent_based: true,
            root: crate::SamplerRoot::AlwaysOn
        }
    );
    assert!(!traces.capture_content);
    assert!(
        !base.log.enable_tracing,
        "unset ENABLE_TRACING adds no span lines"
    );
    let full = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://traces.example/otlp/spans",
        ),
    ]);
    assert_eq!(
        full.traces.expect("on").endpoint.as_str(),
        "https://traces.example/otlp/spans",
        "the traces endpoint is used as it is"
    );
    // The tutorial's switch turns export off even with an endpoint; on, it also logs spans.
    let off = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("ENABLE_TRACING", "false"),
    ]);
    assert!(off.traces.is_none());
    let on = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("ENABLE_TRACING", "true"),
    ]);
    assert!(on.traces.is_some() && on.log.enable_tracing);
    // An empty value (a copied .env.example) is unset.
    assert!(
        settings(&[("ENABLE_TRACING", ""), ("OTEL_EXPORTER_OTLP_ENDPOINT", "")])
            .traces
            .is_none()
    );
}

#[test]
fn trace_settings_follow_the_opentelemetry_variables() {
    let traces = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Basic%20dXNlcjpwdw==, x-tenant = blue",
        ),
        ("OTEL_SERVICE_NAME", "agents-eu"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,service.namespace=a%2Cb",
        ),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "512"),
        ("AGENT_TELEMETRY__CAPTURE_CONTENT", "true"),
    ])
    .traces
    .expect("on");
    let headers: Vec<(&str, &str)> = traces
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.expose_secret()))
        .collect();
    assert_eq!(
        headers,
        [
            ("Authorization", "Basic dXNlcjpwdw=="),
            ("x-tenant", "blue")
        ]
    );
    assert_eq!(traces.service_name, "agents-eu");
    assert_eq!(
        traces.resource_attributes,
        [
            ("deployment.environment.name".to_owned(), "prod".to_owned()),
            ("service.namespace".to_owned(), "a,b".to_owned()),
        ]
    );
    assert!(traces.sampler.parent_based);
    assert!(
        matches!(traces.sampler.root, crate::SamplerRoot::Ratio(ratio) if (ratio - 0.1).abs() < 1e-6)
    );
    assert_eq!(traces.max_queue_size, 512);
    assert!(traces.capture_content);
    let plain = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_TRACES_SAMPLER", "always_off"),
    ])
    .traces
    .expect("on");
    assert_eq!(
        plain.sampler,
        crate::TraceSampler {
            parent_based: false,
            root: crate::SamplerRoot::AlwaysOff
        }
    );
}

#[test]
fn bad_trace_settings_are_refused_without_echoing_headers() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    let message = error(&[
        endpoint,
        ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization Bearer hunter2"),
    ]);
    assert!(
        message.contains("OTEL_EXPORTER_OTLP_HEADERS") && message.contains("no '='"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    let message = error(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    assert!(message.contains("http/protobuf"), "{message}");
    let message = error(&[endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")]);
    assert!(message.contains("OTEL_TRACES_SAMPLER"), "{message}");
    let message = error(&[endpoint, ("OTEL_TRACES_SAMPLER_ARG", "1.5")]);
    assert!(message.contains("OTEL_TRACES_SAMPLER_ARG"), "{message}");
    let message = error(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
    assert!(message.contains("is not an http(s) URL"), "{message}");
    // Validated even while export is off.
    let message = error(&[
        ("ENABLE_TRACING", "false"),
        ("OTEL_TRACES_SAMPLER", "never"),
    ]);
    assert!(message.contains("OTEL_TRACES_SAMPLER"), "{message}");
}

#[test]
fn trace_headers_are_read_from_a_file_variable() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("otlp-headers", "Authorization=Bearer%20from-file\n")?;
        jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        jail.set_env("OTEL_EXPORTER_OTLP_HEADERS_FILE", "otlp-headers");
        let loaded = load().map_err(|error| error.to_string())?;
        let traces = loaded.settings.traces.expect("on");
        assert_eq!(traces.headers.len(), 1);
        assert_eq!(traces.headers[0].1.expose_secret(), "Bearer from-file");
        Ok(())
    });
}

#[test]
fn webhooks_are_read_with_their_secrets_and_refused_naming_the_problem() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        // "whsec_" and base64 of "a key of the old kind" / "the new key".
        jail.create_file("hook-secret", "whsec_dGhlIG5ldyBrZXk=\n")?;
        jail.create_file(
            "agent.toml",
            r#"
            [[webhooks]]
            url = "http://127.0.0.1:9000/hooks"
            secret = ["whsec_YSBrZXkgb2YgdGhlIG9sZCBraW5k", { file = "hook-secret" }]
            events = ["response.completed"]
            callers = ["alice"]

            [[webhooks]]
            url = "https://hooks.example.com/agent"
            secret = { file = "hook-secret" }
            "#,
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        let loaded = load().map_err(|error| error.to_string())?;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let hooks = &loaded.settings.webhooks;
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].secrets.len(), 2);
        assert!(hooks[0].inline_secret && !hooks[1].inline_secret);
        assert_eq!(
            hooks[1].secrets[0].expose_secret(),
            "whsec_dGhlIG5ldyBrZXk="
        );
        assert_eq!(
            crate::signing_key(hooks[1].secrets[0].expose_secret()).unwrap(),
            b"the new key"
        );
        assert_eq!(hooks[0].events, ["response.completed"]);
        assert_eq!(hooks[1].events, crate::WEBHOOK_EVENTS);
        assert_eq!(hooks[0].callers.as_deref(), Some(&["alice".to_owned()][..]));
        assert_eq!(hooks[1].callers, None);

        for (entry, problem) in [
            (
                r#"secret = "not-a-secret-at-all""#,
                "secret 0 is not `whsec_`",
            ),
            (r#"secret = "whsec_%%%""#, "secret 0 is not `whsec_`"),
            (r#"secret = []"#, "at least one"),
            (
                "secret = \"whsec_dGhlIG5ldyBrZXk=\"\nevents = [\"run.done\"]",
                "'run.done' is not one of",
            ),
        ] {
            jail.create_file(
                "bad.toml",
                &format!("[[webhooks]]\nurl = \"http://127.0.0.1:9/h\"\n{entry}\n"),
            )?;
            jail.set_env("AGENT_CONFIG", "bad.toml");
            let message = load().unwrap_err().to_string();
            assert!(message.contains(problem), "{entry}: {message}");
            assert!(message.contains("webhooks[0]"), "{message}");
            assert!(
                !message.contains("not-a-secret-at-all"),
                "echoed: {message}"
            );
        }
        jail.create_file(
            "twice.toml",
            "[[webhooks]]\nurl = \"http://a/h\"\nsecret = \"whsec_dGhlIG5ldyBrZXk=\"\n\
             [[webhooks]]\nurl = \"http://a/h\"\nsecret = \"whsec_dGhlIG5ldyBrZXk=\"\n",
        )?;
        jail.set_env("AGENT_CONFIG", "twice.toml");
        let message = load().unwrap_err().to_string();
        assert!(message.contains("same url"), "{message}");
        Ok(())
    });
}

#[test]
fn require_approval_is_read_per_tool_source_in_the_responses_syntax_and_refused_naming_the_entry() {
    use crate::RequireApproval;
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "agent.toml",
            r#"
            [builtin_tools]
            require_approval = { always = { tool_names = ["calculator"] } }

            [[http_tools]]
            name = "send_email"
            description = "Sends an email."
            url = "http://127.0.0.1:9/send"
            parameters = { type = "object" }
            require_approval = "always"

            [[mcp_servers]]
            name = "crm"
            url = "http://127.0.0.1:9/mcp"
            require_approval = { never = { tool_names = ["search"] } }

            [[mcp_servers]]
            name = "docs"
            url = "http://127.0.0.1:9/docs"
            "#,
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        let settings = load().map_err(|error| error.to_string())?.settings;
        assert_eq!(
            settings.builtin_approval,
            RequireApproval::Only(vec!["calculator".to_owned()])
        );
        assert!(settings.builtin_approval.applies("calculator"));
        assert!(!settings.builtin_approval.applies("current_time"));
        assert_eq!(
            settings.http_tools[0].require_approval,
            RequireApproval::Always
        );
        let crm = &settings.mcp_servers[0].require_approval;
        assert!(!crm.applies("search") && crm.applies("update_record"));
        assert_eq!(
            settings.mcp_servers[1].require_approval,
            RequireApproval::Never
        );
        Ok(())
    });
    for (entry, problem) in [
        (
            r#"[[mcp_servers]]
            name = "crm"
            url = "http://127.0.0.1:9/mcp"
            require_approval = "sometimes""#,
            "mcp_servers[0] (crm) in agent.toml: require_approval 'sometimes' is not",
        ),
        (
            r#"[[http_tools]]
            name = "send_email"
            description = "Sends an email."
            url = "http://127.0.0.1:9/send"
            parameters = { type = "object" }
            require_approval = { always = { tool_names = ["other"] } }"#,
            "require_approval names 'other', which is not a tool of this entry (send_email)",
        ),
        (
            r#"[builtin_tools]
            require_approval = { always = { tool_names = ["a"] }, never = { tool_names = ["a"] } }"#,
            "builtin_tools in agent.toml: require_approval names 'a' under both always and never",
        ),
        (
            r#"[builtin_tools]
            require_approval = { sometimes = { tool_names = ["a"] } }"#,
            "builtin_tools in agent.toml: expected a [builtin_tools] table",
        ),
    ] {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("agent.toml", entry)?;
            jail.set_env("AGENT_CONFIG", "agent.toml");
            let error = load().map(|_| ()).unwrap_err().to_string();
            assert!(error.contains(problem), "{entry}: {error}");
            Ok(())
        });
    }
}

#[test]
fn agents_and_models_are_read_from_the_file_and_refused_naming_the_entry_and_the_key() {
    use secrecy::ExposeSecret;
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("support.md", "You answer questions about orders.")?;
        jail.create_file("gateway_key", "sk-gateway\n")?;
        jail.create_file(
            "agent.toml",
            r#"
            default_agent = "research"

            [[agents]]
            id = "support"
            name = "Support"
            description = "Answers questions about orders and opens tickets."
            instructions = { file = "support.md" }
            model = "gpt-4o-mini"
            fallbacks = ["claude-haiku"]
            tools = ["calculator", "tickets__*"]
            max_steps = 8
            temperature = 0.2
            callers = ["alice", "ci"]
            context = { max_input_tokens = 30000, strategy = "compact", summarizer = "claude-haiku" }

            [[agents]]
            id = "research"
            instructions = "You research."

            [[models]]
            name = "claude-haiku"
            base_url = "https://llm-gateway.internal/v1"
            model = "claude-3-5-haiku"
            api_key = { file = "gateway_key" }
            request_timeout = "20s"
            "#,
        )?;
        jail.set_env("AGENT_CONFIG", "agent.toml");
        jail.set_env("AGENT_CONTEXT__MAX_INPUT_TOKENS", "100000");
        jail.set_env("AGENT_CONTEXT__KEEP_RECENT_TURNS", "6");
        let settings = load().map_err(|error| error.to_string())?.settings;
        let support = &settings.agents[0];
        // An agent's context table over the global keys; another agent has the global ones.
        let context = &support.context;
        assert_eq!(
            (
                context.max_input_tokens,
                context.strategy,
                context.keep_recent_turns
            ),
            (30000, "compact", 6)
        );
        assert_eq!(context.summarizer.as_deref(), Some("claude-haiku"));
        let global = &settings.agents[1].context;
        assert_eq!(
            (
                global.max_input_tokens,
                global.strategy,
                global.summarizer.as_deref()
            ),
            (100000, "truncate", None)
        );
        assert_eq!(
            (support.id.as_str(), support.name.as_str()),
            ("support", "Support")
        );
        assert_eq!(
            support.instructions.as_deref(),
            Some("You answer questions about orders.")
        );
        let chain: Vec<&str> = support.chain("default-model").collect();
        assert_eq!(chain, ["gpt-4o-mini", "claude-haiku"]);
        assert_eq!(support.max_steps, Some(8));
        assert!(support.allows("alice") && !support.allows("bob"));
        let research = &settings.agents[1];
        assert_eq!(research.name, "research", "the name defaults to the id");
        assert_eq!(
            research.chain("default-model").collect::<Vec<_>>(),
            ["default-model"]
        );
        assert!(research.allows("bob") && research.tools.is_none());
        assert_eq!(settings.default_agent.as_deref(), Some("research"));
        let model = &settings.models[0];
        assert_eq!(
            model.api_key.as_ref().unwrap().expose_secret(),
            "sk-gateway"
        );
        assert!(!model.inline_key);
        assert_eq!(model.request_timeout, Some(Duration::from_secs(20)));
        Ok(())
    });
    for (toml, problem) in [
        (
            "[[agents]]\nid = \"Support\"",
            "agents[0] (Support) in agent.toml: id must be 1 to 64 of a-z, 0-9",
        ),
        (
            "[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"",
            "agents[1] (a) in agent.toml: another agent has the same id",
        ),
        (
            "[[agents]]\nid = \"a\"\nmodel = \"m\"\nfallbacks = [\"m\"]",
            "model chain: 'm' is named twice",
        ),
        (
            "[[agents]]\nid = \"a\"\ncallers = [\"not a name\"]",
            "callers: 'not a name' is not a caller name",
        ),
        (
            "[[agents]]\nid = \"a\"\nmax_steps = 0",
            "agents[0] (a) in agent.toml: max_steps must be 1 to 100",
        ),
        (
            "default_agent = \"b\"\n[[agents]]\nid = \"a\"",
            "default_agent: 'b' is no [[agents]] entry (a)",
        ),
        (
            "[[models]]\nname = \"m\"\nbase_url = \"ftp://x\"\nmodel = \"x\"",
            "models[0] (m) in agent.toml: url 'ftp://x' is not an http(s) URL",
        ),
        (
            "[[agents]]\nid = \"a\"\nmodle = \"m\"",
            "unknown field: found `modle`",
        ),
        (
            "[[agents]]\nid = \"a\"\ncontext = { strategy = \"forget\" }",
            "agents[0] (a) in agent.toml: context.strategy: 'forget' is none of truncate",
        ),
        (
            "[[agents]]\nid = \"a\"\ncontext = { keep_recent_turns = 5000 }",
            "keep_recent_turns must be 0 to 1000",
        ),
        (
            "[[agents]]\nid = \"a\"\ncontext = { max_input = 1 }",
            "unknown field: found `max_input`",
        ),
    ] {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("agent.toml", toml)?;
            jail.set_env("AGENT_CONFIG", "agent.toml");
            let error = load().map(|_| ()).unwrap_err().to_string();
            assert!(error.contains(problem), "{toml}: {error}");
            Ok(())
        });
    }
}
