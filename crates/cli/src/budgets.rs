//! `sluice budgets`: set, allocate, show and delete budget and rate-limit rows.
//!
//! Changes go to the store directly, through `sluice_pipeline::budgets` (the checks the admin
//! API makes too); a running gateway picks them up on its next reload (`budgets.reload_ms`), or
//! at once when the store announces them (Postgres).
//! `show` asks the running gateway's admin API for what each limit's current window has used
//! and falls back to the limits alone, saying why, when it cannot. What a person types
//! (`--usd 12.50`, `--rpm 60`) becomes a row here; what a row means is `sluice-policy`'s.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use secrecy::ExposeSecret;
use sluice_policy::{Metric, Scope};
use sluice_store::BudgetRow;
use sluice_types::Money;

use crate::admin::open_configured_store;
use crate::reliability::{admin_client, gateway_url};
use crate::serve::load_settings_read_only;

#[derive(Subcommand)]
pub(crate) enum BudgetsCommand {
    /// Add a limit, or replace the one with the same scope, metric, period and model.
    Set {
        /// `org:ID`, `team:ID`, `project:ID`, `key:KEY_ID`, `user:ID`, `alias:NAME`; `key:*`
        /// and `user:*` give every key or end user a limit of its own.
        scope: String,
        #[command(flatten)]
        limit: LimitArgs,
        /// The scope this allocation comes out of: the children of a parent may not add up
        /// to more than it.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Give CHILD a share of PARENT's budget: `set CHILD ... --parent PARENT`.
    Allocate {
        parent: String,
        child: String,
        #[command(flatten)]
        limit: LimitArgs,
    },
    /// List the limits with what their current window has used (from the running gateway).
    Show {
        /// Only this scope's limits.
        scope: Option<String>,
        /// One JSON object per limit instead of a table.
        #[arg(long)]
        json: bool,
        /// The gateway's base URL [default: from `server.listen` in the configuration]
        #[arg(long)]
        url: Option<String>,
    },
    /// Remove a scope's limits: all of them, or those of one metric and period.
    Delete {
        scope: String,
        #[arg(long, requires = "period")]
        metric: Option<String>,
        #[arg(long, requires = "metric")]
        period: Option<String>,
    },
}

/// A limit's amount, in one of its units, its period, and the rest of the row.
#[derive(clap::Args)]
pub(crate) struct LimitArgs {
    #[command(flatten)]
    amount: AmountArgs,
    /// `day`, `week` (from Monday), `month` (UTC calendar), or a rolling window: `minute`,
    /// `hour`, `60s`, `5m`, `1h`, `7d`. Implied by --rpm and --tpm.
    #[arg(long)]
    period: Option<String>,
    /// Past this, callers are served by the route's cheaper alias; in the unit of the amount
    /// (dollars with --usd).
    #[arg(long, value_name = "AMOUNT")]
    soft: Option<String>,
    /// Only requests to this alias count.
    #[arg(long, value_name = "ALIAS")]
    model: Option<String>,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct AmountArgs {
    /// Spend, in dollars (`500`, `12.50`, `0.000001`).
    #[arg(long, value_name = "DOLLARS", value_parser = parse_usd)]
    usd: Option<u64>,
    /// Input plus output tokens.
    #[arg(long, value_name = "N")]
    tokens: Option<u64>,
    /// Requests admitted.
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// Requests per rolling minute: `--requests N --period minute`.
    #[arg(long, value_name = "N")]
    rpm: Option<u64>,
    /// Tokens per rolling minute: `--tokens N --period minute`.
    #[arg(long, value_name = "N")]
    tpm: Option<u64>,
}

/// Dollars as exact micro-USD; negatives and anything finer than a micro-USD are refused.
fn parse_usd(text: &str) -> Result<u64, String> {
    let money: Money = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    u64::try_from(money.micros()).map_err(|_| format!("`{text}`: a budget cannot be negative"))
}

impl LimitArgs {
    /// The row these arguments describe for `scope`.
    fn row(self, scope: String, parent: Option<String>) -> anyhow::Result<BudgetRow> {
        let a = &self.amount;
        let (metric, amount, per_minute) = match (a.usd, a.tokens, a.requests, a.rpm, a.tpm) {
            (Some(usd), ..) => (Metric::Usd, usd, false),
            (_, Some(tokens), ..) => (Metric::Tokens, tokens, false),
            (_, _, Some(requests), ..) => (Metric::Requests, requests, false),
            (.., Some(rpm), _) => (Metric::Requests, rpm, true),
            (.., Some(tpm)) => (Metric::Tokens, tpm, true),
            _ => anyhow::bail!("give an amount: --usd, --tokens, --requests, --rpm or --tpm"),
        };
        let period = match (per_minute, self.period) {
            (true, None) => "minute".to_owned(),
            (true, Some(_)) => {
                anyhow::bail!(
                    "--rpm and --tpm are per minute: drop --period, or use --requests/--tokens with it"
                )
            }
            (false, Some(period)) => period,
            (false, None) => anyhow::bail!(
                "--period is required: day, week, month, or a rolling window such as minute, 1h, 7d"
            ),
        };
        let soft_amount = self
            .soft
            .map(|soft| match metric {
                Metric::Usd => parse_usd(&soft),
                Metric::Tokens | Metric::Requests => soft
                    .replace(',', "")
                    .parse::<u64>()
                    .map_err(|_| format!("`{soft}` is not a whole number")),
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("--soft {e}"))?;
        Ok(BudgetRow {
            scope,
            metric: metric.as_str().to_owned(),
            period,
            model: self.model.unwrap_or_default(),
            amount,
            soft_amount,
            parent,
            updated_at: 0,
        })
    }
}

pub(crate) async fn budgets(
    config: Option<PathBuf>,
    command: BudgetsCommand,
) -> anyhow::Result<()> {
    let settings = load_settings_read_only(config.as_deref())?;
    let store = open_configured_store(&settings).await?;
    let result = match command {
        BudgetsCommand::Set {
            scope,
            limit,
            parent,
        } => set(&store, &settings, limit.row(scope, parent)?).await,
        BudgetsCommand::Allocate {
            parent,
            child,
            limit,
        } => set(&store, &settings, limit.row(child, Some(parent))?).await,
        BudgetsCommand::Show { scope, json, url } => {
            show(&store, &settings, scope.as_deref(), json, url).await
        }
        BudgetsCommand::Delete {
            scope,
            metric,
            period,
        } => {
            let metric_and_period = metric.as_deref().zip(period.as_deref());
            let removed = sluice_pipeline::budgets::delete_budgets(
                &*store.budgets,
                &scope,
                metric_and_period,
            )
            .await;
            match removed {
                Ok(0) => Err(anyhow::anyhow!("no budget matches `{scope}`")),
                Ok(n) => {
                    println!(
                        "deleted {n} limit{} of {scope}",
                        if n == 1 { "" } else { "s" }
                    );
                    eprintln!("a running gateway lifts it {}", when_applied(&settings));
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    };
    store.close().await;
    result
}

async fn set(
    store: &sluice_store::Stores,
    settings: &sluice_config::Settings,
    row: BudgetRow,
) -> anyhow::Result<()> {
    let stored = sluice_pipeline::budgets::set_budget(&*store.budgets, row).await?;
    let mut out = std::io::stdout().lock();
    write_table(&mut out, &[Shown::from_row(stored, None)], false)?;
    eprintln!("a running gateway applies it {}", when_applied(settings));
    Ok(())
}

/// When running gateways see a change made here: Postgres announces it to every replica.
fn when_applied(settings: &sluice_config::Settings) -> &'static str {
    match settings.store.location {
        sluice_config::StoreLocation::Postgres(_) => "within a second (announced to every replica)",
        sluice_config::StoreLocation::Sqlite(_) => "within `budgets.reload_ms`",
    }
}

/// A limit as `show` prints it: the row, and its usage when the gateway said.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Shown {
    #[serde(flatten)]
    row: BudgetRow,
    /// Used in the current window; `None` when unknown (no gateway, or a `*` row).
    used: Option<u64>,
    #[serde(default)]
    remaining: Option<u64>,
}

impl Shown {
    fn from_row(row: BudgetRow, used: Option<u64>) -> Shown {
        let remaining = used.map(|used| row.amount.saturating_sub(used));
        Shown {
            row,
            used,
            remaining,
        }
    }
}

/// The limits and their usage from the gateway's admin API, or from the store with the reason
/// usage is missing.
async fn show(
    store: &sluice_store::Stores,
    settings: &sluice_config::Settings,
    scope: Option<&str>,
    json: bool,
    url: Option<String>,
) -> anyhow::Result<()> {
    let scope = scope
        .map(|s| {
            s.parse::<Scope>()
                .map(|s| s.to_text())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .transpose()?;
    let url = url.map_or_else(
        || gateway_url(settings),
        |u| u.trim_end_matches('/').to_owned(),
    );
    let mut shown = match from_gateway(settings, &url).await {
        Ok(shown) => shown,
        Err(why) => {
            eprintln!("usage not shown: {why}");
            store
                .budgets
                .budgets()
                .await?
                .into_iter()
                .map(|row| Shown::from_row(row, None))
                .collect()
        }
    };
    if let Some(scope) = &scope {
        shown.retain(|s| &s.row.scope == scope);
    }
    let mut out = std::io::stdout().lock();
    if json {
        for limit in &shown {
            serde_json::to_writer(&mut out, limit)?;
            writeln!(out)?;
        }
    } else {
        write_table(&mut out, &shown, true)?;
    }
    out.flush()?;
    Ok(())
}

/// `GET /admin/v1/budgets`; the error says, in a few words, why it could not be read.
async fn from_gateway(settings: &sluice_config::Settings, url: &str) -> Result<Vec<Shown>, String> {
    let Some(token) = &settings.policy.admin_token else {
        return Err(
            "the admin API is not configured (set `[admin] token_env` to read it from the \
             running gateway)"
                .to_owned(),
        );
    };
    let client = admin_client().map_err(|e| format!("{e:#}"))?;
    let response = client
        .get(format!("{url}/admin/v1/budgets"))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .map_err(|_| format!("no gateway answering at {url} (is `sluice serve` running?)"))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("the gateway at {url} answered {status}: {message}"));
    }
    let statuses: Vec<Shown> = response
        .json()
        .await
        .map_err(|e| format!("the gateway at {url} sent budgets this version cannot read: {e}"))?;
    Ok(statuses
        .into_iter()
        .map(|s| Shown::from_row(s.row, s.used))
        .collect())
}

fn write_table(out: &mut impl Write, shown: &[Shown], with_usage: bool) -> anyhow::Result<()> {
    let mut lines: Vec<Vec<String>> = vec![
        [
            "SCOPE",
            "METRIC",
            "PERIOD",
            "MODEL",
            "LIMIT",
            "SOFT",
            "USED",
            "REMAINING",
            "PARENT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in shown {
        let r = &s.row;
        let amount = |value: u64| match r.metric.parse::<Metric>() {
            Ok(metric) => metric.format_amount(value),
            Err(_) => value.to_string(),
        };
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
        lines.push(vec![
            r.scope.clone(),
            r.metric.clone(),
            r.period.clone(),
            if r.model.is_empty() {
                "-".to_owned()
            } else {
                r.model.clone()
            },
            amount(r.amount),
            or_dash(r.soft_amount.map(amount)),
            or_dash(s.used.map(amount)),
            or_dash(s.remaining.map(amount)),
            or_dash(r.parent.clone()),
        ]);
    }
    if !with_usage {
        for line in &mut lines {
            line.drain(6..8);
        }
    }
    // Amounts right-aligned, text left-aligned.
    let numeric = |header: &str| matches!(header, "LIMIT" | "SOFT" | "USED" | "REMAINING");
    let headers = lines[0].clone();
    crate::table::write(out, &lines, |c| headers.get(c).is_some_and(|h| numeric(h)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(amount: AmountArgs, period: Option<&str>, soft: Option<&str>) -> LimitArgs {
        LimitArgs {
            amount,
            period: period.map(str::to_owned),
            soft: soft.map(str::to_owned),
            model: None,
        }
    }

    fn none() -> AmountArgs {
        AmountArgs {
            usd: None,
            tokens: None,
            requests: None,
            rpm: None,
            tpm: None,
        }
    }

    #[test]
    fn dollars_become_exact_micro_usd_and_negatives_are_refused() {
        assert_eq!(parse_usd("12.50"), Ok(12_500_000));
        assert_eq!(parse_usd("$0.000001"), Ok(1));
        assert_eq!(parse_usd("500"), Ok(500_000_000));
        assert!(parse_usd("-5").unwrap_err().contains("cannot be negative"));
        assert!(parse_usd("0.0000001").is_err());
        assert!(parse_usd("twelve").is_err());
        assert!(parse_usd("1e3").is_err());
    }

    #[test]
    fn rpm_is_requests_per_minute_and_other_amounts_need_a_period() {
        let rpm = limit(
            AmountArgs {
                rpm: Some(60),
                ..none()
            },
            None,
            None,
        )
        .row("key:*".into(), None)
        .unwrap();
        assert_eq!(
            (rpm.metric.as_str(), rpm.period.as_str(), rpm.amount),
            ("requests", "minute", 60)
        );
        let usd = limit(
            AmountArgs {
                usd: Some(500_000_000),
                ..none()
            },
            Some("month"),
            Some("400.5"),
        )
        .row("team:a".into(), Some("org:acme".into()))
        .unwrap();
        assert_eq!(
            (usd.metric.as_str(), usd.soft_amount, usd.parent.as_deref()),
            ("usd", Some(400_500_000), Some("org:acme"))
        );
        let tokens = limit(
            AmountArgs {
                tokens: Some(1_000_000),
                ..none()
            },
            Some("day"),
            Some("900,000"),
        )
        .row("team:a".into(), None)
        .unwrap();
        assert_eq!(tokens.soft_amount, Some(900_000));

        let missing = limit(
            AmountArgs {
                tokens: Some(5),
                ..none()
            },
            None,
            None,
        )
        .row("team:a".into(), None);
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("--period is required")
        );
        let both = limit(
            AmountArgs {
                tpm: Some(5),
                ..none()
            },
            Some("day"),
            None,
        )
        .row("team:a".into(), None);
        assert!(both.unwrap_err().to_string().contains("per minute"));
        let bad_soft = limit(
            AmountArgs {
                requests: Some(5),
                ..none()
            },
            Some("day"),
            Some("$3"),
        )
        .row("team:a".into(), None);
        assert!(bad_soft.unwrap_err().to_string().contains("--soft"));
    }

    #[test]
    fn limits_are_shown_in_their_unit_with_what_remains() {
        let row =
            |scope: &str, metric: &str, amount: u64| BudgetRow::new(scope, metric, "month", amount);
        let shown = [
            Shown::from_row(row("team:payments", "usd", 500_000_000), Some(12_500_000)),
            Shown::from_row(row("user:*", "tokens", 1_000_000), None),
        ];
        let mut out = Vec::new();
        write_table(&mut out, &shown, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SCOPE"), "{text}");
        let payments: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            payments,
            [
                "team:payments",
                "usd",
                "month",
                "-",
                "$500.00",
                "-",
                "$12.50",
                "$487.50",
                "-"
            ]
        );
        let users: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            users,
            [
                "user:*",
                "tokens",
                "month",
                "-",
                "1,000,000",
                "-",
                "-",
                "-",
                "-"
            ]
        );
    }
}
