//! Request records: written off the request path, and deleted once past their retention.
//!
//! The request path hands a [`RequestRecord`] to a [`RecordSender`], which never waits. With a
//! [`Journal`] the record is appended to it first, so a crash loses none, and one the bounded
//! queue cannot take waits there; without one (or with a full one) such a record is shed and
//! counted (`shed()`), never silently lost. One writer task drains the queue in batches into
//! the [`RecordSink`] (one transaction per batch in the databases); a batch waits up to 25 ms
//! to fill (group commit). While the store cannot be reached the writer leaves its batches in
//! the journal, pings the store every second, and replays the journal once it answers.
//! [`RecordQueue::shutdown`] stops intake and writes everything still queued before returning.
//! No request ever waits for a write.
//!
//! [`RecordRetention`] runs a store's [`RecordPruning`] at start and every hour. Reading
//! records back is [`crate::RecordQueries`]'.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::StoreHealth;
use crate::journal::{Appended, Journal, Segment};
use crate::{RecordPruning, RecordSink};

pub use sluice_types::record::{AttemptRecord, Bodies, RequestRecord};

/// A queued record, and the journal segment that holds a copy of it until it is written.
type Queued = (RequestRecord, Option<Arc<Segment>>);

/// Cheap to clone; handed to the request path.
#[derive(Clone, Debug)]
pub struct RecordSender {
    tx: mpsc::Sender<Queued>,
    journal: Option<Journal>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    shed: AtomicU64,
    replayed: AtomicU64,
}

impl RecordSender {
    /// Journals the record, then queues it without waiting. A record the queue cannot take is
    /// kept in the journal for the writer to replay; without a journal, or with a full one,
    /// it is shed and counted.
    pub fn submit(&self, record: RequestRecord) {
        let segment = match &self.journal {
            None => None,
            Some(journal) => match journal.append(&record) {
                Appended::To(segment) => Some(segment),
                Appended::Failed => None,
                Appended::Full => return self.count_shed("journal full"),
            },
        };
        if let Err(err) = self.tx.try_send((record, segment)) {
            let (reason, (_, segment)) = match err {
                mpsc::error::TrySendError::Full(queued) => ("queue full", queued),
                mpsc::error::TrySendError::Closed(queued) => ("queue closed", queued),
            };
            match segment {
                Some(segment) => {
                    tracing::debug!(reason, "request record left in the journal for replay");
                    segment.keep();
                }
                None => self.count_shed(reason),
            }
        }
    }

    fn count_shed(&self, reason: &'static str) {
        let total = self.counts.shed.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(reason, shed_total = total, "request record shed");
    }

    /// Records shed since start.
    pub fn shed(&self) -> u64 {
        self.counts.shed.load(Ordering::Relaxed)
    }

    /// Records written from the journal since start (left by an outage, a full queue, or an
    /// earlier process).
    pub fn replayed(&self) -> u64 {
        self.counts.replayed.load(Ordering::Relaxed)
    }

    /// Bytes of journal segments on disk (0 without a journal).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::disk_bytes)
    }
}

/// The writer task and its intake.
#[derive(Debug)]
pub struct RecordQueue {
    sender: RecordSender,
    close: tokio_util::sync::CancellationToken,
    writer: JoinHandle<u64>,
}

/// Records written in one transaction at most.
const BATCH: usize = 256;

/// How long a batch may wait for more records: the delay before a record is readable.
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

/// How often an unreachable store is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The pause between two replayed segments, in which fresh records are written.
const REPLAY_PAUSE: Duration = Duration::from_millis(10);

/// How long shutdown spends replaying the journal at most.
const REPLAY_AT_EXIT: Duration = Duration::from_secs(30);

impl RecordQueue {
    /// A writer without a journal: what is queued when the process dies is lost, and so is a
    /// batch the store refuses.
    pub fn start(sink: Arc<dyn RecordSink>, capacity: usize) -> RecordQueue {
        RecordQueue::start_journaled(sink, capacity, None, Arc::default())
    }

    /// A writer whose records are journaled first ([`crate::journal`]): it marks `health`
    /// down when the store cannot be reached, leaves its batches in the journal meanwhile,
    /// and replays them once a ping succeeds.
    pub fn start_journaled(
        sink: Arc<dyn RecordSink>,
        capacity: usize,
        journal: Option<Journal>,
        health: Arc<StoreHealth>,
    ) -> RecordQueue {
        let (tx, mut rx) = mpsc::channel(capacity.max(1));
        let close = tokio_util::sync::CancellationToken::new();
        let closing = close.clone();
        let counts = Arc::new(Counts::default());
        let mut writer = Writer {
            sink,
            journal: journal.clone(),
            health,
            counts: counts.clone(),
            written: 0,
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "owned: shutdown awaits the writer's JoinHandle"
        )]
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            // Segments found at start are replayed at once.
            let mut recover_at = Instant::now();
            loop {
                let recovering = writer.needs_recovery();
                tokio::select! {
                    biased;
                    () = closing.cancelled() => {
                        // Stop intake; whatever is queued is still received below.
                        rx.close();
                        while rx.recv_many(&mut batch, BATCH).await > 0 {
                            writer.write(&mut batch).await;
                        }
                        writer.replay_before_exit().await;
                        break;
                    }
                    () = tokio::time::sleep_until(recover_at), if recovering => {
                        recover_at = Instant::now() + writer.recover().await;
                        continue;
                    }
                    n = rx.recv_many(&mut batch, BATCH) => {
                        if n == 0 { break; }
                        linger(&mut rx, &mut batch).await;
                    }
                }
                writer.write(&mut batch).await;
                if !recovering && writer.needs_recovery() {
                    recover_at = Instant::now() + RETRY_EVERY;
                }
            }
            writer.written
        });
        RecordQueue {
            sender: RecordSender {
                tx,
                journal,
                counts,
            },
            close,
            writer,
        }
    }

    pub fn sender(&self) -> RecordSender {
        self.sender.clone()
    }

    /// Stops intake, writes every queued record (or, with the store unreachable, leaves it in
    /// the journal), and returns how many were written in all.
    pub async fn shutdown(self) -> u64 {
        self.close.cancel();
        drop(self.sender);
        self.writer.await.unwrap_or(0)
    }
}

/// Group commit: gives a started batch up to [`LINGER`] to fill before it is written, so a
/// gateway at a few hundred requests per second writes tens of records per transaction
/// instead of one (a transaction costs far more than a row). It sleeps rather than waits on
/// the queue: a record queued meanwhile wakes nothing, so the writer wakes once per batch,
/// not once per request. A backlog that already fills a batch is written at once.
async fn linger(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
    if batch.len() >= BATCH {
        return;
    }
    tokio::time::sleep(LINGER).await;
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => return,
        }
    }
}

/// The writer task's state.
struct Writer {
    sink: Arc<dyn RecordSink>,
    journal: Option<Journal>,
    health: Arc<StoreHealth>,
    counts: Arc<Counts>,
    written: u64,
}

impl Writer {
    /// Whether the store is down or journaled records wait to be replayed.
    fn needs_recovery(&self) -> bool {
        self.health.is_down()
            || self
                .journal
                .as_ref()
                .is_some_and(|j| j.has_kept() || j.current_is_kept())
    }

    /// Writes a batch. A batch the store cannot take now stays in the journal (the store is
    /// marked down, and not tried again until a ping succeeds); one it refuses for good is
    /// logged with its ids and dropped.
    async fn write(&mut self, batch: &mut Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut records: Vec<RequestRecord> = Vec::with_capacity(batch.len());
        for (record, segment) in batch.drain(..) {
            records.push(record);
            if let Some(segment) = segment
                && !segments.last().is_some_and(|s| Arc::ptr_eq(s, &segment))
            {
                segments.push(segment);
            }
        }
        let count = records.len() as u64;
        let journaled = !segments.is_empty();
        if journaled && self.health.is_down() {
            segments.iter().for_each(|s| s.keep());
            return;
        }
        match self.sink.write_records(&mut records).await {
            Ok(new) => {
                self.written += new;
                self.health.note_success();
            }
            Err(err) if journaled && self.health.note_failure(&err) => {
                segments.iter().for_each(|s| s.keep());
                tracing::warn!(error = %err, records = count, "request records left in the journal until the store can be reached");
            }
            Err(err) => {
                self.health.note_failure(&err);
                // Logged with the ids so the loss is traceable; retrying a failing disk would
                // only grow the queue.
                let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
                tracing::error!(error = %err, ?ids, "request records could not be written");
            }
        }
        drop(segments);
        if let Some(journal) = &self.journal {
            journal.rotate(false);
        }
    }

    /// At shutdown, with the store up: replays what the journal still holds (records the
    /// queue could not take, or an outage left), for at most [`REPLAY_AT_EXIT`], so a replica
    /// that is retired for good leaves nothing behind that it could write. What is left waits
    /// in the journal for the next start.
    async fn replay_before_exit(&mut self) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        journal.rotate(true);
        let deadline = Instant::now() + REPLAY_AT_EXIT;
        while journal.has_kept() && !self.health.is_down() && Instant::now() < deadline {
            self.recover().await;
        }
        if journal.has_kept() {
            tracing::warn!(
                bytes = journal.disk_bytes(),
                dir = %journal.dir().display(),
                "journaled request records are left for the next start"
            );
        }
    }

    /// One step of recovery: with the store down, a ping (whoever found it down: a batch, or
    /// a key lookup); with it up, the replay of the oldest kept segment. Returns when to take
    /// the next step.
    async fn recover(&mut self) -> Duration {
        if self.health.is_down() {
            match self.sink.ping().await {
                Ok(()) => self.health.note_success(),
                Err(err) => {
                    self.health.note_failure(&err);
                    return RETRY_EVERY;
                }
            }
        }
        let Some(journal) = self.journal.clone() else {
            return RETRY_EVERY;
        };
        // A kept segment still taking appends is closed, so it can be replayed once its
        // records are through the queue.
        journal.rotate(journal.current_is_kept());
        let Some(kept) = journal.next_kept() else {
            return RETRY_EVERY;
        };
        let (mut records, skipped) = match journal.read(&kept) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, segment = ?kept, "a journal segment could not be read; it is left in place");
                return RETRY_EVERY;
            }
        };
        if skipped > 0 {
            tracing::warn!(skipped, "journal lines that were not whole records skipped");
        }
        let mut replayed = 0u64;
        for chunk in records.chunks_mut(BATCH) {
            match self.sink.write_records(chunk).await {
                // Records already written before the journal was left are not counted.
                Ok(new) => replayed += new,
                Err(err) if self.health.note_failure(&err) => {
                    // Left in place; written again, without duplicates, next time.
                    return RETRY_EVERY;
                }
                Err(err) => {
                    let ids: Vec<&str> = chunk.iter().map(|r| r.id.as_str()).collect();
                    tracing::error!(error = %err, ?ids, "journaled request records could not be written");
                }
            }
        }
        journal.remove(&kept);
        self.written += replayed;
        self.counts.replayed.fetch_add(replayed, Ordering::Relaxed);
        tracing::info!(
            new = replayed,
            journaled = records.len(),
            "journaled request records replayed: those the store did not have are written"
        );
        REPLAY_PAUSE
    }
}

/// Records deleted per statement when pruning. A DELETE holds the database's write lock, which
/// the record writer then waits for: ten thousand rows take milliseconds, and a day of a
/// gateway at a hundred requests per second is under a thousand statements.
pub const PRUNE_BATCH: u32 = 10_000;

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The task that deletes records past their retention: once at start, then every hour.
///
/// Owned by whoever starts it; [`RecordRetention::shutdown`] stops it between two batches, so
/// it never delays shutdown by more than one bounded statement.
#[derive(Debug)]
pub struct RecordRetention {
    stop: CancellationToken,
    task: Option<JoinHandle<u64>>,
    removed: watch::Receiver<u64>,
}

impl RecordRetention {
    /// Starts deleting records that started more than `retention` ago. `None` keeps records
    /// forever: no task is started.
    pub fn start(pruning: Arc<dyn RecordPruning>, retention: Option<Duration>) -> RecordRetention {
        RecordRetention::start_every(pruning, retention, PRUNE_EVERY, PRUNE_BATCH)
    }

    fn start_every(
        pruning: Arc<dyn RecordPruning>,
        retention: Option<Duration>,
        every: Duration,
        batch: u32,
    ) -> RecordRetention {
        let stop = CancellationToken::new();
        let (removed_tx, removed) = watch::channel(0);
        let Some(retention) = retention else {
            tracing::info!("request record retention is off: records are kept forever");
            return RecordRetention {
                stop,
                task: None,
                removed,
            };
        };
        let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let retention_days = retention.as_secs() / 86_400;
        let stopping = stop.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "owned: stop() cancels it and awaits its JoinHandle"
        )]
        let task = tokio::spawn(async move {
            let mut total = 0u64;
            loop {
                let older_than_ms = crate::now_ms().saturating_sub(keep_ms);
                match pruning.prune_records(older_than_ms, batch, &stopping).await {
                    Ok(removed) => {
                        total += removed;
                        if removed > 0 {
                            tracing::info!(
                                removed,
                                retention_days,
                                "request records past their retention deleted"
                            );
                        } else {
                            tracing::debug!(retention_days, "no request record past its retention");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "request records past their retention could not be deleted; trying again at the next pass");
                    }
                }
                // Marks a pass even when nothing was deleted.
                removed_tx.send_replace(total);
                tokio::select! {
                    biased;
                    () = stopping.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
            total
        });
        RecordRetention {
            stop,
            task: Some(task),
            removed,
        }
    }

    /// Records deleted since start.
    pub fn removed(&self) -> u64 {
        *self.removed.borrow()
    }

    /// Stops the task (between two batches) and returns how many records it deleted in all.
    pub async fn shutdown(mut self) -> u64 {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap_or(0),
            None => 0,
        }
    }
}

/// Dropped without [`RecordRetention::shutdown`] (startup failed after it began): the task
/// still stops at its next batch instead of outliving its owner.
impl Drop for RecordRetention {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    fn record(id: &str, started_at: i64) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            started_at,
            status: 200,
            latency_us: 2000,
            ..Default::default()
        }
    }

    fn ids(records: &[RequestRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    async fn store() -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open_in_memory().await.unwrap())
    }

    #[tokio::test]
    async fn shutdown_drains_every_queued_record() {
        let store = store().await;
        let queue = RecordQueue::start(store.clone(), 1000);
        let sender = queue.sender();
        for i in 0..500 {
            sender.submit(record(&format!("r{i:03}"), i));
        }
        assert_eq!(queue.shutdown().await, 500);
        assert_eq!(store.latest_records(1000).await.unwrap().len(), 500);
        assert_eq!(sender.shed(), 0);
        // After shutdown, records are shed and counted, not lost silently.
        sender.submit(record("late", 9));
        assert_eq!(sender.shed(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn full_queue_sheds_and_counts() {
        let store = store().await;
        // The writer cannot run until we yield, so the queue holds exactly its capacity.
        let queue = RecordQueue::start(store.clone(), 4);
        let sender = queue.sender();
        for i in 0..10 {
            sender.submit(record(&format!("r{i}"), i));
        }
        assert_eq!(sender.shed(), 6);
        assert_eq!(queue.shutdown().await, 4);
    }

    /// A store that can be made unreachable: its calls fail as a pool that cannot connect.
    #[derive(Debug)]
    struct Flaky {
        store: Arc<SqliteStore>,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), crate::StoreError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(crate::StoreError::Database(sqlx::Error::PoolTimedOut));
            }
            Ok(())
        }
    }

    impl RecordSink for Flaky {
        fn write_records<'a>(
            &'a self,
            records: &'a mut [RequestRecord],
        ) -> crate::StoreFuture<'a, u64> {
            Box::pin(async move {
                self.check()?;
                self.store.write_records(records).await
            })
        }

        fn ping(&self) -> crate::StoreFuture<'_, ()> {
            Box::pin(async move { self.check() })
        }
    }

    fn journal_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-records-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn wait_for_records(store: &SqliteStore, count: usize) -> Vec<RequestRecord> {
        for _ in 0..500 {
            let found = store.latest_records(10_000).await.unwrap();
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {count} records written");
    }

    #[tokio::test]
    async fn records_written_while_the_store_is_down_are_replayed_once_it_is_back() {
        let dir = journal_dir("outage");
        let store = store().await;
        let flaky = Arc::new(Flaky {
            store: store.clone(),
            down: true.into(),
        });
        let health = Arc::new(StoreHealth::default());
        let journal = Journal::open(&dir, 64 << 20).unwrap();
        let queue =
            RecordQueue::start_journaled(flaky.clone(), 1000, Some(journal), health.clone());
        let sender = queue.sender();
        for i in 0..100 {
            sender.submit(record(&format!("r{i:03}"), i));
        }
        // The first batch fails and marks the store down; the rest wait in the journal.
        for _ in 0..500 {
            if health.is_down() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(health.is_down());
        assert!(sender.journal_bytes() > 0);
        for i in 100..150 {
            sender.submit(record(&format!("r{i:03}"), i));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.latest_records(1000).await.unwrap().len(), 0);
        flaky.down.store(false, Ordering::Relaxed);
        let found = wait_for_records(&store, 150).await;
        assert!(!health.is_down());
        let mut ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 150, "every record once");
        assert_eq!(sender.replayed(), 150);
        assert_eq!(sender.shed(), 0);
        assert!(health.degraded_total() > Duration::ZERO);
        queue.shutdown().await;
        assert_eq!(sender.journal_bytes(), 0, "nothing left to replay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_journal_left_by_a_killed_process_is_replayed_without_duplicates() {
        let dir = journal_dir("killed");
        let store = store().await;
        // The process wrote r0 and r1, and was killed with r1 and r2 journaled but r2 not
        // written.
        store
            .insert_records(&[record("r0", 0), record("r1", 1)])
            .await
            .unwrap();
        let journal = Journal::open(&dir, 64 << 20).unwrap();
        for (id, at) in [("r1", 1), ("r2", 2)] {
            match journal.append(&record(id, at)) {
                Appended::To(segment) => std::mem::forget(segment),
                other => panic!("{other:?}"),
            }
        }
        drop(journal);
        let queue = RecordQueue::start_journaled(
            store.clone(),
            1000,
            Some(Journal::open(&dir, 64 << 20).unwrap()),
            Arc::default(),
        );
        let sender = queue.sender();
        let found = wait_for_records(&store, 3).await;
        assert_eq!(ids(&found), ["r2", "r1", "r0"]);
        assert_eq!(sender.replayed(), 1, "r1 was in the store already");
        queue.shutdown().await;
        assert_eq!(store.latest_records(10).await.unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_record_the_queue_cannot_take_waits_in_the_journal() {
        let dir = journal_dir("full-queue");
        let store = store().await;
        let journal = Journal::open(&dir, 64 << 20).unwrap();
        // The writer cannot run until we yield, so the queue holds exactly its capacity.
        let queue = RecordQueue::start_journaled(store.clone(), 4, Some(journal), Arc::default());
        let sender = queue.sender();
        for i in 0..10 {
            sender.submit(record(&format!("r{i}"), i));
        }
        assert_eq!(sender.shed(), 0, "none shed: six wait in the journal");
        let found = wait_for_records(&store, 10).await;
        assert_eq!(found.len(), 10);
        queue.shutdown().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_writes_what_waited_in_the_journal_too() {
        let dir = journal_dir("shutdown");
        let store = store().await;
        let journal = Journal::open(&dir, 64 << 20).unwrap();
        let queue = RecordQueue::start_journaled(store.clone(), 4, Some(journal), Arc::default());
        let sender = queue.sender();
        for i in 0..10 {
            sender.submit(record(&format!("r{i}"), i));
        }
        // Four in the queue, six only in the journal: a replica retired now leaves none.
        queue.shutdown().await;
        assert_eq!(store.latest_records(100).await.unwrap().len(), 10);
        assert_eq!(sender.replayed(), 6);
        drop(sender);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn retention_deletes_at_start_and_again_at_every_pass() {
        let store = store().await;
        let day = 86_400_000;
        let now = crate::now_ms();
        store
            .insert_records(&[record("old1", now - 3 * day), record("recent", now)])
            .await
            .unwrap();
        let retention = RecordRetention::start_every(
            store.clone(),
            Some(Duration::from_secs(2 * 86_400)),
            Duration::from_millis(1),
            1,
        );
        let mut removed = retention.removed.clone();
        removed.wait_for(|&n| n == 1).await.unwrap();
        store
            .insert_records(&[record("old2", now - 5 * day), record("old3", now - 4 * day)])
            .await
            .unwrap();
        removed.wait_for(|&n| n == 3).await.unwrap();
        assert_eq!(retention.shutdown().await, 3);
        assert_eq!(ids(&store.latest_records(10).await.unwrap()), ["recent"]);
    }

    #[tokio::test]
    async fn retention_stops_at_once_while_waiting_for_its_next_pass() {
        let store = store().await;
        let retention = RecordRetention::start(store, Some(Duration::from_secs(86_400)));
        let mut removed = retention.removed.clone();
        removed.changed().await.unwrap();
        // The next pass is an hour away; shutdown does not wait for it.
        assert_eq!(retention.shutdown().await, 0);
    }

    #[tokio::test]
    async fn retention_off_starts_no_task() {
        let store = store().await;
        store.insert_records(&[record("ancient", 0)]).await.unwrap();
        let retention = RecordRetention::start(store.clone(), None);
        assert!(retention.task.is_none());
        assert_eq!(retention.shutdown().await, 0);
        assert_eq!(store.latest_records(10).await.unwrap().len(), 1);
    }
}
