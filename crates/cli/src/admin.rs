//! Operator commands that work on the store and configuration directly: `check-config`,
//! `keys`, `logs`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use sluice_store::{
    KeyInfo, NewKey, RecordFilter, RecordMatch, RequestRecord, StatusFilter, Stores,
};

use crate::serve::{load_settings, load_settings_read_only};
use sluice_types::record::Next;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// The tenant that owns the key's data and quota: its records, counters and end-user
        /// ids. Default: its organisation, else `default`.
        #[arg(long)]
        tenant: Option<String>,
        /// The organisation the key belongs to (its budgets draw on the organisation's).
        #[arg(long = "org")]
        organisation: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// The end user the key acts for, unless a request names one.
        #[arg(long)]
        user: Option<String>,
        /// A role the key holds (`operator`, `user`, or your own; repeat for several). Routes
        /// with `roles` admit only keys that hold one of them.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// An alias the key may call (repeat for several). Without any, every alias.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Days until the key stops working.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Keep the request and response bodies of this key's requests (redacted, capped;
        /// see `sluice logs show`).
        #[arg(long)]
        log_bodies: bool,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (or a unique start of it).
    Revoke { id: String },
}

async fn open_store(config: Option<PathBuf>) -> anyhow::Result<Stores> {
    let settings = load_settings_read_only(config.as_deref())?;
    open_configured_store(&settings).await
}

/// The store the configuration names.
pub(crate) async fn open_configured_store(
    settings: &sluice_config::Settings,
) -> anyhow::Result<Stores> {
    let location = store_location(settings);
    Stores::open(&location)
        .await
        .with_context(|| format!("opening the store at {location}"))
}

/// Has the gateway drop a key from its cache as soon as the store announces its revocation
/// (Postgres: made through any replica or the CLI), until `stop`. `None` when the store
/// announces nothing (SQLite: cached keys expire instead).
pub(crate) async fn follow_key_changes(
    store: &Stores,
    gateway: &sluice_pipeline::Gateway,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(changes) = store
        .keys
        .key_changes()
        .await
        .context("listening for key changes")?
    else {
        return Ok(None);
    };
    let gateway = gateway.clone();
    #[expect(
        clippy::disallowed_methods,
        reason = "owned: serve cancels `stop` and awaits the JoinHandle at shutdown"
    )]
    let task = tokio::spawn(async move { gateway.follow_key_changes(changes, stop).await });
    Ok(Some(task))
}

/// Where the configuration keeps the store, as the store crate names it.
pub(crate) fn store_location(settings: &sluice_config::Settings) -> sluice_store::StoreLocation {
    use secrecy::ExposeSecret;
    match &settings.store.location {
        sluice_config::StoreLocation::Sqlite(path) => {
            sluice_store::StoreLocation::Sqlite(path.clone())
        }
        sluice_config::StoreLocation::Postgres(url) => {
            sluice_store::StoreLocation::Postgres(url.expose_secret().to_owned())
        }
    }
}

pub(crate) fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load_settings(config.as_deref())?;
    println!("configuration is valid");
    println!("  listen       {}", settings.server.listen);
    println!("  store        {}", store_location(&settings));
    for d in &settings.deployments {
        let key = if d.api_key.is_some() {
            "key set"
        } else {
            "no key"
        };
        let http = match d.http_version {
            sluice_providers::HttpVersion::Auto => String::new(),
            version => format!(", {}", version.as_str()),
        };
        println!(
            "  deployment   {} -> {} {} at {} ({key}{http})",
            d.name,
            d.provider_type.as_str(),
            d.model,
            d.base_url
        );
    }
    for (alias, route) in &settings.aliases {
        let name = |i: usize| settings.deployments[i].name.as_str();
        let pool: Vec<&str> = route.pool.iter().map(|&(i, _)| name(i)).collect();
        let fallbacks: Vec<&str> = route.fallbacks.iter().map(|&i| name(i)).collect();
        let mut line = format!(
            "  alias        {alias} -> {} ({})",
            pool.join(", "),
            route.policy.strategy.as_str()
        );
        if !fallbacks.is_empty() {
            line.push_str(&format!(", then {}", fallbacks.join(", ")));
        }
        if let Some(hedge) = route.policy.hedge {
            line.push_str(&format!("; hedge after {} ms", hedge.after.as_millis()));
        }
        println!("{line}");
    }
    Ok(())
}

pub(crate) async fn keys(config: Option<PathBuf>, command: KeysCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        KeysCommand::Create {
            name,
            tenant,
            organisation,
            team,
            project,
            user,
            roles,
            aliases,
            expires_in_days,
            log_bodies,
            json,
        } => {
            let expires_at =
                expires_in_days.map(|d| sluice_store::now_ms() + i64::from(d) * 86_400_000);
            let created = store
                .keys
                .create_key(NewKey {
                    name,
                    tenant,
                    organisation,
                    team,
                    project,
                    user,
                    roles,
                    aliases,
                    expires_at,
                    log_bodies,
                })
                .await?;
            if json {
                let mut value = serde_json::to_value(&created.info)?;
                value["secret"] = created.secret.into();
                println!("{value}");
            } else {
                println!("{}", created.secret);
                eprintln!(
                    "created {} ({}); the secret above is shown only once",
                    created.info.id, created.info.name
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = store.keys.list_keys().await?;
            if json {
                for key in &keys {
                    println!("{}", serde_json::to_string(key)?);
                }
            } else {
                print_keys(&keys);
            }
        }
        KeysCommand::Revoke { id } => {
            let key = store.keys.revoke_key(&id).await?;
            println!("revoked {} ({})", key.id, key.name);
        }
    }
    store.close().await;
    Ok(())
}

fn print_keys(keys: &[KeyInfo]) {
    println!(
        "{:<20} {:<18} {:<16} {:<12} {:<12} {:<20} STATE",
        "ID", "PREFIX", "NAME", "TEAM", "USER", "CREATED"
    );
    for k in keys {
        let state = match (k.revoked_at, k.expires_at) {
            (Some(_), _) => "revoked".to_owned(),
            (None, Some(at)) if at <= sluice_store::now_ms() => "expired".to_owned(),
            _ if k.aliases.is_empty() => "active (all aliases)".to_owned(),
            _ => format!("active ({})", k.aliases.join(", ")),
        };
        println!(
            "{:<20} {:<18} {:<16} {:<12} {:<12} {:<20} {}",
            k.id,
            format!("{}…", k.prefix),
            k.name,
            k.team.as_deref().unwrap_or("-"),
            k.user.as_deref().unwrap_or("-"),
            timestamp(k.created_at),
            state
        );
    }
}

/// Records `sluice logs` prints when `-n` is not given.
const DEFAULT_LIMIT: u32 = 20;

/// `sluice logs`: which records to print, and how.
///
/// Global options (`--config`) go anywhere, `logs show` included; the list's filters are
/// refused with `show` (see [`LogsArgs::filters_given`]).
#[derive(clap::Args)]
pub(crate) struct LogsArgs {
    #[command(subcommand)]
    command: Option<LogsCommand>,
    /// Only requests made with this key (its id, `key_...`).
    #[arg(long = "key", value_name = "ID")]
    key_id: Option<String>,
    /// Only requests of this team.
    #[arg(long)]
    team: Option<String>,
    /// Only requests of this end user.
    #[arg(long)]
    user: Option<String>,
    /// Only requests for this model alias (the model the client asked for).
    #[arg(long)]
    alias: Option<String>,
    /// Only requests answered (last tried) by this provider.
    #[arg(long)]
    provider: Option<String>,
    /// Only requests answered (last tried) by this deployment.
    #[arg(long)]
    deployment: Option<String>,
    /// An exact status (`502`), a class (`5xx`, `4xx`), `error` (any record with an error
    /// code, including streams that failed after they started) or `ok` (none).
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    status: Option<StatusFilter>,
    /// Started at or after: a duration ago (`30s`, `15m`, `2h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_time)]
    since: Option<TimeArg>,
    /// Started at or before: a duration ago or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_time, conflicts_with = "follow")]
    until: Option<TimeArg>,
    /// How many records (with --follow: how many earlier ones before the new ones).
    #[arg(short = 'n', long, default_value_t = DEFAULT_LIMIT)]
    limit: u32,
    /// One JSON object per line, the whole record, instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep printing new records as they are written, until Ctrl-C (oldest first).
    #[arg(short = 'f', long)]
    follow: bool,
}

#[derive(Subcommand)]
pub(crate) enum LogsCommand {
    /// Explain one request: who sent it, what served it, and every attempt in order.
    Show {
        /// The request id (the `x-request-id` header), or a unique start of it.
        id: String,
        /// The record as one JSON object instead.
        #[arg(long)]
        json: bool,
    },
}

/// A `--since` / `--until` value, resolved against the clock when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeArg {
    Ago(std::time::Duration),
    /// Unix milliseconds.
    At(i64),
}

impl TimeArg {
    pub(crate) fn resolve(self, now_ms: i64) -> i64 {
        match self {
            TimeArg::Ago(ago) => {
                now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
            }
            TimeArg::At(ms) => ms,
        }
    }
}

fn parse_status(text: &str) -> Result<StatusFilter, String> {
    let lower = text.to_ascii_lowercase();
    let invalid = || {
        format!("`{text}` is not a status: give a code (`502`), a class (`5xx`), `error` or `ok`")
    };
    match lower.as_str() {
        "error" => Ok(StatusFilter::Error),
        "ok" => Ok(StatusFilter::Ok),
        class if class.len() == 3 && class.ends_with("xx") => match class.bytes().next() {
            Some(digit @ b'1'..=b'5') => Ok(StatusFilter::Class(digit - b'0')),
            _ => Err(invalid()),
        },
        code => match code.parse::<u16>() {
            Ok(code @ 100..=599) => Ok(StatusFilter::Code(code)),
            _ => Err(invalid()),
        },
    }
}

pub(crate) fn parse_time(text: &str) -> Result<TimeArg, String> {
    if let Some(ago) = parse_ago(text) {
        return Ok(TimeArg::Ago(ago));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .map(TimeArg::At)
        .ok_or_else(|| {
            format!(
                "`{text}` is neither a duration ago (`15m`, `2h`, `7d`) nor an RFC 3339 time \
                 (`2026-03-01T12:00:00Z`)"
            )
        })
}

/// `30s`, `15m`, `2h`, `7d`.
fn parse_ago(text: &str) -> Option<std::time::Duration> {
    let unit = text.chars().last()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let count: u64 = text.strip_suffix(unit)?.parse().ok()?;
    count
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
}

impl LogsArgs {
    /// Whether any option of the list was given (`--json` aside, which `show` also takes).
    fn filters_given(&self) -> bool {
        self.key_id.is_some()
            || self.team.is_some()
            || self.user.is_some()
            || self.alias.is_some()
            || self.provider.is_some()
            || self.deployment.is_some()
            || self.status.is_some()
            || self.since.is_some()
            || self.until.is_some()
            || self.limit != DEFAULT_LIMIT
            || self.follow
    }

    fn filter(&self, now_ms: i64) -> RecordFilter {
        RecordFilter {
            key_id: self.key_id.clone(),
            team: self.team.clone(),
            user: self.user.clone(),
            alias: self.alias.clone(),
            provider: self.provider.clone(),
            deployment: self.deployment.clone(),
            status: self.status,
            since_ms: self.since.map(|t| t.resolve(now_ms)),
            until_ms: self.until.map(|t| t.resolve(now_ms)),
        }
    }
}

/// How often `--follow` looks for new records.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Records read per query while `--follow` catches up.
const FOLLOW_PAGE: u32 = 256;

pub(crate) async fn logs(config: Option<PathBuf>, args: LogsArgs) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let result = match &args.command {
        Some(LogsCommand::Show { .. }) if args.filters_given() => Err(anyhow::anyhow!(
            "`logs show` explains one record: the list's filters (--key, --team, --status, -n, \
             --follow, ...) do not apply to it"
        )),
        Some(LogsCommand::Show { id, json }) => show(&store, id, *json || args.json).await,
        None => list(&store, &args).await,
    };
    store.close().await;
    match result {
        // The reader went away (`sluice logs -f | head`): not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn list(store: &Stores, args: &LogsArgs) -> anyhow::Result<()> {
    let filter = args.filter(sluice_store::now_ms());
    let mut page = store.queries.find_records(&filter, args.limit).await?;
    let print = |records: &[RequestRecord]| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        for record in records {
            if args.json {
                serde_json::to_writer(&mut out, record)?;
                writeln!(out)?;
            } else {
                write_row(&mut out, record)?;
            }
        }
        out.flush()
    };
    if !args.json {
        write_header(&mut std::io::stdout().lock())?;
    }
    if !args.follow {
        print(&page.records)?;
        return Ok(());
    }
    // Like `tail -f`: the earlier records oldest first, then each new one below them.
    page.records.reverse();
    print(&page.records)?;
    let mut cursor = page.cursor;
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        loop {
            let page = store
                .queries
                .records_after(&filter, cursor, FOLLOW_PAGE)
                .await?;
            print(&page.records)?;
            cursor = page.cursor;
            if page.records.len() < FOLLOW_PAGE as usize {
                break;
            }
        }
    }
}

async fn show(store: &Stores, id: &str, json: bool) -> anyhow::Result<()> {
    let record = match store.queries.find_record(id).await? {
        RecordMatch::Found(record) => record,
        RecordMatch::NotFound => anyhow::bail!("no request record matches `{id}`"),
        RecordMatch::Ambiguous { ids, more } => anyhow::bail!(
            "`{id}` matches more than one request record ({}{}); give more of its id",
            ids.join(", "),
            if more { ", ..." } else { "" }
        ),
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &record)?;
        writeln!(out)?;
    } else {
        write_explained(&mut out, &record)?;
    }
    out.flush()?;
    Ok(())
}

fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<37} {:>6} {:<26} {:<20} {:<34} {:<16} {:>7} {:>7} {:>9} {:>9} ERROR",
        "TIME",
        "ID",
        "STATUS",
        "ENDPOINT",
        "ALIAS",
        "SERVED MODEL",
        "PROVIDER",
        "IN",
        "OUT",
        "TTFT ms",
        "TOTAL ms"
    )
}

fn write_row(out: &mut impl Write, r: &RequestRecord) -> std::io::Result<()> {
    let tokens = |t: Option<u32>| match t {
        Some(n) if r.usage_estimated => format!("~{n}"),
        Some(n) => n.to_string(),
        None => "-".into(),
    };
    writeln!(
        out,
        "{:<20} {:<37} {:>6} {:<26} {:<20} {:<34} {:<16} {:>7} {:>7} {:>9} {:>9} {}",
        timestamp(r.started_at),
        r.id,
        r.status,
        format!("{}{}", r.endpoint, if r.stream { " (stream)" } else { "" }),
        r.alias.as_deref().unwrap_or("-"),
        r.served_model.as_deref().unwrap_or("-"),
        r.provider.as_deref().unwrap_or("-"),
        tokens(r.input_tokens),
        tokens(r.output_tokens),
        r.ttft_us.map(ms).unwrap_or_else(|| "-".into()),
        ms(r.latency_us),
        r.error_code.map_or("", |code| code.as_str()),
    )
}

/// Microseconds as milliseconds with one decimal.
fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// Fields of a record (and of an attempt) that [`write_explained`] prints in their place; any
/// other field (one added to the records later) is printed as it serializes.
const EXPLAINED_RECORD_FIELDS: &str = "id started_at endpoint dialect tenant key_id team user alias \
    served_model provider deployment stream status error_code input_tokens output_tokens \
    cached_tokens usage_estimated ttft_us latency_us attempts drill_of schema_valid trace_id \
    span_id parent_span_id bodies organisation project feature cost_micros energy_uwh carbon_ug \
    degraded_from";

const EXPLAINED_ATTEMPT_FIELDS: &str = "deployment provider outcome status latency_us role \
    hedge ttft_us queue_us next span_id offset_us input_tokens output_tokens cost_micros";

/// One request, explained for a person reading it: who, what was asked, what served it, the
/// outcome, tokens, timings, then every attempt in order with what happened next and why.
fn write_explained(out: &mut impl Write, r: &RequestRecord) -> std::io::Result<()> {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "request      {}", r.id)?;
    writeln!(out, "started      {}", timestamp_ms(r.started_at))?;
    if let Some(trace) = &r.trace_id {
        let mut line = format!("trace        {trace}");
        if let Some(span) = &r.span_id {
            line.push_str(&format!(", span {span}"));
        }
        if let Some(parent) = &r.parent_span_id {
            line.push_str(&format!(", continues the client's span {parent}"));
        }
        writeln!(out, "{line}")?;
    }
    if let Some(live) = &r.drill_of {
        writeln!(
            out,
            "drill of     {live} (a shadow request: its cost is the drill's)"
        )?;
    }

    writeln!(out, "\nwho")?;
    writeln!(out, "  key        {}", or_dash(&r.key_id))?;
    if let Some(tenant) = &r.tenant {
        writeln!(out, "  tenant     {tenant}")?;
    }
    if r.organisation.is_some() {
        writeln!(out, "  org        {}", or_dash(&r.organisation))?;
    }
    writeln!(out, "  team       {}", or_dash(&r.team))?;
    if r.project.is_some() {
        writeln!(out, "  project    {}", or_dash(&r.project))?;
    }
    writeln!(out, "  user       {}", or_dash(&r.user))?;
    if r.feature.is_some() {
        writeln!(out, "  feature    {}", or_dash(&r.feature))?;
    }

    writeln!(out, "\nasked")?;
    writeln!(
        out,
        "  endpoint   {} ({} dialect{})",
        r.endpoint,
        r.dialect.as_str(),
        if r.stream { ", streamed" } else { "" }
    )?;
    match &r.degraded_from {
        Some(asked) => writeln!(
            out,
            "  alias      {asked}, served by {} instead (the caller was over a soft limit)",
            or_dash(&r.alias)
        )?,
        None => writeln!(out, "  alias      {}", or_dash(&r.alias))?,
    }

    writeln!(out, "\nserved by")?;
    if r.deployment.is_none() && r.served_model.is_none() {
        let why = if r.attempts.is_empty() {
            "no deployment was tried"
        } else {
            "no attempt answered"
        };
        writeln!(out, "  nothing    {why}")?;
    } else {
        writeln!(out, "  model      {}", or_dash(&r.served_model))?;
        writeln!(out, "  provider   {}", or_dash(&r.provider))?;
        writeln!(out, "  deployment {}", or_dash(&r.deployment))?;
    }

    writeln!(out, "\noutcome")?;
    let status_note = match (&r.error_code, r.stream, r.status) {
        (Some(_), true, 200) => " (the stream had started; it ended with an error event)",
        (_, _, 499) => " (the client left before the answer)",
        _ => "",
    };
    writeln!(out, "  status     {}{status_note}", r.status)?;
    writeln!(
        out,
        "  error      {}",
        r.error_code.map_or("none", |code| code.as_str())
    )?;
    if let Some(valid) = r.schema_valid {
        let verdict = if valid {
            "valid for the requested JSON schema"
        } else {
            "NOT valid for the requested JSON schema"
        };
        writeln!(out, "  schema     {verdict}")?;
    }

    let tokens = |t: Option<u32>| t.map_or_else(|| "-".into(), |n| n.to_string());
    writeln!(
        out,
        "\ntokens{}",
        if r.usage_estimated {
            " (estimated by the gateway: the provider reported none)"
        } else {
            ""
        }
    )?;
    writeln!(out, "  input      {}", tokens(r.input_tokens))?;
    writeln!(out, "  output     {}", tokens(r.output_tokens))?;
    writeln!(out, "  cached     {}", tokens(r.cached_tokens))?;

    writeln!(out, "\ncost")?;
    writeln!(
        out,
        "  price      {}",
        r.cost_micros
            .map_or_else(|| "- (no price for this model)".into(), crate::usage::usd)
    )?;
    if let (Some(uwh), Some(ug)) = (r.energy_uwh, r.carbon_ug) {
        // Estimates (docs/cost-energy-carbon.md): milliwatt-hours and milligrams read best.
        writeln!(
            out,
            "  energy     {:.3} mWh (estimated)",
            uwh as f64 / 1_000.0
        )?;
        writeln!(
            out,
            "  carbon     {:.3} mg CO2e (estimated)",
            ug as f64 / 1_000.0
        )?;
    }

    writeln!(out, "\ntimings")?;
    writeln!(
        out,
        "  TTFT       {}",
        r.ttft_us
            .map_or_else(|| "-".into(), |us| format!("{} ms", ms(us)))
    )?;
    writeln!(out, "  total      {} ms", ms(r.latency_us))?;

    writeln!(out, "\nattempts ({})", r.attempts.len())?;
    let attempts = serde_json::to_value(&r.attempts).unwrap_or_default();
    for (n, a) in r.attempts.iter().enumerate() {
        let role = a.role.map(|role| format!(", {role}")).unwrap_or_default();
        let hedge = if a.hedge { ", hedge" } else { "" };
        let offset = a
            .offset_us
            .map(|us| format!("  at +{} ms", ms(us)))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}. {} ({}{role}{hedge}){offset}",
            n + 1,
            a.deployment,
            a.provider
        )?;
        let upstream = a
            .status
            .map(|s| format!(", upstream HTTP {s}"))
            .unwrap_or_default();
        writeln!(out, "     outcome  {}{upstream}", a.outcome)?;
        if a.outcome.was_sent() {
            let optional =
                |v: Option<u64>| v.map_or_else(|| "-".into(), |us| format!("{} ms", ms(us)));
            writeln!(
                out,
                "     time     {} ms, TTFT {}, queued {}",
                ms(a.latency_us),
                optional(a.ttft_us),
                optional(a.queue_us)
            )?;
        }
        if a.input_tokens.is_some() || a.output_tokens.is_some() {
            writeln!(
                out,
                "     tokens   {} in, {} out",
                tokens(a.input_tokens),
                tokens(a.output_tokens)
            )?;
        }
        if let Some(micros) = a.cost_micros {
            writeln!(out, "     cost     {}", crate::usage::usd(micros))?;
        }
        if let Some(span) = &a.span_id {
            writeln!(out, "     span     {span}")?;
        }
        if let Some(next) = a.next {
            writeln!(out, "     next     {next}: {}", explain_next(next))?;
        }
        if let Some(value) = attempts.get(n) {
            write_other_fields(out, value, EXPLAINED_ATTEMPT_FIELDS, "     ", 9)?;
        }
    }

    let value = serde_json::to_value(r).unwrap_or_default();
    if let Some(bodies) = value.get("bodies").filter(|b| b.is_object()) {
        let truncated = bodies.get("truncated").and_then(|t| t.as_bool()) == Some(true);
        writeln!(
            out,
            "\nbodies{}",
            if truncated {
                " (cut at the size cap)"
            } else {
                ""
            }
        )?;
        for part in ["request", "response"] {
            if let Some(text) = bodies.get(part).and_then(|t| t.as_str()) {
                writeln!(out, "  {part}")?;
                for line in text.lines() {
                    writeln!(out, "    {line}")?;
                }
            }
        }
    }
    let mut other = Vec::new();
    write_other_fields(&mut other, &value, EXPLAINED_RECORD_FIELDS, "  ", 11)?;
    if !other.is_empty() {
        writeln!(out, "\nother")?;
        out.write_all(&other)?;
    }
    Ok(())
}

/// Prints the fields of `value` (an object) that are not in `explained` and not empty, each
/// as `name value`, so a field added to the records is shown before this code knows it.
fn write_other_fields(
    out: &mut impl Write,
    value: &serde_json::Value,
    explained: &str,
    indent: &str,
    width: usize,
) -> std::io::Result<()> {
    let Some(fields) = value.as_object() else {
        return Ok(());
    };
    for (name, field) in fields {
        if explained.split_whitespace().any(|known| known == name) || field.is_null() {
            continue;
        }
        let text = match field {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        writeln!(out, "{indent}{name:<width$}{text}")?;
    }
    Ok(())
}

/// What an attempt's `next` says, in words (the codes are in docs/routing.md).
fn explain_next(next: Next) -> &'static str {
    match next {
        Next::Retry => "tried the same deployment again",
        Next::Fallback => "moved on to another deployment",
        Next::Hedge => "failed while a hedge was already in flight",
        Next::LostHedge => "the other attempt answered first; this one was cancelled",
        Next::NotRetryable => "stopped: another attempt cannot fix this failure",
        Next::ConditionNotEnabled => {
            "stopped: the route does not move on from this failure (see its fallback_on)"
        }
        Next::RetryBudgetExhausted => "stopped: the deployment's retry budget is used up",
        Next::MaxAttempts => "stopped: the route's max_attempts was reached",
        Next::Deadline => "stopped: no time left within the route's total timeout",
        Next::NoMoreDeployments => "stopped: no deployment left to try",
        Next::CircuitOpen => "its circuit breaker was open",
        Next::CoolingDown => "it was waiting out the provider's Retry-After",
        Next::QueueFull => "its queue was full",
        Next::QueueTimeout => "no slot on it came free within its queue timeout",
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
fn timestamp_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn timestamp(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_are_codes_classes_error_or_ok() {
        assert_eq!(parse_status("502"), Ok(StatusFilter::Code(502)));
        assert_eq!(parse_status("5xx"), Ok(StatusFilter::Class(5)));
        assert_eq!(parse_status("4XX"), Ok(StatusFilter::Class(4)));
        assert_eq!(parse_status("error"), Ok(StatusFilter::Error));
        assert_eq!(parse_status("ok"), Ok(StatusFilter::Ok));
        for bad in ["600", "99", "6xx", "0xx", "5x", "x5xx", "fail", ""] {
            assert!(parse_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let now = 1_000_000_000_000;
        let ago = |text| parse_time(text).map(|t| now - t.resolve(now));
        assert_eq!(ago("30s"), Ok(30_000));
        assert_eq!(ago("15m"), Ok(900_000));
        assert_eq!(ago("2h"), Ok(7_200_000));
        assert_eq!(ago("7d"), Ok(604_800_000));
        assert_eq!(
            parse_time("2026-03-01T12:00:00.250+01:00").map(|t| t.resolve(now)),
            Ok(1_772_362_800_250)
        );
        for bad in [
            "15",
            "m",
            "-5m",
            "1.5h",
            "7w",
            "99999999999999999999d",
            "2026-03-01",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_added_to_a_record_later_are_shown_too() {
        let record = serde_json::json!({"id": "req_1", "status": 200, "region": "eu-west",
            "cost": {"micros": 120}, "trace_id": null});
        let mut out = Vec::new();
        write_other_fields(&mut out, &record, EXPLAINED_RECORD_FIELDS, "  ", 11).unwrap();
        // In the record's own order (its fields' declaration order when read back).
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  region     eu-west\n  cost       {\"micros\":120}\n"
        );
    }
}
