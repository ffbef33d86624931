//! `[[providers]]` and `[[routes]]` of the `--config` TOML file.
//!
//! Lists of tables do not fit the flat `WEIR_*` scheme (one env twin per
//! flag), so these two live in the file only; everything else in the file is
//! a flag's twin ([`crate::config`]). They are read, their secrets resolved
//! (`api_key_env`, `api_key_file`) and checked once at start-up, so a typo
//! in a route stops `weir serve` with the route's name instead of failing
//! the first request.

use std::{collections::BTreeMap, fmt, path::Path};

use serde::Deserialize;

/// Default first-token timeout of a provider named in the file (seconds).
pub const FIRST_TOKEN_SECS: u64 = 15;
/// Default attempts per request of a route.
pub const ATTEMPTS: u32 = 3;
/// Default overall deadline of a route's attempts before the first byte.
pub const DEADLINE_SECS: u64 = 30;
/// Consecutive failures that open a provider's circuit.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open circuit skips its provider before one probe.
pub const BREAKER_COOLDOWN_SECS: u64 = 30;

/// The provider lists of the config file (empty without a file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// The API protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Any OpenAI-compatible server (vLLM, Ollama, OpenRouter, Groq…).
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Openai => "openai",
            Kind::Anthropic => "anthropic",
        }
    }
}

/// A secret string: never in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One `[[providers]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// An environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A file holding the key (trailing whitespace trimmed).
    #[serde(default)]
    pub api_key_file: Option<String>,
    #[serde(default = "first_token_secs")]
    pub first_token_timeout_secs: u64,
    #[serde(default = "idle_secs")]
    pub idle_timeout_secs: u64,
    /// Extra headers sent with every request (values are treated as secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default = "breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "breaker_cooldown_secs")]
    pub breaker_cooldown_secs: u64,
}

/// What a route does when its provider fails after the first byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MidStream {
    /// An error line, then `[DONE]` (never a silent clean end).
    #[default]
    Error,
    /// Re-issue to the next target with the text so far as a prefill.
    Continue,
}

/// One `targets` entry of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub provider: String,
    pub model: String,
    #[serde(default = "weight")]
    pub weight: u32,
}

/// One `[[routes]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    pub targets: Vec<TargetSpec>,
    #[serde(default)]
    pub mid_stream: MidStream,
    #[serde(default = "attempts")]
    pub attempts: u32,
    #[serde(default = "deadline_secs")]
    pub deadline_secs: u64,
}

fn first_token_secs() -> u64 {
    FIRST_TOKEN_SECS
}
fn idle_secs() -> u64 {
    60
}
fn breaker_failures() -> u32 {
    BREAKER_FAILURES
}
fn breaker_cooldown_secs() -> u64 {
    BREAKER_COOLDOWN_SECS
}
fn weight() -> u32 {
    1
}
fn attempts() -> u32 {
    ATTEMPTS
}
fn deadline_secs() -> u64 {
    DEADLINE_SECS
}

/// Why the provider lists cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProvidersError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ProvidersError {
    ProvidersError::Invalid(msg.into())
}

impl ProvidersConfig {
    /// The `providers` and `routes` keys of a parsed config file, checked,
    /// with their secrets resolved.
    pub fn from_table(table: &toml::Table) -> Result<Self, ProvidersError> {
        let mut only = toml::Table::new();
        for key in ["providers", "routes"] {
            if let Some(v) = table.get(key) {
                only.insert(key.into(), v.clone());
            }
        }
        let mut cfg: Self = toml::Value::Table(only)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        cfg.resolve_secrets()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The lists of a TOML text (for tests and embedders).
    pub fn from_toml(text: &str) -> Result<Self, ProvidersError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        Self::from_table(&table)
    }

    fn resolve_secrets(&mut self) -> Result<(), ProvidersError> {
        for p in &mut self.providers {
            let given = [
                p.api_key.is_some(),
                p.api_key_env.is_some(),
                p.api_key_file.is_some(),
            ];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err(invalid(format!(
                    "provider `{}`: give one of api_key, api_key_env, api_key_file",
                    p.name
                )));
            }
            if let Some(var) = &p.api_key_env {
                let v = std::env::var(var).map_err(|_| {
                    invalid(format!(
                        "provider `{}`: api_key_env `{var}` is not set",
                        p.name
                    ))
                })?;
                p.api_key = Some(Secret::new(v));
            }
            if let Some(file) = &p.api_key_file {
                let v = std::fs::read_to_string(Path::new(file)).map_err(|e| {
                    invalid(format!("provider `{}`: api_key_file {file}: {e}", p.name))
                })?;
                p.api_key = Some(Secret::new(v.trim_end()));
            }
        }
        Ok(())
    }

    /// Names unique and well-formed, every target's provider known, numbers
    /// in range.
    pub fn validate(&self) -> Result<(), ProvidersError> {
        let mut names = std::collections::BTreeSet::new();
        for p in &self.providers {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(invalid(format!(
                    "provider names must be non-empty and unique: `{}`",
                    p.name
                )));
            }
            if reqwest::Url::parse(&p.base_url).is_err() {
                return Err(invalid(format!(
                    "provider `{}`: base_url is not a URL",
                    p.name
                )));
            }
            if p.first_token_timeout_secs == 0 || p.breaker_failures == 0 {
                return Err(invalid(format!(
                    "provider `{}`: first_token_timeout_secs and breaker_failures must be at least 1",
                    p.name
                )));
            }
        }
        let mut routes = std::collections::BTreeSet::new();
        for r in &self.routes {
            let name = r.name.strip_prefix("upstream/").unwrap_or(&r.name);
            if name.is_empty() || !routes.insert(name) {
                return Err(invalid(format!(
                    "route names must be non-empty and unique: `{}`",
                    r.name
                )));
            }
            if r.targets.is_empty() || r.attempts == 0 || r.deadline_secs == 0 {
                return Err(invalid(format!(
                    "route `{}`: needs targets, attempts >= 1 and deadline_secs >= 1",
                    r.name
                )));
            }
            for t in &r.targets {
                if t.provider != "default" && !names.contains(t.provider.as_str()) {
                    return Err(invalid(format!(
                        "route `{}`: unknown provider `{}`",
                        r.name, t.provider
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key = "sk-very-secret"
headers = { "x-org" = "org-secret" }

[[providers]]
name = "b"
kind = "openai"
base_url = "http://127.0.0.1:2/v1"

[[routes]]
name = "fast"
targets = [{ provider = "a", model = "m1", weight = 3 }, { provider = "b", model = "m2" }]
mid_stream = "continue"
"#;

    #[test]
    fn two_providers_and_a_route_parse_and_secrets_stay_hidden() {
        let cfg = ProvidersConfig::from_toml(TWO).unwrap();
        assert_eq!(cfg.providers.len(), 2);
        assert_eq!(cfg.providers[0].first_token_timeout_secs, FIRST_TOKEN_SECS);
        assert_eq!(cfg.routes[0].mid_stream, MidStream::Continue);
        assert_eq!(cfg.routes[0].targets[0].weight, 3);
        assert_eq!(cfg.routes[0].targets[1].weight, 1);
        assert_eq!(cfg.routes[0].attempts, ATTEMPTS);
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        assert!(!debug.contains("org-secret"), "{debug}");
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = TWO.replace("provider = \"b\"", "provider = \"c\"");
        let err = ProvidersConfig::from_toml(&unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown provider `c`"), "{err}");
        let typo = TWO.replace("mid_stream", "midstream");
        assert!(ProvidersConfig::from_toml(&typo).is_err());
        let env = TWO.replace("api_key = ", "api_key_env = \"WEIR_TEST_UNSET_VAR\"\n#");
        let err = ProvidersConfig::from_toml(&env).unwrap_err().to_string();
        assert!(err.contains("WEIR_TEST_UNSET_VAR"), "{err}");
        let anthropic = TWO.replacen("kind = \"openai\"", "kind = \"anthropic\"", 1);
        assert!(ProvidersConfig::from_toml(&anthropic).is_ok());
        let other = TWO.replacen("kind = \"openai\"", "kind = \"gemini\"", 1);
        assert!(ProvidersConfig::from_toml(&other).is_err());
    }

    #[test]
    fn a_key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        let text = TWO.replace(
            "api_key = \"sk-very-secret\"",
            &format!("api_key_file = {:?}", file.display().to_string()),
        );
        let cfg = ProvidersConfig::from_toml(&text).unwrap();
        assert_eq!(
            cfg.providers[0].api_key.as_ref().unwrap().expose(),
            "sk-from-file"
        );
    }
}
