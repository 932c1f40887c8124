//! SQLite's threads yield the cpu to the request path.
//!
//! sqlx runs each SQLite connection on a thread of its own. A batch of request records is a few
//! hundred microseconds of work there (~3 µs a record); on a core that also serves requests, a
//! request whose upstream answer arrives meanwhile waits that long for the cpu, which was a
//! third of the slowest 1% at concurrency 1 (BENCHMARKS.md, "The slow 1% at concurrency 1").
//! So these threads run at a lower priority (nice [`NICE`]): the request path preempts them at
//! once, and under load that fills the core they still get a tenth of it, more than the
//! records need. Nothing waits on them but the record writer and lookups the caches missed.

/// What every SQLite connection thread of Sluice's is named after (a thread's name is at most
/// 15 bytes, so the number may be cut short).
const PREFIX: &str = "sluice-sqlite-";

/// Their nice value: weight 110 against the request path's 1024.
pub(super) const NICE: i32 = 10;

/// The name of connection thread `id`.
pub(super) fn name(id: u64) -> String {
    format!("{PREFIX}{id}")
}

/// Lowers the priority of every SQLite connection thread in the process (the new one among
/// them). Called after each connection is made; a thread already lowered is lowered again to
/// the same value. Where threads cannot be listed (not Linux), it does nothing.
pub(super) fn lower_priorities() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let named = std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|comm| comm.starts_with(PREFIX));
        if let (true, Some(pid)) = (named, rustix::process::Pid::from_raw(tid)) {
            // Raising one's own nice needs no privilege; a thread that ended meanwhile is gone.
            if let Err(error) = rustix::process::setpriority_process(Some(pid), NICE) {
                tracing::debug!(%error, tid, "could not lower a SQLite thread's priority");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of every thread of this process named like a SQLite connection thread.
    fn sqlite_thread_nices() -> Vec<i32> {
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(PREFIX) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Field 19 is the nice value; the name (field 2) is in parentheses and ends at ')'.
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if let Some(nice) = after_name.split_whitespace().nth(16) {
                nices.push(nice.parse().unwrap());
            }
        }
        nices
    }

    #[tokio::test]
    async fn a_stores_sqlite_threads_run_below_the_request_path() {
        let dir = std::env::temp_dir().join(format!("sluice-sqlite-nice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::sqlite::SqliteStore::open(&dir.join("s.db"))
            .await
            .unwrap();
        // Both pools' connections (records and reads), more of the read pool on demand.
        let held = three_read_connections(&store).await;
        let nices = sqlite_thread_nices();
        assert!(nices.len() >= 3, "{nices:?}");
        assert!(nices.iter().all(|&nice| nice == NICE), "{nices:?}");
        drop(held);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Three connections of the read pool at once, so that it opens more than its first.
    async fn three_read_connections(
        store: &crate::sqlite::SqliteStore,
    ) -> Vec<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(store.pool().acquire().await.unwrap());
        }
        held
    }
}
