use std::path::Path;

use secrecy::ExposeSecret;

use crate::{ConfigError, ProviderType, Settings};

fn load(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, Path::new("/etc/sluice/sluice.toml"), |name| {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
    })
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn empty_file_gives_defaults() {
    let settings = load("").unwrap();
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(
        settings.store.path,
        Path::new("/etc/sluice/sluice-data/sluice.db")
    );
    assert!(settings.deployments.is_empty());
}

#[test]
fn resolves_aliases_keys_and_default_base_urls() {
    let settings = load(
        r#"
        [providers.openai]
        type = "openai"
        api_key_env = "OPENAI_API_KEY"

        [providers.local]
        type = "openai_compatible"
        base_url = "http://127.0.0.1:8000/v1/"

        [deployments.gpt]
        provider = "openai"
        model = "gpt-4o-2024-08-06"

        [deployments.llama]
        provider = "local"
        model = "llama-3.1-8b"

        [aliases.fast]
        deployments = ["gpt", "llama"]
        "#,
    )
    .unwrap();
    let gpt = settings.deployment("gpt").unwrap();
    assert_eq!(gpt.base_url, "https://api.openai.com/v1");
    assert_eq!(gpt.api_key.as_ref().unwrap().expose_secret(), "sk-test");
    let llama = settings.deployment("llama").unwrap();
    assert_eq!(llama.base_url, "http://127.0.0.1:8000/v1");
    assert_eq!(llama.provider_type, ProviderType::OpenaiCompatible);
    assert!(llama.api_key.is_none());
    let targets: Vec<&str> = settings.aliases["fast"]
        .iter()
        .map(|&i| settings.deployments[i].name.as_str())
        .collect();
    assert_eq!(targets, ["gpt", "llama"]);
}

#[test]
fn names_the_field_of_every_problem() {
    let found = problems(
        r#"
        [server]
        listen = "nowhere"

        [providers.anthropic]
        type = "anthropic"
        api_key_env = "MISSING_KEY"

        [providers.vllm]
        type = "openai_compatible"

        [deployments.claude]
        provider = "anthropic"
        model = "claude-sonnet-4-5"

        [deployments.ghost]
        provider = "nobody"
        model = "x"

        [aliases.main]
        deployments = ["claude", "absent"]
        "#,
    );
    let expect = [
        "server.listen: `nowhere` is not an address:port",
        "providers.vllm.base_url: required for type `openai_compatible`",
        "providers.anthropic.api_key_env: environment variable `MISSING_KEY` is not set",
        "deployments.ghost.provider: no provider named `nobody`",
        "aliases.main.deployments[1]: no deployment named `absent`",
    ];
    for needle in expect {
        assert!(
            found.iter().any(|p| p.starts_with(needle)),
            "missing `{needle}` in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn unknown_fields_and_wrong_types_are_parse_errors_with_position() {
    let err = load("[server]\nlisten = \"127.0.0.1:1\"\nmax_body = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_body"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err = load("[server]\nmax_body_bytes = \"big\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_body_bytes"), "{err}");
    let err = load("[providers.x]\ntype = \"gemini-ish\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant"), "{err}");
}
