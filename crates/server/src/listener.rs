//! Client connections: how they are accepted, bounded and ended, so that no client can hold
//! the gateway by what it chooses — how many connections it opens, or how slowly it sends or
//! reads.
//!
//! - [`bind`] opens the listening socket with a deep accept backlog ([`DEFAULT_BACKLOG`]), so a
//!   burst of connections is queued by the kernel instead of having its SYNs dropped.
//! - [`serve`] accepts under two bounds: [`ConnectionLimits::max_connections_per_client`]
//!   (per client IP address) and [`ConnectionLimits::max_connections`] (in total). A connection
//!   over either is answered `503 too_many_connections` with `Retry-After: 1` and
//!   `Connection: close`, in the dialect of the request it sends (Anthropic when it carries
//!   `anthropic-version`, OpenAI otherwise); at most [`SHED_ANSWERS`] such answers are under
//!   way at once, beyond which an over-limit connection is closed at once without one. Each is
//!   counted (`sluice_connections_shed_total`) and logged at most once per
//!   [`LOG_INTERVAL`], with the number left out.
//! - Every connection has a header-read timeout (the request's head must arrive within it,
//!   counted from the connection's opening or the end of the previous answer: it is also how
//!   long an idle kept-alive connection stays open), and an idle timeout on writing: an answer
//!   the client does not read for that long closes the connection. The body's own timeout is
//!   applied where the body is read (`body.rs`).
//! - On shutdown, accepting stops, idle connections close, requests under way (streams
//!   included) get [`ConnectionLimits::shutdown_grace`] to finish, and whatever is still open
//!   after it is closed and counted.
//!
//! What it leaves to others: the routes (`lib.rs`), error bodies (`error.rs`), and the metrics
//! exposition (`sluice-telemetry`), which reads [`ConnectionStats`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_types::{ErrorKind, LogThrottle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::ApiError;
use crate::workers::Workers;

/// The listen backlog asked of the kernel (Linux caps it at `net.core.somaxconn`, 4096 by
/// default since 5.4). The common 128 drops SYNs under a burst of new connections.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Over-limit connections being answered 503 at once, at most; beyond it they are closed
/// without an answer. Each such answer lasts at most [`SHED_HEADER_TIMEOUT`] plus a write.
pub const SHED_ANSWERS: usize = 64;

/// How long an over-limit connection may take to send the request head its 503 answers.
const SHED_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most one kind of shed or timed-out connection is logged: once per interval, with the
/// number left out since.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bounds on client connections, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's head must arrive within this, counted from the connection's opening or the
    /// end of the previous answer (so it also closes idle kept-alive connections).
    pub header_read_timeout: Duration,
    /// An answer the client reads none of for this long closes the connection.
    pub idle_timeout: Duration,
    /// Connections open at once, in total.
    pub max_connections: usize,
    /// Connections open at once from one client IP address.
    pub max_connections_per_client: usize,
    /// On shutdown, how long requests under way may still take before their connections are
    /// closed.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults of `[server]` (see `docs/configuration.md`), but for `max_connections`,
    /// which the configuration derives from the open-file limit.
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What the listener did, since start; read by `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    shed_per_client: AtomicU64,
    shed_total: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    cut_at_shutdown: AtomicU64,
}

impl ConnectionStats {
    pub fn counts(&self) -> sluice_telemetry::ConnectionCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        sluice_telemetry::ConnectionCounts {
            open: read(&self.open),
            shed_per_client: read(&self.shed_per_client),
            shed_total: read(&self.shed_total),
            header_timeouts: read(&self.header_timeouts),
            body_timeouts: read(&self.body_timeouts),
            write_timeouts: read(&self.write_timeouts),
            cut_at_shutdown: read(&self.cut_at_shutdown),
        }
    }

    /// A request body that did not arrive in time (counted where the body is read).
    pub(crate) fn body_timed_out(&self) {
        self.body_timeouts.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = BODY_TIMEOUT_LOG.admit(Instant::now()) {
            tracing::warn!(
                left_out,
                "request body did not arrive within server.body_read_timeout_ms; answered 408"
            );
        }
    }
}

static BODY_TIMEOUT_LOG: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static HEADER_TIMEOUT_LOG: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static WRITE_TIMEOUT_LOG: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static SHED_PER_CLIENT_LOG: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static SHED_TOTAL_LOG: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static ACCEPT_ERROR_LOG: LogThrottle = LogThrottle::new(LOG_INTERVAL);

/// Binds `addr` with a listen backlog of `backlog` (and `SO_REUSEADDR`, so a restart does not
/// wait out `TIME_WAIT`).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    bind_with(addr, backlog, false)
}

/// [`bind`]; with `reuse_port`, other processes may listen on `addr` too (`SO_REUSEPORT`, Linux
/// and the BSDs): the kernel spreads new connections over every listener, and when one
/// process stops the others take every new connection.
pub fn bind_with(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    {
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(reuse_port)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    PerClient,
    Total,
}

impl Shed {
    fn message(self) -> &'static str {
        match self {
            Shed::PerClient => {
                "too many connections from your address: close idle ones or reuse them (keep-alive), then retry"
            }
            Shed::Total => "the gateway is at its connection limit; retry shortly",
        }
    }
}

/// Open connections per client address and in total. A [`Ticket`] holds one place.
#[derive(Debug)]
struct Occupancy {
    per_client: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<ConnectionStats>,
    limits: ConnectionLimits,
}

impl Occupancy {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Shed> {
        let mut per_client = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = self.stats.open.load(Ordering::Relaxed);
        let from_client = per_client.get(&ip).copied().unwrap_or(0);
        if from_client >= self.limits.max_connections_per_client {
            return Err(Shed::PerClient);
        }
        if open >= self.limits.max_connections as u64 {
            return Err(Shed::Total);
        }
        *per_client.entry(ip).or_insert(0) += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            occupancy: self.clone(),
            ip,
        })
    }
}

/// One connection's place; dropping it frees the place.
#[derive(Debug)]
struct Ticket {
    occupancy: Arc<Occupancy>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut per_client = self
            .occupancy
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_client.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_client.remove(&self.ip);
            }
        }
        self.occupancy.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops accepting,
/// closes idle connections, gives requests under way `limits.shutdown_grace` to finish, and
/// closes what is left. Accepted sockets get `TCP_NODELAY`: stream events are small writes that
/// Nagle's algorithm would otherwise hold back until the client's delayed ACK (~40 ms).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(None, listener, app, limits, stats, shutdown).await
}

/// [`serve`], with each admitted connection handed to one of `workers` (the one with the
/// fewest open connections) and served on that thread to its end. Accepting, shedding and
/// draining stay here.
pub async fn serve_on(
    workers: &Workers,
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(Some(workers), listener, app, limits, stats, shutdown).await
}

async fn serve_with(
    workers: Option<&Workers>,
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let occupancy = Arc::new(Occupancy {
        per_client: Mutex::default(),
        stats: stats.clone(),
        limits,
    });
    let shed_answers = Arc::new(Semaphore::new(SHED_ANSWERS));
    let connections = TaskTracker::new();
    // `draining`: finish what is under way, take nothing new. `closing`: the grace is over.
    let draining = CancellationToken::new();
    let closing = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was accepted:
                    // nothing to answer. Pause briefly so a descriptor shortage does not spin.
                    if let Some(left_out) = ACCEPT_ERROR_LOG.admit(Instant::now()) {
                        tracing::warn!(%error, left_out, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let ip = peer.ip().to_canonical();
        match occupancy.enter(ip) {
            Ok(ticket) => {
                let app = app.clone();
                let stats = stats.clone();
                let draining = draining.clone();
                let closing = closing.clone();
                let tracked = connections.token();
                let connection = move |stream| async move {
                    serve_connection(stream, app, limits, &stats, draining, closing).await;
                    drop(ticket);
                    drop(tracked);
                };
                match workers {
                    Some(workers) => {
                        if let Err(error) = workers.spawn_connection(stream, connection) {
                            tracing::warn!(%error, "a connection could not be handed to a worker");
                        }
                    }
                    None => drop(connections.spawn(connection(stream))),
                }
            }
            Err(reason) => {
                let (counter, log) = match reason {
                    Shed::PerClient => (&stats.shed_per_client, &SHED_PER_CLIENT_LOG),
                    Shed::Total => (&stats.shed_total, &SHED_TOTAL_LOG),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(left_out) = log.admit(Instant::now()) {
                    match reason {
                        Shed::PerClient => tracing::warn!(
                            client = %ip,
                            limit = limits.max_connections_per_client,
                            left_out,
                            "connection refused: its client address is at server.max_connections_per_client"
                        ),
                        Shed::Total => tracing::warn!(
                            client = %ip,
                            limit = limits.max_connections,
                            left_out,
                            "connection refused: the gateway is at server.max_connections"
                        ),
                    }
                }
                if let Ok(permit) = shed_answers.clone().try_acquire_owned() {
                    let closing = closing.clone();
                    let stats = stats.clone();
                    connections.spawn(async move {
                        answer_shed(stream, reason, &stats, closing).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    draining.cancel();
    connections.close();
    if tokio::time::timeout(limits.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        let open = stats.open.load(Ordering::Relaxed);
        tracing::warn!(
            open,
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "shutdown grace over: closing the connections still open"
        );
        closing.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// One admitted connection, to its end (or the end of the shutdown grace).
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    stats: &Arc<ConnectionStats>,
    draining: CancellationToken,
    closing: CancellationToken,
) {
    let io = TokioIo::new(WriteStallGuard::new(
        stream,
        limits.idle_timeout,
        stats.clone(),
    ));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut app = app.clone();
        async move { app.call(request.map(Body::new)).await }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = draining.cancelled() => {
            // Idle: closes now; a request under way: closes after its answer.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = closing.cancelled() => {
                    stats.cut_at_shutdown.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    if let Err(error) = result
        && error.is_timeout()
    {
        stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = HEADER_TIMEOUT_LOG.admit(Instant::now()) {
            tracing::warn!(
                left_out,
                "connection closed: no complete request head within server.header_read_timeout_ms"
            );
        }
    }
}

/// An over-limit connection: its first request is answered 503 in its dialect, then it closes.
async fn answer_shed(
    stream: TcpStream,
    reason: Shed,
    stats: &Arc<ConnectionStats>,
    closing: CancellationToken,
) {
    let io = TokioIo::new(WriteStallGuard::new(
        stream,
        SHED_HEADER_TIMEOUT,
        stats.clone(),
    ));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let dialect = crate::dialect_of(request.headers());
        let mut error = ApiError::new(ErrorKind::TooManyConnections, reason.message());
        error.retry_after = Some(1);
        let mut response = error.render(dialect);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(SHED_HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        () = closing.cancelled() => {}
    }
}

/// A client socket whose writes fail with `TimedOut` once a write has made no progress for
/// `timeout`: the client stopped reading its answer (a full send buffer). Reads pass through.
struct WriteStallGuard {
    stream: TcpStream,
    timeout: Duration,
    /// Armed while a write is blocked; reset by every write that makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
    stats: Arc<ConnectionStats>,
}

impl WriteStallGuard {
    fn new(stream: TcpStream, timeout: Duration, stats: Arc<ConnectionStats>) -> Self {
        WriteStallGuard {
            stream,
            timeout,
            stalled: None,
            stats,
        }
    }

    /// Called when the socket is not writable: arms the deadline, or fails once it passed.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        self.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = WRITE_TIMEOUT_LOG.admit(Instant::now()) {
            tracing::warn!(
                left_out,
                "connection closed: the client read none of its answer within server.idle_timeout_ms"
            );
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading its answer",
        ))
    }
}

impl AsyncRead for WriteStallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.poll_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.poll_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupancy(per_client: usize, total: usize) -> Arc<Occupancy> {
        Arc::new(Occupancy {
            per_client: Mutex::default(),
            stats: Arc::default(),
            limits: ConnectionLimits {
                max_connections: total,
                max_connections_per_client: per_client,
                ..ConnectionLimits::default()
            },
        })
    }

    #[test]
    fn places_are_bounded_per_client_and_in_total_and_freed_on_drop() {
        let occupancy = occupancy(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = occupancy.enter(a).unwrap();
        let _second = occupancy.enter(a).unwrap();
        assert_eq!(occupancy.enter(a).unwrap_err(), Shed::PerClient);
        let _third = occupancy.enter(b).unwrap();
        assert_eq!(occupancy.enter(b).unwrap_err(), Shed::Total);
        drop(first);
        assert_eq!(occupancy.stats.open.load(Ordering::Relaxed), 2);
        let _again = occupancy.enter(a).unwrap();
    }

    #[tokio::test]
    async fn a_write_the_client_never_reads_fails_after_the_idle_timeout() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stats = Arc::new(ConnectionStats::default());
        let mut guard = WriteStallGuard::new(server, Duration::from_millis(200), stats.clone());
        let chunk = vec![0u8; 64 * 1024];
        // The kernel buffers a few megabytes at most; the bound only keeps a bug from looping.
        let mut error = None;
        for _ in 0..16_384 {
            if let Err(e) = guard.write_all(&chunk).await {
                error = Some(e);
                break;
            }
        }
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert_eq!(stats.counts().write_timeouts, 1);
        drop(client);
    }
}
