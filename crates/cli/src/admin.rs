//! Operator commands that work on the store and configuration directly: `check-config`,
//! `keys`, `logs`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use sluice_store::{KeyInfo, NewKey, RequestRecord, Store};

use crate::serve::load_settings;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// An alias the key may call (repeat for several). Without any, every alias.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Days until the key stops working.
        #[arg(long)]
        expires_in_days: Option<u32>,
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

async fn open_store(config: Option<PathBuf>) -> anyhow::Result<Store> {
    let settings = load_settings(config.as_deref())?;
    Store::open(&settings.store.path)
        .await
        .with_context(|| format!("opening the store at {}", settings.store.path.display()))
}

pub(crate) fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load_settings(config.as_deref())?;
    println!("configuration is valid");
    println!("  listen       {}", settings.server.listen);
    println!("  store        {}", settings.store.path.display());
    for d in &settings.deployments {
        let key = if d.api_key.is_some() {
            "key set"
        } else {
            "no key"
        };
        println!(
            "  deployment   {} -> {} {} at {} ({key})",
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
            team,
            user,
            aliases,
            expires_in_days,
            json,
        } => {
            let expires_at =
                expires_in_days.map(|d| sluice_store::now_ms() + i64::from(d) * 86_400_000);
            let created = store
                .create_key(NewKey {
                    name,
                    team,
                    user,
                    aliases,
                    expires_at,
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
            let keys = store.list_keys().await?;
            if json {
                for key in &keys {
                    println!("{}", serde_json::to_string(key)?);
                }
            } else {
                print_keys(&keys);
            }
        }
        KeysCommand::Revoke { id } => {
            let key = store.revoke_key(&id).await?;
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

pub(crate) async fn logs(config: Option<PathBuf>, limit: u32, json: bool) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let records = store.latest_records(limit).await?;
    if json {
        for record in &records {
            println!("{}", serde_json::to_string(record)?);
        }
    } else {
        print_records(&records);
    }
    store.close().await;
    Ok(())
}

fn print_records(records: &[RequestRecord]) {
    println!(
        "{:<20} {:<37} {:>6} {:<22} {:<20} {:<32} {:<16} {:>7} {:>7} {:>9} {:>9} ERROR",
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
    );
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    for r in records {
        let tokens = |t: Option<u32>| match t {
            Some(n) if r.usage_estimated => format!("~{n}"),
            Some(n) => n.to_string(),
            None => "-".into(),
        };
        println!(
            "{:<20} {:<37} {:>6} {:<22} {:<20} {:<32} {:<16} {:>7} {:>7} {:>9} {:>9} {}",
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
            r.error_code.as_deref().unwrap_or(""),
        );
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn timestamp(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}
