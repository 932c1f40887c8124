//! Request records: written off the request path, and deleted once past their retention.
//!
//! The request path hands a [`RequestRecord`] to a [`RecordSender`], which never waits: when
//! the bounded queue is full the record is shed and counted (`shed()`), never silently lost.
//! One writer task drains the queue in batches into the [`RecordSink`] (one transaction per
//! batch in the databases); a batch waits up to 25 ms to fill (group commit).
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
use tokio_util::sync::CancellationToken;

use crate::{RecordPruning, RecordSink};

pub use sluice_types::record::{AttemptRecord, Bodies, RequestRecord};

/// Cheap to clone; handed to the request path.
#[derive(Clone, Debug)]
pub struct RecordSender {
    tx: mpsc::Sender<RequestRecord>,
    shed: Arc<AtomicU64>,
}

impl RecordSender {
    /// Queues a record without waiting. A full or closed queue sheds it and counts it.
    pub fn submit(&self, record: RequestRecord) {
        if let Err(err) = self.tx.try_send(record) {
            let total = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
            let reason = match err {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "queue closed",
            };
            tracing::warn!(reason, shed_total = total, "request record shed");
        }
    }

    /// Records shed since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
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

impl RecordQueue {
    pub fn start(sink: Arc<dyn RecordSink>, capacity: usize) -> RecordQueue {
        let (tx, mut rx) = mpsc::channel(capacity.max(1));
        let close = tokio_util::sync::CancellationToken::new();
        let closing = close.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "owned: shutdown awaits the writer's JoinHandle"
        )]
        let writer = tokio::spawn(async move {
            let mut written = 0u64;
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                tokio::select! {
                    biased;
                    n = rx.recv_many(&mut batch, BATCH) => {
                        if n == 0 { break; }
                        linger(&mut rx, &mut batch).await;
                    }
                    () = closing.cancelled() => {
                        // Stop intake; whatever is queued is still received below.
                        rx.close();
                        while rx.recv_many(&mut batch, BATCH).await > 0 {
                            written += write_batch(&*sink, &mut batch).await;
                        }
                        break;
                    }
                }
                written += write_batch(&*sink, &mut batch).await;
            }
            written
        });
        RecordQueue {
            sender: RecordSender {
                tx,
                shed: Arc::default(),
            },
            close,
            writer,
        }
    }

    pub fn sender(&self) -> RecordSender {
        self.sender.clone()
    }

    /// Stops intake, writes every queued record, and returns how many were written in all.
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
async fn linger(rx: &mut mpsc::Receiver<RequestRecord>, batch: &mut Vec<RequestRecord>) {
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

async fn write_batch(sink: &dyn RecordSink, batch: &mut Vec<RequestRecord>) -> u64 {
    let count = batch.len() as u64;
    if count == 0 {
        return 0;
    }
    match sink.write_records(batch).await {
        Ok(()) => {
            batch.clear();
            count
        }
        Err(err) => {
            // Logged with the ids so the loss is traceable; retrying a failing disk would only
            // grow the queue.
            let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
            tracing::error!(error = %err, ?ids, "request records could not be written");
            batch.clear();
            0
        }
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
