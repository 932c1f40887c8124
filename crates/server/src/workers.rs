//! The threads client connections are served on: one single-threaded runtime per core.
//!
//! A connection is handed, once, to the worker with the fewest open connections, its socket
//! moved to that worker's reactor, and everything its requests do afterwards — reading them,
//! calling the upstream over that worker's own pooled connections (`sluice_providers::Upstream`
//! keeps one pool per worker), and answering — runs on that one thread. A work-stealing
//! runtime wakes idle sibling threads to steal work they then do not find: about twice the
//! context switches per request at low load (`BENCHMARKS.md`, "Latency at low load").
//!
//! The cost of the model is balance: a worker does not take another's connections. Connections
//! are spread as they open, and clients keep several open under load.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The worker threads; dropping it (or [`Workers::shutdown`]) stops them once their tasks
/// are done being polled (connections are drained by the listener before that).
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Worker {
    runtime: Handle,
    /// Connections served by this worker now.
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` worker threads (at least one), named `sluice-worker-N`.
    pub fn start(count: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                runtime: runtime.handle().clone(),
                open: Arc::default(),
            });
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || {
                    sluice_providers::use_worker_pool(index);
                    runtime.block_on(stop.cancelled_owned());
                })?;
            threads.push(thread);
        }
        Ok(Workers {
            workers,
            threads,
            stop,
        })
    }

    /// How many worker threads serve connections.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Serves one accepted connection on the worker with the fewest open connections: the
    /// socket is moved to that worker's own reactor, so its readiness wakes that thread only.
    pub(crate) fn spawn_connection<F, Fut>(&self, stream: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            return Ok(());
        };
        // Out of the accepting thread's reactor (`into_std` deregisters it) ...
        let stream = stream.into_std()?;
        let open = OpenConnection::new(worker.open.clone());
        drop(worker.runtime.spawn(async move {
            // ... into the worker's.
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(error) => {
                    tracing::warn!(%error, "a connection could not be moved to its worker")
                }
            }
            drop(open);
        }));
        Ok(())
    }

    /// Stops the worker threads and waits for them.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One connection counted on its worker until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_worker_with_the_fewest_open_and_are_served_there() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let workers = Workers::start(2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            // Each connection answers its first read with the name of the thread serving it.
            workers
                .spawn_connection(accepted, |mut stream| async move {
                    let mut byte = [0u8; 1];
                    if stream.read_exact(&mut byte).await.is_ok() {
                        let name = std::thread::current().name().unwrap_or_default().to_owned();
                        let _ = stream.write_all(name.as_bytes()).await;
                    }
                })
                .unwrap();
            clients.push(client);
        }
        let mut served_on = Vec::new();
        for client in &mut clients {
            client.write_all(b"?").await.unwrap();
            client.shutdown().await.unwrap();
            let mut name = String::new();
            client.read_to_string(&mut name).await.unwrap();
            served_on.push(name);
        }
        served_on.sort();
        assert_eq!(
            served_on,
            [
                "sluice-worker-0",
                "sluice-worker-0",
                "sluice-worker-1",
                "sluice-worker-1"
            ]
        );
        // Once the connections end, their places are free again.
        for _ in 0..100 {
            if workers
                .workers
                .iter()
                .all(|w| w.open.load(Ordering::Relaxed) == 0)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            workers
                .workers
                .iter()
                .all(|w| w.open.load(Ordering::Relaxed) == 0)
        );
        tokio::task::spawn_blocking(move || workers.shutdown())
            .await
            .unwrap();
    }
}
