//! `sluice migrate`: brings the configured store's schema up to date and, with `--from-sqlite`,
//! copies an embedded store into the configured Postgres store. The copying itself is
//! `sluice_store::copy`'s; this module checks what it is asked, before anything is written, and
//! says what was done.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sluice_store::copy::{Copied, Tally};
use sluice_store::{StoreLocation, Stores};

use crate::admin::store_location;
use crate::serve::load_settings_read_only;

/// How often a long copy says how far it is, in records read.
const PROGRESS_EVERY: u64 = 100_000;

/// `sluice migrate [--from-sqlite PATH]`.
pub(crate) async fn migrate(
    config: Option<PathBuf>,
    from_sqlite: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = load_settings_read_only(config.as_deref())?;
    let location = store_location(&settings);
    // What would refuse the copy is found before anything is written anywhere.
    let source = match &from_sqlite {
        None => None,
        Some(path) => Some((path.as_path(), open_source(&location, path).await?)),
    };
    let migrated = sluice_store::migrate(&location)
        .await
        .with_context(|| format!("migrating the store at {location}"))?;
    for name in &migrated.applied {
        println!("applied {name}");
    }
    println!(
        "store {location} is at schema version {} ({} applied now)",
        migrated.known,
        migrated.applied.len()
    );
    let Some((path, source)) = source else {
        return Ok(());
    };
    let copied = copy(&source, path, &location).await;
    source.close().await;
    let copied = copied?;
    println!("copied {} from {}", summary(&copied), path.display());
    for id in &copied.revoked_at_source_only {
        eprintln!(
            "warning: key {id} is revoked in {} but not in {location}: it was copied before it \
             was revoked, and a copied key is left as it is; revoke it there with \
             `sluice keys revoke {id}`",
            path.display()
        );
    }
    Ok(())
}

/// The embedded store to copy from, once the configured store is known to be Postgres.
async fn open_source(location: &StoreLocation, path: &Path) -> anyhow::Result<Stores> {
    if let StoreLocation::Sqlite(configured) = location {
        anyhow::bail!(
            "--from-sqlite copies into a Postgres store, but the configured store is the SQLite \
             file {}: set `[store] url` to the Postgres database (see docs/deployment.md, \
             \"Migrating from the embedded store\")",
            configured.display()
        );
    }
    Stores::open_existing_sqlite(path)
        .await
        .context("opening the store to copy from")
}

async fn copy(source: &Stores, path: &Path, location: &StoreLocation) -> anyhow::Result<Copied> {
    let target = Stores::open(location)
        .await
        .with_context(|| format!("opening the store at {location}"))?;
    let mut reported = 0;
    let copied = sluice_store::copy::copy_store(source, &target, |records: Tally| {
        if records.read() / PROGRESS_EVERY > reported / PROGRESS_EVERY {
            reported = records.read();
            eprintln!("copying records: {} read", thousands(reported));
        }
    })
    .await
    .with_context(|| format!("copying {} into {location}", path.display()));
    target.close().await;
    copied
}

/// `12 keys, 3 budget rows, 104,233 records`; a part with some already in the target says how
/// many were new: `0 new keys (12 already there)`.
fn summary(copied: &Copied) -> String {
    [
        (copied.keys, "key", "keys"),
        (copied.budgets, "budget row", "budget rows"),
        (copied.records, "record", "records"),
    ]
    .iter()
    .map(|(tally, one, many)| {
        let noun = if tally.copied == 1 { one } else { many };
        let count = thousands(tally.copied);
        if tally.present == 0 {
            format!("{count} {noun}")
        } else {
            format!(
                "{count} new {noun} ({} already there)",
                thousands(tally.present)
            )
        }
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// `104233` as `104,233`.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (104_233, "104,233"),
            (1_000_000, "1,000,000"),
        ];
        for (value, text) in cases {
            assert_eq!(thousands(value), text);
        }
    }

    #[test]
    fn the_summary_says_what_was_new_once_something_was_there_already() {
        let tally = |copied, present| Tally { copied, present };
        let first = Copied {
            keys: tally(12, 0),
            budgets: tally(1, 0),
            records: tally(104_233, 0),
            revoked_at_source_only: Vec::new(),
        };
        assert_eq!(summary(&first), "12 keys, 1 budget row, 104,233 records");
        let again = Copied {
            keys: tally(0, 12),
            budgets: tally(0, 1),
            records: tally(1, 104_233),
            revoked_at_source_only: Vec::new(),
        };
        assert_eq!(
            summary(&again),
            "0 new keys (12 already there), 0 new budget rows (1 already there), \
             1 new record (104,233 already there)"
        );
    }
}
