//! The file format, as serde reads it, and its validation into [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::{
    DeploymentSettings, FieldProblem, ServerSettings, Settings, StoreSettings, UpstreamSettings,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    upstream: UpstreamSection,
    #[serde(default)]
    providers: BTreeMap<String, ProviderSection>,
    #[serde(default)]
    deployments: BTreeMap<String, DeploymentSection>,
    #[serde(default)]
    aliases: BTreeMap<String, AliasSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: String,
    max_body_bytes: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:4000".into(),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreSection {
    path: String,
    record_queue: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: "sluice-data/sluice.db".into(),
            record_queue: 16_384,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct UpstreamSection {
    connect_timeout_ms: u64,
    first_byte_timeout_ms: u64,
    idle_timeout_ms: u64,
    total_timeout_ms: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 120_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
        }
    }
}

/// The kinds of upstream Sluice can talk to. Matches the `type` field of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderType {
    Openai,
    Anthropic,
    /// vLLM, Ollama, llama.cpp, Groq, Together, Mistral, DeepSeek, OpenRouter, ...
    OpenaiCompatible,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Openai => "openai",
            ProviderType::Anthropic => "anthropic",
            ProviderType::OpenaiCompatible => "openai_compatible",
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderType::Openai => Some("https://api.openai.com/v1"),
            ProviderType::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderType::OpenaiCompatible => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSection {
    #[serde(rename = "type")]
    provider_type: ProviderType,
    base_url: Option<String>,
    api_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentSection {
    provider: String,
    model: String,
    /// Overrides the provider's `api_key_env`.
    api_key_env: Option<String>,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u32,
}

fn default_max_tokens() -> u32 {
    4096
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasSection {
    deployments: Vec<String>,
}

impl ConfigFile {
    pub(crate) fn validate(
        self,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut problem =
            |field: String, message: String| problems.push(FieldProblem { field, message });

        let listen = self
            .server
            .listen
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| {
                problem(
                    "server.listen".into(),
                    format!("`{}` is not an address:port ({e})", self.server.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 4000))
            });
        if self.server.max_body_bytes == 0 {
            problem(
                "server.max_body_bytes".into(),
                "must be greater than 0".into(),
            );
        }
        if self.store.record_queue == 0 {
            problem("store.record_queue".into(), "must be greater than 0".into());
        }
        let up = &self.upstream;
        for (field, value) in [
            ("upstream.connect_timeout_ms", up.connect_timeout_ms),
            ("upstream.first_byte_timeout_ms", up.first_byte_timeout_ms),
            ("upstream.idle_timeout_ms", up.idle_timeout_ms),
            ("upstream.total_timeout_ms", up.total_timeout_ms),
        ] {
            if value == 0 {
                problem(field.into(), "must be greater than 0".into());
            }
        }

        for (name, provider) in &self.providers {
            if let Some(url) = &provider.base_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                problem(
                    format!("providers.{name}.base_url"),
                    format!("`{url}` must start with http:// or https://"),
                );
            }
            if provider.base_url.is_none() && provider.provider_type.default_base_url().is_none() {
                problem(
                    format!("providers.{name}.base_url"),
                    format!("required for type `{}`", provider.provider_type.as_str()),
                );
            }
        }

        let mut deployments = Vec::with_capacity(self.deployments.len());
        for (name, deployment) in &self.deployments {
            let Some(provider) = self.providers.get(&deployment.provider) else {
                problem(
                    format!("deployments.{name}.provider"),
                    format!("no provider named `{}` in [providers]", deployment.provider),
                );
                continue;
            };
            if deployment.model.trim().is_empty() {
                problem(
                    format!("deployments.{name}.model"),
                    "must not be empty".into(),
                );
            }
            let (key_field, key_env) = match (&deployment.api_key_env, &provider.api_key_env) {
                (Some(var), _) => (format!("deployments.{name}.api_key_env"), Some(var)),
                (None, Some(var)) => (
                    format!("providers.{}.api_key_env", deployment.provider),
                    Some(var),
                ),
                (None, None) => (String::new(), None),
            };
            let api_key = match key_env {
                Some(var) => match env(var) {
                    Some(value) if !value.is_empty() => Some(SecretString::from(value)),
                    _ => {
                        problem(
                            key_field,
                            format!(
                                "environment variable `{var}` is not set (needed by deployment `{name}`)"
                            ),
                        );
                        None
                    }
                },
                None if provider.provider_type == ProviderType::OpenaiCompatible => None,
                None => {
                    problem(
                        format!("providers.{}.api_key_env", deployment.provider),
                        format!("required for type `{}`", provider.provider_type.as_str()),
                    );
                    None
                }
            };
            let base_url = provider
                .base_url
                .as_deref()
                .or(provider.provider_type.default_base_url())
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            deployments.push(DeploymentSettings {
                name: name.clone(),
                provider: deployment.provider.clone(),
                provider_type: provider.provider_type,
                base_url,
                model: deployment.model.clone(),
                api_key,
                default_max_tokens: deployment.default_max_tokens,
            });
        }

        let mut aliases = BTreeMap::new();
        for (alias, section) in &self.aliases {
            if section.deployments.is_empty() {
                problem(
                    format!("aliases.{alias}.deployments"),
                    "must name at least one deployment".into(),
                );
            }
            let mut targets = Vec::new();
            for (i, target) in section.deployments.iter().enumerate() {
                match deployments.iter().position(|d| &d.name == target) {
                    Some(index) => targets.push(index),
                    None if self.deployments.contains_key(target) => {} // already reported above
                    None => problem(
                        format!("aliases.{alias}.deployments[{i}]"),
                        format!("no deployment named `{target}` in [deployments]"),
                    ),
                }
            }
            aliases.insert(alias.clone(), targets);
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            server: ServerSettings {
                listen,
                max_body_bytes: self.server.max_body_bytes,
            },
            store: StoreSettings {
                path: base_dir.join(&self.store.path),
                record_queue: self.store.record_queue,
            },
            upstream: UpstreamSettings {
                connect_timeout: Duration::from_millis(up.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(up.first_byte_timeout_ms),
                idle_timeout: Duration::from_millis(up.idle_timeout_ms),
                total_timeout: Duration::from_millis(up.total_timeout_ms),
            },
            deployments,
            aliases,
        })
    }
}
