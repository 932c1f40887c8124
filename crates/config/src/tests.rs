use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use sluice_providers::HttpVersion;
use sluice_routing::{Condition, Conditions, Strategy};

use crate::{ConfigError, OtlpProtocol, ProviderType, Settings};

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
    assert!(matches!(
        &settings.store.location,
        crate::StoreLocation::Sqlite(path) if path == Path::new("/etc/sluice/sluice-data/sluice.db")
    ));
    assert!(settings.deployments.is_empty());
}

#[test]
fn records_are_kept_thirty_days_unless_told_otherwise() {
    let day = Duration::from_secs(86_400);
    assert_eq!(load("").unwrap().store.retention, Some(30 * day));
    let settings = load("[store]\nretention_days = 7\n").unwrap();
    assert_eq!(settings.store.retention, Some(7 * day));
    let forever = load("[store]\nretention_days = 0\n").unwrap();
    assert_eq!(forever.store.retention, None, "0 keeps records forever");
}

#[test]
fn a_postgres_url_replaces_the_file_and_is_kept_secret() {
    let settings = load("[store]\nurl = \"postgres://app:s3cret@db:5432/sluice\"\n").unwrap();
    match &settings.store.location {
        crate::StoreLocation::Postgres(url) => {
            assert_eq!(url.expose_secret(), "postgres://app:s3cret@db:5432/sluice")
        }
        other => panic!("expected Postgres, got {other:?}"),
    }
    assert!(!format!("{:?}", settings.store).contains("s3cret"));
}

#[test]
fn a_store_is_a_file_or_a_postgres_url_not_both() {
    assert_eq!(
        problems("[store]\npath = \"a.db\"\nurl = \"postgres://db/sluice\"\n"),
        [
            "store.url: cannot be set together with store.path: `path` is the embedded SQLite \
             store, `url` a Postgres one; keep one"
        ]
    );
    assert_eq!(
        problems("[store]\nurl = \"mysql://db/sluice\"\n"),
        ["store.url: must be a Postgres URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"]
    );
    assert!(load("[store]\nurl = \"postgresql://db/sluice\"\n").is_ok());
}

#[test]
fn a_postgres_url_may_come_from_the_environment() {
    let from_env = |text: &str| {
        Settings::from_toml(text, Path::new("/etc/sluice/sluice.toml"), |name| {
            (name == "SLUICE_STORE_URL").then(|| "postgres://app:s3cret@db/sluice".to_owned())
        })
    };
    let settings = from_env("[store]\nurl_env = \"SLUICE_STORE_URL\"\n").unwrap();
    assert!(matches!(
        &settings.store.location,
        crate::StoreLocation::Postgres(url) if url.expose_secret() == "postgres://app:s3cret@db/sluice"
    ));
    assert_eq!(
        problems("[store]\nurl_env = \"SLUICE_UNSET_STORE_URL\"\n"),
        ["store.url_env: environment variable `SLUICE_UNSET_STORE_URL` is not set"]
    );
    assert_eq!(
        problems("[store]\nurl = \"postgres://db/s\"\nurl_env = \"SLUICE_STORE_URL\"\n"),
        ["store.url: set url or url_env, not both"]
    );
}

#[test]
fn the_journal_sits_beside_the_store_unless_named_and_can_be_turned_off() {
    use crate::JournalSettings;
    let journal = |text: &str| load(text).unwrap().store.journal;
    assert_eq!(
        journal(""),
        Some(JournalSettings {
            dir: "/etc/sluice/sluice-data/journal".into(),
            max_bytes: 1024 << 20,
        })
    );
    assert_eq!(
        journal("[store]\npath = \"/var/lib/sluice/s.db\"\n")
            .unwrap()
            .dir,
        Path::new("/var/lib/sluice/journal")
    );
    assert_eq!(
        journal("[store]\nurl = \"postgres://db/s\"\n").unwrap().dir,
        Path::new("/etc/sluice/sluice-data/journal")
    );
    assert_eq!(
        journal("[store]\njournal = \"spool\"\njournal_max_mb = 8\n"),
        Some(JournalSettings {
            dir: "/etc/sluice/spool".into(),
            max_bytes: 8 << 20,
        })
    );
    assert_eq!(journal("[store]\njournal_max_mb = 0\n"), None);
    assert_eq!(
        problems("[store]\njournal = \"\"\njournal_max_mb = 1048577\n"),
        [
            "store.journal_max_mb: must be at most 1048576 (0 turns the journal off)",
            "store.journal: must be a folder; set journal_max_mb = 0 to turn the journal off"
        ]
    );
}

#[test]
fn keys_are_honoured_offline_five_minutes_unless_told_otherwise() {
    assert_eq!(
        load("").unwrap().store.offline_keys,
        Duration::from_secs(300)
    );
    assert_eq!(
        load("[store]\noffline_keys_ms = 0\n")
            .unwrap()
            .store
            .offline_keys,
        Duration::ZERO
    );
    assert_eq!(
        problems("[store]\noffline_keys_ms = 604800001\n"),
        [
            "store.offline_keys_ms: must be at most 604800000 (a week; 0 refuses every key while the store cannot be reached)"
        ]
    );
}

#[test]
fn retention_beyond_a_century_or_below_zero_is_refused() {
    assert_eq!(
        problems("[store]\nretention_days = 36501\n"),
        ["store.retention_days: must be at most 36500 (0 keeps records forever)"]
    );
    assert!(load("[store]\nretention_days = 36500\n").is_ok());
    let negative = load("[store]\nretention_days = -1\n");
    assert!(
        matches!(&negative, Err(ConfigError::Parse { message, .. }) if message.contains("retention_days")),
        "{negative:?}"
    );
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
        .deployments()
        .map(|i| settings.deployments[i].name.as_str())
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

        [providers.typo]
        type = "openai_compatible"
        base_url = "http://exa mple.com/v1"

        [providers.ftp]
        type = "openai_compatible"
        base_url = "ftp://files.example.com/v1"

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
        "providers.typo.base_url: `http://exa mple.com/v1` is not a URL: invalid international domain name",
        "providers.ftp.base_url: `ftp://files.example.com/v1` must be an http:// or https:// URL",
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

#[test]
fn reads_routing_strategies_retries_breakers_and_timeouts() {
    let settings = Settings::from_toml(
        r#"
        [upstream]
        first_token_timeout_ms = 30000

        [breaker]
        consecutive_failures = 3
        open_ms = 2000

        [providers.local]
        type = "openai_compatible"
        base_url = "http://127.0.0.1:8000/v1"

        [deployments.a]
        provider = "local"
        model = "m"
        max_concurrency = 8
        breaker = { open_ms = 500 }

        [deployments.b]
        provider = "local"
        model = "m"

        [deployments.c]
        provider = "local"
        model = "m"

        [aliases.chat]
        deployments = ["a", "b"]
        strategy = "weighted"
        weights = [3, 1]
        fallbacks = ["c"]
        fallback_on = ["server_error", "context_length_exceeded"]
        retry = { max_attempts = 4, budget_ratio = 0.1 }
        timeouts = { first_token_ms = 1500, total_ms = 20000 }
        hedge = { after_ms = 300, percentile = 95 }
        drill = { share = 0.01 }

        [aliases.plain]
        deployments = ["c"]
        "#,
        Path::new("sluice.toml"),
        |_| None,
    )
    .unwrap();
    let a = settings.deployment("a").unwrap();
    assert_eq!(a.capacity.max_concurrency, Some(8));
    assert_eq!(
        a.capacity.max_queue, 8,
        "the queue defaults to the concurrency"
    );
    assert_eq!(a.breaker.open_for, Duration::from_millis(500));
    assert_eq!(
        a.breaker.consecutive_failures, 3,
        "the rest comes from [breaker]"
    );
    let b = settings.deployment("b").unwrap();
    assert_eq!(b.capacity.max_concurrency, None);
    assert_eq!(b.breaker.open_for, Duration::from_millis(2000));

    let chat = &settings.aliases["chat"];
    assert_eq!(chat.pool, [(0, 3), (1, 1)]);
    assert_eq!(chat.fallbacks, [2]);
    let policy = &chat.policy;
    assert_eq!(policy.strategy, Strategy::Weighted);
    assert!(
        policy
            .fallback_on
            .contains(Condition::ContextLengthExceeded)
    );
    assert!(!policy.fallback_on.contains(Condition::RateLimited));
    assert_eq!(policy.retry.max_attempts, Some(4));
    assert_eq!(policy.retry.budget.ratio, 0.1);
    assert_eq!(policy.retry.budget.min_retries, 10, "default");
    assert_eq!(policy.timeouts.first_token, Duration::from_millis(1500));
    assert_eq!(policy.timeouts.total, Duration::from_secs(20));
    assert_eq!(
        policy.timeouts.connect,
        Duration::from_secs(5),
        "from [upstream]"
    );
    assert_eq!(policy.hedge.unwrap().percentile, Some(95.0));
    assert_eq!(policy.drill_share, 0.01);

    let plain = &settings.aliases["plain"].policy;
    assert_eq!(plain.strategy, Strategy::Ordered);
    assert_eq!(plain.fallback_on, Conditions::default());
    assert_eq!(plain.timeouts.first_token, Duration::from_secs(30));
    assert!(plain.hedge.is_none());
}

#[test]
fn names_the_field_of_every_routing_problem() {
    let found = problems(
        r#"
        [breaker]
        failure_ratio = 2.0

        [providers.local]
        type = "openai_compatible"
        base_url = "http://127.0.0.1:8000/v1"

        [deployments.a]
        provider = "local"
        model = "m"
        max_concurrency = 0

        [aliases.chat]
        deployments = ["a"]
        strategy = "fastest"
        weights = [1]
        fallbacks = ["a"]
        fallback_on = ["server_error", "bad_vibes"]
        retry = { max_attempts = 0 }
        hedge = { after_ms = 0 }
        drill = { share = 1.5 }
        "#,
    );
    for expected in [
        "breaker.failure_ratio: must be in (0, 1]",
        "deployments.a.max_concurrency: must be greater than 0 (leave it out for no limit)",
        "aliases.chat.strategy: `fastest` is not a strategy (ordered, weighted, least_latency, power_of_two)",
        "aliases.chat.weights: only used with strategy = \"weighted\"",
        "aliases.chat.fallbacks[0]: `a` is already in the pool (deployments)",
        "aliases.chat.fallback_on[1]: `bad_vibes` is not a condition",
        "aliases.chat.retry.max_attempts: must be at least 1",
        "aliases.chat.hedge.after_ms: must be greater than 0",
        "aliases.chat.drill.share: must be between 0 and 1",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing `{expected}` in {found:#?}"
        );
    }
}

#[test]
fn tracing_is_off_without_an_endpoint() {
    let t = load("").unwrap().telemetry;
    assert_eq!(t.otlp_endpoint, None);
    assert_eq!(t.otlp_protocol, OtlpProtocol::HttpProtobuf);
    assert!(t.otlp_headers.is_empty());
    assert_eq!(t.service_name, "sluice");
    assert_eq!(t.trace_queue, 8_192);
    assert_eq!(t.otlp_timeout, Duration::from_secs(10));
}

#[test]
fn reads_telemetry_with_plain_and_secret_headers() {
    let t = load(
        r#"
        [telemetry]
        otlp_endpoint = "https://otel.example.com:4317"
        otlp_protocol = "grpc"
        otlp_headers = { "x-tenant" = "acme" }
        otlp_headers_env = { "authorization" = "OPENAI_API_KEY" }
        service_name = "sluice-eu"
        trace_queue = 100
        otlp_timeout_ms = 2500
        "#,
    )
    .unwrap()
    .telemetry;
    assert_eq!(
        t.otlp_endpoint.as_deref(),
        Some("https://otel.example.com:4317")
    );
    assert_eq!(t.otlp_protocol, OtlpProtocol::Grpc);
    let headers: Vec<(&str, &str)> = t
        .otlp_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(
        headers,
        [("x-tenant", "acme"), ("authorization", "sk-test")]
    );
    assert_eq!(t.service_name, "sluice-eu");
    assert_eq!(t.trace_queue, 100);
    assert_eq!(t.otlp_timeout, Duration::from_millis(2500));
    // Header values never show in debug output.
    assert!(!format!("{t:?}").contains("sk-test"));
}

#[test]
fn names_the_field_of_every_telemetry_problem() {
    assert_eq!(
        problems(
            r#"
            [telemetry]
            otlp_endpoint = "collector:4318"
            otlp_protocol = "http/json"
            otlp_headers = { "bad header" = "v", "x-ok" = "line\nbreak", "x-both" = "a" }
            otlp_headers_env = { "x-missing" = "NOT_SET", "X-Both" = "OPENAI_API_KEY" }
            service_name = " "
            trace_queue = 0
            otlp_timeout_ms = 0
            "#
        ),
        [
            "telemetry.otlp_endpoint: must be an http:// or https:// URL (leave it out to turn tracing off)",
            "telemetry.otlp_protocol: `http/json` is not an OTLP protocol (http/protobuf, grpc)",
            "telemetry.otlp_headers.bad header: `bad header` is not a header name",
            "telemetry.otlp_headers.x-ok: may hold only visible ASCII characters, spaces and tabs",
            "telemetry.otlp_headers_env.X-Both: `X-Both` is also set in telemetry.otlp_headers",
            "telemetry.otlp_headers_env.x-missing: environment variable `NOT_SET` is not set",
            "telemetry.service_name: must not be empty",
            "telemetry.trace_queue: must be greater than 0",
            "telemetry.otlp_timeout_ms: must be greater than 0",
        ]
    );
    for endpoint in ["", "http://", "https:///v1", "http://a b"] {
        let text = format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
        assert_eq!(problems(&text).len(), 1, "{endpoint:?}");
    }
    assert!(load("[telemetry]\nsampling = 0.5\n").is_err());
}

const TWO_ALIASES: &str = r#"
[providers.openai]
type = "openai"
api_key_env = "OPENAI_API_KEY"

[deployments.big]
provider = "openai"
model = "gpt-4o"
region = "eu-north"

[deployments.small]
provider = "openai"
model = "my-finetune"

[aliases.smart]
deployments = ["big"]
roles = ["operator"]
over_soft_limit = "cheap"
limits = { requests_per_minute = 600, tokens_per_minute = 100000 }

[aliases.cheap]
deployments = ["small"]
"#;

#[test]
fn budgets_default_to_in_process_counters_that_fail_closed() {
    let settings = load("").unwrap();
    let budgets = &settings.policy.budgets;
    assert!(matches!(budgets.counters, crate::CounterBackend::Memory));
    assert_eq!(budgets.on_counter_error, crate::OnCounterError::Closed);
    assert_eq!(budgets.reload, Duration::from_secs(5));
    assert_eq!(budgets.max_counters_per_tenant, 50_000);
    assert!(
        settings.policy.admin_token.is_none(),
        "the admin API is off"
    );
}

#[test]
fn reads_alias_rules_prices_and_regions() {
    let text = format!(
        "{TWO_ALIASES}\n[prices.my-finetune]\ninput_per_mtok = 0.5\noutput_per_mtok = 1.5\n\n[carbon]\nregions = {{ eu-north = 20 }}\n"
    );
    let settings = load(&text).unwrap();
    let smart = &settings.aliases["smart"];
    assert_eq!(smart.roles, ["operator"]);
    assert_eq!(smart.over_soft_limit.as_deref(), Some("cheap"));
    assert_eq!(smart.limits.len(), 2);
    assert_eq!(smart.limits[0].scope.to_text(), "alias:smart");
    assert_eq!(
        settings.deployment("big").unwrap().region.as_deref(),
        Some("eu-north")
    );
    let price = settings.policy.prices.lookup("my-finetune").unwrap();
    let usage = sluice_types::Usage {
        input_tokens: 1_000_000,
        output_tokens: 1_000_000,
        ..Default::default()
    };
    assert_eq!(
        price.cost(&usage, sluice_policy::Tier::Standard).micros(),
        2_000_000
    );
    assert_eq!(settings.policy.energy.intensity(Some("eu-north")), 20);
}

#[test]
fn names_the_field_of_every_policy_problem() {
    let text = TWO_ALIASES.replace("over_soft_limit = \"cheap\"", "over_soft_limit = \"nope\"")
        + "\n[budgets]\ncounters = \"etcd\"\non_counter_error = \"maybe\"\n\n[admin]\ntoken_env = \"SHORT\"\n\n[prices.x]\ninput_per_mtok = -1\noutput_per_mtok = 1\n";
    let found = Settings::from_toml(&text, Path::new("sluice.toml"), |name| match name {
        "OPENAI_API_KEY" => Some("sk".into()),
        "SHORT" => Some("too-short".into()),
        _ => None,
    });
    let Err(ConfigError::Invalid(problems)) = found else {
        panic!("expected problems, got {found:?}");
    };
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "aliases.smart.over_soft_limit: no alias named `nope` in [aliases]",
            "budgets.counters: `etcd` is not a counter backend (memory, redis)",
            "budgets.on_counter_error: `maybe` is not a choice (closed, open)",
            "admin.token_env: environment variable `SHORT` holds fewer than 24 characters",
            "prices.x.input_per_mtok: must be a number of USD, 0 or more",
        ]
    );
}

#[test]
fn redis_counters_need_a_url() {
    assert_eq!(
        problems("[budgets]\ncounters = \"redis\"\n"),
        ["budgets.redis_url: required when counters = \"redis\" (or redis_url_env)"]
    );
    let settings = load("[budgets]\ncounters = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\non_counter_error = \"open\"\n").unwrap();
    match &settings.policy.budgets.counters {
        crate::CounterBackend::Redis { url, prefix, .. } => {
            assert_eq!(url.expose_secret(), "redis://127.0.0.1:6379");
            assert_eq!(prefix, "{sluice}:");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connection_bounds_have_defaults_and_are_checked() {
    let server = load("").unwrap().server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        server.max_connections,
        crate::file::default_max_connections()
    );
    assert_eq!(
        server.max_connections_per_client,
        1_000.min(server.max_connections)
    );
    assert_eq!(server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(server.listen_backlog, 4096);
    assert_eq!(server.metrics_listen, None);
    // Within the bounds of the open-file limit, whatever it is here.
    assert!((64..=100_000).contains(&server.max_connections));

    let server = load(
        "[server]\nheader_read_timeout_ms = 2000\nmax_connections = 50\n\
         max_connections_per_client = 5\nmetrics_listen = \"127.0.0.1:9464\"\n",
    )
    .unwrap()
    .server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(server.max_connections_per_client, 5);
    assert_eq!(
        server.metrics_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9464")
    );

    let found = problems(
        "[server]\nheader_read_timeout_ms = 0\nshutdown_grace_ms = 3600001\n\
         max_connections = 10\nmax_connections_per_client = 11\nlisten_backlog = 0\n\
         metrics_listen = \"nowhere\"\n",
    );
    for field in [
        "server.header_read_timeout_ms",
        "server.shutdown_grace_ms",
        "server.max_connections_per_client",
        "server.listen_backlog",
        "server.metrics_listen",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(field)),
            "{field}: {found:?}"
        );
    }
}

#[test]
fn read_only_commands_load_without_provider_keys() {
    let text = r#"
        [providers.anthropic]
        type = "anthropic"
        api_key_env = "MISSING_KEY"

        [deployments.claude]
        provider = "anthropic"
        model = "claude-sonnet-4-5"

        [store]
        path = "records.db"
        "#;
    let origin = Path::new("/etc/sluice/sluice.toml");
    let settings =
        Settings::from_toml_with(text, origin, |_| None, crate::ProviderKeys::NotNeeded).unwrap();
    assert!(settings.deployments[0].api_key.is_none());
    assert!(matches!(
        &settings.store.location,
        crate::StoreLocation::Sqlite(path) if path == Path::new("/etc/sluice/records.db")
    ));
    // Serving still needs the key, and says which variable is missing.
    assert!(
        Settings::from_toml_with(text, origin, |_| None, crate::ProviderKeys::Required).is_err()
    );
    // Everything else is still validated.
    let broken = text.replace("model = \"claude-sonnet-4-5\"", "model = \"\"");
    assert!(
        Settings::from_toml_with(&broken, origin, |_| None, crate::ProviderKeys::NotNeeded)
            .is_err()
    );
}

const DLP_ROUTES: &str = r#"
[providers.openai]
type = "openai"
api_key_env = "OPENAI_API_KEY"
[deployments.mini]
provider = "openai"
model = "gpt-4o-mini"
[aliases.fast]
deployments = ["mini"]
[aliases.internal]
deployments = ["mini"]
[aliases.internal.dlp]
detectors = { email = "off", iban = "block" }
answers = false
"#;

#[test]
fn dlp_actions_merge_global_custom_and_route_and_the_scanner_runs_every_named_detector() {
    use crate::DlpAction;
    use sluice_dlp::Detector;
    let settings = load(&format!(
        r#"{DLP_ROUTES}
[dlp]
detectors = {{ email = "pseudonymise", payment_card = "redact" }}
[[dlp.custom]]
name = "codename"
words = ["bluebird"]
action = "block"
[dlp.roles.compliance]
payment_card = "log"
"#
    ))
    .unwrap();
    assert_eq!(
        settings.policy.dlp.detectors,
        [Detector::Email, Detector::PaymentCard, Detector::Iban]
    );
    assert_eq!(settings.policy.dlp.custom.len(), 1);
    let fast = settings.aliases["fast"].dlp.clone().unwrap();
    assert_eq!(
        fast.actions.into_iter().collect::<Vec<_>>(),
        [
            ("codename".to_string(), DlpAction::Block),
            ("email".to_string(), DlpAction::Pseudonymise),
            ("payment_card".to_string(), DlpAction::Redact),
        ]
    );
    assert!(fast.answers);
    assert_eq!(fast.roles[0].0, "compliance");
    let internal = settings.aliases["internal"].dlp.clone().unwrap();
    assert!(!internal.actions.contains_key("email"), "off on the route");
    assert_eq!(internal.actions["iban"], DlpAction::Block);
    assert!(!internal.answers);
    // Without [dlp] nothing acts on a route that does not ask for it.
    let plain = load(DLP_ROUTES).unwrap();
    assert!(plain.aliases["fast"].dlp.is_none());
}

#[test]
fn dlp_names_actions_and_custom_patterns_are_checked_with_their_field_paths() {
    let problems = problems(&format!(
        r#"{DLP_ROUTES}
[dlp]
detectors = {{ emails = "redact" }}
[[dlp.custom]]
name = "ticket"
pattern = "TICKET-("
action = "redact"
[[dlp.custom]]
name = "both"
pattern = "x"
words = ["y"]
action = "log"
"#
    ));
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("dlp.detectors.emails: `emails` is not a detector")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("dlp.custom[1]: needs exactly one of `pattern` and `words`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("dlp.custom: detector `ticket`")),
        "{problems:?}"
    );
    let unknown_action = load(&format!(
        "{DLP_ROUTES}\n[dlp]\ndetectors = {{ email = \"shred\" }}\n"
    ));
    assert!(
        matches!(&unknown_action, Err(ConfigError::Parse { message, .. }) if message.contains("shred")),
        "{unknown_action:?}"
    );
}

#[test]
fn structured_output_support_is_declared_per_provider_and_checked() {
    let settings = load(
        r#"
        [providers.openai]
        type = "openai"
        api_key_env = "OPENAI_API_KEY"

        [providers.vllm]
        type = "openai_compatible"
        base_url = "http://vllm:8000/v1"
        structured_output = "none"

        [providers.groq]
        type = "openai_compatible"
        base_url = "http://groq/v1"
        structured_output = "json_object"

        [deployments.gpt]
        provider = "openai"
        model = "gpt-4o-mini"

        [deployments.llama]
        provider = "vllm"
        model = "llama"

        [deployments.fast]
        provider = "groq"
        model = "llama"
        "#,
    )
    .unwrap();
    let support = |name: &str| {
        settings
            .deployments
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .structured_output
            .as_str()
    };
    assert_eq!(support("gpt"), "json_schema");
    assert_eq!(support("llama"), "none");
    assert_eq!(support("fast"), "json_object");

    let found = problems(
        r#"
        [providers.anthropic]
        type = "anthropic"
        api_key_env = "OPENAI_API_KEY"
        structured_output = "json_object"

        [providers.vllm]
        type = "openai_compatible"
        base_url = "http://vllm:8000/v1"
        structured_output = "yes"
        "#,
    );
    assert_eq!(
        found,
        [
            "providers.anthropic.structured_output: `json_object` is not available for type `anthropic` (json_schema, none)",
            "providers.vllm.structured_output: `yes` is not one of json_schema, json_object, none",
        ],
        "{found:#?}"
    );
}

#[test]
fn the_http_version_is_chosen_per_provider_and_checked() {
    let settings = load(
        r#"
        [upstream]
        http2_streams_per_connection = 64

        [providers.openai]
        type = "openai"
        api_key_env = "OPENAI_API_KEY"

        [providers.mesh]
        type = "openai_compatible"
        base_url = "http://vllm.mesh:8000/v1"
        http_version = "http2"

        [providers.legacy]
        type = "openai_compatible"
        base_url = "https://old.example/v1"
        http_version = "http1"

        [deployments.gpt]
        provider = "openai"
        model = "gpt-4o-mini"

        [deployments.llama]
        provider = "mesh"
        model = "llama"

        [deployments.old]
        provider = "legacy"
        model = "llama"
        "#,
    )
    .unwrap();
    let version = |name: &str| {
        settings
            .deployments
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .http_version
    };
    assert_eq!(version("gpt"), HttpVersion::Auto);
    assert_eq!(version("llama"), HttpVersion::Http2);
    assert_eq!(version("old"), HttpVersion::Http1);
    assert_eq!(settings.upstream.http2_streams_per_connection, 64);
    assert_eq!(load("").unwrap().upstream.http2_streams_per_connection, 100);

    let found = problems(
        r#"
        [upstream]
        http2_streams_per_connection = 0

        [providers.mesh]
        type = "openai_compatible"
        base_url = "http://vllm.mesh:8000/v1"
        http_version = "h2c"
        "#,
    );
    assert_eq!(
        found,
        [
            "upstream.http2_streams_per_connection: must be greater than 0",
            "providers.mesh.http_version: `h2c` is not one of auto, http1, http2",
        ],
        "{found:#?}"
    );
}

#[test]
fn a_reload_names_the_changes_that_need_a_restart() {
    let routes = r#"
[providers.openai]
type = "openai"
api_key_env = "OPENAI_API_KEY"

[deployments.a]
provider = "openai"
model = "gpt-4o-mini"

[aliases.fast]
deployments = ["a"]
"#;
    let running = load(routes).unwrap();
    assert!(
        running.server.watch_config,
        "the file is watched by default"
    );
    // Routes, prices and upstream timeouts reload: nothing to restart for.
    let rerouted = load(&format!(
        "{}\n[upstream]\ntotal_timeout_ms = 5000\n[prices.\"gpt-4o\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n",
        routes.replace("gpt-4o-mini", "gpt-4o")
    ))
    .unwrap();
    assert_eq!(running.needs_restart(&rerouted), Vec::<&str>::new());

    let moved = load(&format!(
        "[server]\nlisten = \"127.0.0.1:4100\"\nwatch_config = false\n[store]\nretention_days = 7\n[budgets]\nreload_ms = 1000\n{routes}"
    ))
    .unwrap();
    assert_eq!(
        running.needs_restart(&moved),
        [
            "server.listen",
            "server.watch_config",
            "store.retention_days",
            "budgets.reload_ms"
        ]
    );
}
