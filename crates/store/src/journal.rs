//! The record journal: a local, append-only copy of every record not yet known to be in the
//! store, so that neither a crash nor an unreachable store loses one.
//!
//! - **Append.** When a request ends its record is appended as one JSON line (one `write`, no
//!   fsync: a process killed with SIGKILL loses nothing the kernel has taken) before it is
//!   queued for the writer. The record carries its segment's handle until it is written.
//! - **Segments.** The journal is a folder of segment files (`records-<seq>.jsonl`); the writer
//!   starts a new one every [`SEGMENT_BYTES`] or [`SEGMENT_AGE`]. A segment whose records are
//!   all in the store is deleted when its last handle goes.
//! - **Spool.** A segment with a record that could not be written (the store unreachable, or
//!   the queue full) is kept when its last handle goes, and so is every segment found at start
//!   (left by a process that was killed). The writer replays kept segments once the store can
//!   be written; the store ignores a record it already has (same id), so nothing is written
//!   twice.
//! - **Bound.** Kept segments take at most the configured size; past it new records are shed
//!   and counted, never blocked on.
//!
//! One process uses a folder at a time (a lock file); replicas each need their own.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::RequestRecord;

/// A segment is closed for appends past this size...
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// ... or this age, so a replay after a crash rereads little.
pub const SEGMENT_AGE: Duration = Duration::from_secs(10);

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("record journal {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the record journal {0} is in use by another sluice process: give each replica a journal of its own ([store] journal, or `sluice serve --journal`)"
    )]
    InUse(String),
}

/// The journal of one process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Journal {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    current: ArcSwap<Segment>,
    spool: Arc<Spool>,
    /// The last append found the bound reached (for logging the change once).
    full: AtomicBool,
    limit_bytes: u64,
    next_seq: AtomicU64,
    /// Appends that failed (disk full, say): their records were queued unjournaled.
    failed: AtomicU64,
    /// Held while the process runs: the folder is this process's alone.
    _lock: File,
}

/// Segments kept for replay, oldest first, and the size of every segment on disk.
#[derive(Debug, Default)]
struct Spool {
    kept: Mutex<Vec<Kept>>,
    disk_bytes: AtomicU64,
}

/// A segment file waiting to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    seq: u64,
    path: PathBuf,
    bytes: u64,
}

/// One segment file, open for appends while it is current.
#[derive(Debug)]
pub struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    bytes: AtomicU64,
    keep: AtomicBool,
    opened: Instant,
    spool: Arc<Spool>,
}

impl Segment {
    /// Keeps the file for replay when the last handle goes: one of its records was not
    /// written.
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

/// The last handle of a segment: its file goes, or joins the spool.
impl Drop for Segment {
    fn drop(&mut self) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        if self.keep.load(Ordering::Relaxed) && bytes > 0 {
            let mut kept = self.spool.lock();
            let at = kept.partition_point(|k| k.seq < self.seq);
            kept.insert(
                at,
                Kept {
                    seq: self.seq,
                    path: std::mem::take(&mut self.path),
                    bytes,
                },
            );
        } else {
            self.spool.disk_bytes.fetch_sub(bytes, Ordering::Relaxed);
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "a written journal segment could not be removed");
            }
        }
    }
}

impl Spool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    /// Each thread's line buffer, so an append allocates nothing once warm.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A line buffer grown past this by a record with large bodies is given back.
const LINE_KEEP_BYTES: usize = 64 << 10;

impl Journal {
    /// Opens (creating) the journal in `dir`, its segments taking at most `limit_bytes` on
    /// disk. Segments already there are kept for replay.
    pub fn open(dir: &Path, limit_bytes: u64) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::InUse(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let spool = Arc::new(Spool::default());
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("records-")?.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata().map_err(io)?.len();
            found.push(Kept {
                seq,
                path: entry.path(),
                bytes,
            });
        }
        found.sort_by_key(|k| k.seq);
        let next_seq = found.last().map_or(1, |k| k.seq + 1);
        if !found.is_empty() {
            let bytes: u64 = found.iter().map(|k| k.bytes).sum();
            tracing::info!(segments = found.len(), bytes, dir = %dir.display(), "journaled records from an earlier run: they are replayed into the store");
        }
        spool
            .disk_bytes
            .store(found.iter().map(|k| k.bytes).sum(), Ordering::Relaxed);
        *spool.lock() = found;
        let first = Segment::create(dir, next_seq, &spool).map_err(io)?;
        let journal = Journal {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                current: ArcSwap::from_pointee(first),
                spool,
                full: AtomicBool::new(false),
                limit_bytes,
                next_seq: AtomicU64::new(next_seq + 1),
                failed: AtomicU64::new(0),
                _lock: lock,
            }),
        };
        Ok(journal)
    }

    /// Appends `record` to the current segment and returns the segment's handle, which the
    /// record keeps until it is written; or why it was not journaled.
    pub fn append(&self, record: &RequestRecord) -> Appended {
        if !self.has_room() {
            return Appended::Full;
        }
        let segment = self.shared.current.load_full();
        let written = LINE.with_borrow_mut(|line| {
            line.clear();
            let result = serde_json::to_writer(&mut *line, record)
                .map_err(std::io::Error::from)
                .and_then(|()| {
                    line.push(b'\n');
                    (&segment.file).write_all(line)
                })
                .map(|()| line.len() as u64);
            if line.capacity() > LINE_KEEP_BYTES {
                *line = Vec::new();
            }
            result
        });
        match written {
            Ok(bytes) => {
                segment.bytes.fetch_add(bytes, Ordering::Relaxed);
                self.shared
                    .spool
                    .disk_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                Appended::To(segment)
            }
            Err(e) => {
                let failed = self.shared.failed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(error = %e, failed, "a record could not be journaled; it is queued all the same");
                Appended::Failed
            }
        }
    }

    /// Closes the current segment for appends and starts the next one (when it has records),
    /// if it is past [`SEGMENT_BYTES`] or [`SEGMENT_AGE`], or `now` is set.
    pub fn rotate(&self, now: bool) {
        let current = self.shared.current.load();
        let bytes = current.bytes.load(Ordering::Relaxed);
        let due = bytes >= SEGMENT_BYTES || current.opened.elapsed() >= SEGMENT_AGE;
        if bytes == 0 || !(now || due) {
            return;
        }
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        match Segment::create(&self.shared.dir, seq, &self.shared.spool) {
            Ok(next) => {
                self.shared.current.store(Arc::new(next));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no new journal segment could be started; appending to the last one");
            }
        }
    }

    /// The oldest kept segment, if any.
    pub fn next_kept(&self) -> Option<Kept> {
        self.shared.spool.lock().first().cloned()
    }

    /// Whether the segment taking appends holds a record that was not written.
    pub fn current_is_kept(&self) -> bool {
        self.shared.current.load().keep.load(Ordering::Relaxed)
    }

    /// Whether a segment waits to be replayed.
    pub fn has_kept(&self) -> bool {
        !self.shared.spool.lock().is_empty()
    }

    /// The records of a kept segment. A line that is not a record (cut short by a crash in
    /// the middle of a write) is skipped and counted.
    pub fn read(&self, kept: &Kept) -> Result<(Vec<RequestRecord>, usize), std::io::Error> {
        let text = std::fs::read(&kept.path)?;
        let mut records = Vec::new();
        let mut skipped = 0;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice(line) {
                Ok(record) => records.push(record),
                Err(_) => skipped += 1,
            }
        }
        Ok((records, skipped))
    }

    /// Deletes a replayed segment.
    pub fn remove(&self, kept: &Kept) {
        self.shared.spool.lock().retain(|k| k.seq != kept.seq);
        self.shared
            .spool
            .disk_bytes
            .fetch_sub(kept.bytes, Ordering::Relaxed);
        if let Err(e) = std::fs::remove_file(&kept.path) {
            tracing::warn!(path = %kept.path.display(), error = %e, "a replayed journal segment could not be removed");
        }
    }

    /// Bytes of the segments on disk: records not yet written, or not yet known to be.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.spool.disk_bytes.load(Ordering::Relaxed)
    }

    /// Appends that failed since start.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether the segments on disk are under the bound; a change is logged once.
    fn has_room(&self) -> bool {
        let full = self.disk_bytes() >= self.shared.limit_bytes;
        if full != self.shared.full.load(Ordering::Relaxed) {
            self.shared.full.store(full, Ordering::Relaxed);
            if full {
                tracing::error!(limit_bytes = self.shared.limit_bytes, dir = %self.shared.dir.display(), "the record journal is full: new records are shed until the store takes the journaled ones");
            } else {
                tracing::warn!("the record journal has room again");
            }
        }
        !full
    }
}

/// What [`Journal::append`] did with a record.
#[derive(Debug)]
pub enum Appended {
    /// Written to this segment.
    To(Arc<Segment>),
    /// Not written: the journal is at its bound.
    Full,
    /// Not written: the file could not be written.
    Failed,
}

impl Segment {
    fn create(dir: &Path, seq: u64, spool: &Arc<Spool>) -> Result<Segment, std::io::Error> {
        let path = dir.join(format!("records-{seq:016}.jsonl"));
        let file = File::options().create_new(true).append(true).open(&path)?;
        Ok(Segment {
            seq,
            path,
            file,
            bytes: AtomicU64::new(0),
            keep: AtomicBool::new(false),
            opened: Instant::now(),
            spool: spool.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            started_at: 1_700_000_000_000,
            status: 200,
            ..Default::default()
        }
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        names.sort();
        names
    }

    fn appended(journal: &Journal, id: &str) -> Arc<Segment> {
        match journal.append(&record(id)) {
            Appended::To(segment) => segment,
            other => panic!("not journaled: {other:?}"),
        }
    }

    #[test]
    fn a_written_segment_goes_and_a_kept_one_is_replayed_after_a_restart() {
        let dir = dir("keep");
        let journal = Journal::open(&dir, 1 << 20).unwrap();
        let written = appended(&journal, "r1");
        journal.rotate(true);
        drop(written);
        // Rotated, and its only record written: the file is gone.
        assert_eq!(segments(&dir), ["records-0000000000000002.jsonl"]);
        let unwritten = appended(&journal, "r2");
        let also = appended(&journal, "r3");
        unwritten.keep();
        journal.rotate(true);
        drop((unwritten, also));
        let kept = journal.next_kept().unwrap();
        let (records, skipped) = journal.read(&kept).unwrap();
        assert_eq!((records, skipped), (vec![record("r2"), record("r3")], 0));
        // A process killed now leaves the kept and the current segment; both are replayed.
        let current = appended(&journal, "r4");
        std::mem::forget(current);
        drop(journal);
        let reopened = Journal::open(&dir, 1 << 20).unwrap();
        let mut replayed = Vec::new();
        while let Some(kept) = reopened.next_kept() {
            replayed.extend(reopened.read(&kept).unwrap().0.into_iter().map(|r| r.id));
            reopened.remove(&kept);
        }
        assert_eq!(replayed, ["r2", "r3", "r4"]);
        assert!(!reopened.has_kept());
        drop(reopened);
        assert_eq!(segments(&dir), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_counted() {
        let dir = dir("torn");
        std::fs::create_dir_all(&dir).unwrap();
        let whole = serde_json::to_string(&record("whole")).unwrap();
        std::fs::write(
            dir.join("records-0000000000000007.jsonl"),
            format!("{whole}\n{}", &whole[..whole.len() / 2]),
        )
        .unwrap();
        let journal = Journal::open(&dir, 1 << 20).unwrap();
        let kept = journal.next_kept().unwrap();
        let (records, skipped) = journal.read(&kept).unwrap();
        assert_eq!((records, skipped), (vec![record("whole")], 1));
        // New segments continue after the ones found.
        assert_eq!(journal.shared.current.load().seq, 8);
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_process_per_folder() {
        let dir = dir("lock");
        let first = Journal::open(&dir, 1 << 20).unwrap();
        let second = Journal::open(&dir, 1 << 20).unwrap_err();
        assert!(matches!(second, JournalError::InUse(_)), "{second}");
        drop(first);
        Journal::open(&dir, 1 << 20).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn past_its_bound_the_journal_takes_no_more() {
        let dir = dir("bound");
        let journal = Journal::open(&dir, 600).unwrap();
        let mut held = Vec::new();
        let mut full_after = None;
        for i in 0..100 {
            match journal.append(&record(&format!("r{i}"))) {
                Appended::To(segment) => {
                    segment.keep();
                    held.push(segment);
                    journal.rotate(true);
                }
                Appended::Full => {
                    full_after = Some(i);
                    break;
                }
                Appended::Failed => panic!("the disk failed"),
            }
        }
        let full_after = full_after.expect("never full");
        assert!((2..10).contains(&full_after), "{full_after}");
        drop(held);
        // Replaying makes room.
        while let Some(kept) = journal.next_kept() {
            journal.remove(&kept);
        }
        assert!(matches!(journal.append(&record("again")), Appended::To(_)));
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
