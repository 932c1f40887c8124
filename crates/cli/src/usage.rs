//! `sluice usage`: spend, tokens, requests, kWh and kgCO2e per organisation, team, project,
//! key, end user, alias, model, provider or feature tag, over any span, as a table or JSON.
//!
//! The sums come from the store ([`sluice_store::UsageReports`]), read directly like
//! `sluice logs`; so do the JSON rows, which are the admin API's `GET /admin/v1/usage` rows.
//! This module only parses the arguments and lays out the table.

use std::io::Write;
use std::path::PathBuf;

use sluice_policy::Metric;
use sluice_store::{DrillRecords, UsageDimension, UsageQuery, UsageRow};

use crate::admin::{TimeArg, open_configured_store, parse_time};
use crate::serve::load_settings_read_only;

/// `sluice usage`: what to group by, over which span, and how to print it.
#[derive(clap::Args)]
pub(crate) struct UsageArgs {
    /// Group by org, team, project, key, tenant, user (with its tenant), alias, model (as
    /// served), provider or feature; repeat for finer groups (`--by team --by feature`)
    /// [default: team]
    #[arg(long = "by", value_name = "DIMENSION", value_parser = parse_dimension)]
    by: Vec<UsageDimension>,
    /// From: a duration ago (`30s`, `15m`, `2h`, `30d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_time, default_value = "30d")]
    since: TimeArg,
    /// Until (not included): a duration ago or an RFC 3339 time [default: now]
    #[arg(long, value_name = "WHEN", value_parser = parse_time)]
    until: Option<TimeArg>,
    /// Count drills (shadow requests to fallbacks) too.
    #[arg(long)]
    drills: bool,
    /// One JSON object per group (raw integer sums and the derived figures) instead of a
    /// table.
    #[arg(long)]
    json: bool,
}

fn parse_dimension(text: &str) -> Result<UsageDimension, String> {
    text.parse()
        .map_err(|e: sluice_store::UnknownDimension| e.to_string())
}

impl UsageArgs {
    fn query(&self, now_ms: i64) -> UsageQuery {
        UsageQuery {
            by: if self.by.is_empty() {
                vec![UsageDimension::Team]
            } else {
                self.by.clone()
            },
            since_ms: Some(self.since.resolve(now_ms)),
            until_ms: self.until.map(|t| t.resolve(now_ms)),
            drills: if self.drills {
                DrillRecords::Include
            } else {
                DrillRecords::Exclude
            },
        }
    }
}

pub(crate) async fn usage(config: Option<PathBuf>, args: UsageArgs) -> anyhow::Result<()> {
    let settings = load_settings_read_only(config.as_deref())?;
    let store = open_configured_store(&settings).await?;
    let query = args.query(sluice_store::now_ms());
    let rows = store.usage.usage_report(&query).await;
    store.close().await;
    let rows = rows?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for row in &rows {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        }
    } else {
        write_table(&mut out, &query.dimensions(), &rows)?;
    }
    out.flush()?;
    Ok(())
}

/// Header, a line per group (`-` for a group without a value), then the totals.
fn write_table(
    out: &mut impl Write,
    by: &[UsageDimension],
    rows: &[UsageRow],
) -> std::io::Result<()> {
    let mut by: Vec<UsageDimension> = by.to_vec();
    let mut seen = Vec::new();
    by.retain(|d| {
        let first = !seen.contains(d);
        seen.push(*d);
        first
    });
    let header: Vec<String> = by
        .iter()
        .map(|d| d.as_str().to_ascii_uppercase())
        .chain(
            [
                "REQUESTS",
                "ERRORS",
                "TOKENS IN",
                "TOKENS OUT",
                "COST USD",
                "kWh",
                "kgCO2e",
                "kWh/1k REQ",
                "kgCO2e/1k REQ",
            ]
            .map(str::to_owned),
        )
        .collect();
    let figures = |row: &UsageRow| -> Vec<String> {
        let count = |n: u64| Metric::Requests.format_amount(n);
        let optional = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), figure);
        vec![
            count(row.requests),
            count(row.errors),
            count(row.input_tokens),
            count(row.output_tokens),
            usd(row.cost_micros),
            figure(row.kwh()),
            figure(row.kg_co2e()),
            optional(row.kwh_per_1k_requests()),
            optional(row.kg_co2e_per_1k_requests()),
        ]
    };
    let mut lines: Vec<Vec<String>> = vec![header];
    for row in rows {
        let mut line: Vec<String> = by
            .iter()
            .map(|d| row.value(*d).unwrap_or("-").to_owned())
            .collect();
        line.extend(figures(row));
        lines.push(line);
    }
    let mut total: Vec<String> = by
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "TOTAL" } else { "" }.to_owned())
        .collect();
    total.extend(figures(&UsageRow::total(rows)));
    lines.push(total);

    // Dimensions left-aligned, figures right-aligned.
    crate::table::write(out, &lines, |c| c >= by.len())?;
    Ok(())
}

/// Micro-USD as `$12.50` (exact; at least two decimals).
pub(crate) fn usd(micros: i64) -> String {
    let text = Metric::Usd.format_amount(micros.unsigned_abs());
    if micros < 0 { format!("-{text}") } else { text }
}

/// An estimate with four significant digits and no exponent: `0.0003120`, `12.35`, `1234.5`.
fn figure(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return "0".to_owned();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(1, 12) as usize;
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_keep_four_significant_digits() {
        assert_eq!(figure(0.000312), "0.0003120");
        assert_eq!(figure(12.3456), "12.35");
        assert_eq!(figure(1234.5), "1234.5");
        assert_eq!(figure(0.0), "0");
        assert_eq!(usd(12_500_000), "$12.50");
        assert_eq!(usd(1_234), "$0.001234");
        assert_eq!(usd(-1_000_000), "-$1.00");
    }

    #[test]
    fn the_table_has_a_column_per_dimension_a_dash_for_none_and_totals() {
        let row = |team: Option<&str>, requests: u64, cost_micros: i64| UsageRow {
            group: vec![
                (UsageDimension::Team, team.map(str::to_owned)),
                (UsageDimension::Feature, Some("chat".into())),
            ],
            requests,
            errors: 1,
            input_tokens: 1_500,
            output_tokens: 20,
            cost_micros,
            energy_uwh: 2_000_000,
            carbon_ug: 1_500_000,
        };
        let rows = [row(Some("search"), 4, 12_500_000), row(None, 1, 0)];
        let mut out = Vec::new();
        write_table(
            &mut out,
            &[UsageDimension::Team, UsageDimension::Feature],
            &rows,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let cells: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[0],
            [
                "TEAM",
                "FEATURE",
                "REQUESTS",
                "ERRORS",
                "TOKENS",
                "IN",
                "TOKENS",
                "OUT",
                "COST",
                "USD",
                "kWh",
                "kgCO2e",
                "kWh/1k",
                "REQ",
                "kgCO2e/1k",
                "REQ"
            ]
        );
        assert_eq!(
            cells[1],
            [
                "search", "chat", "4", "1", "1,500", "20", "$12.50", "0.002000", "0.001500",
                "0.5000", "0.3750"
            ]
        );
        assert_eq!(cells[2][..3], ["-", "chat", "1"]);
        assert_eq!(
            cells[3],
            [
                "TOTAL", "5", "2", "3,000", "40", "$12.50", "0.004000", "0.003000", "0.8000",
                "0.6000"
            ]
        );
    }
}
