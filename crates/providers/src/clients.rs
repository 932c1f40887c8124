//! The upstream HTTP clients, and which one carries a request.
//!
//! Each worker thread has clients of its own (see [`use_worker_pool`]), so the connection a
//! request is sent on is driven by the thread that serves the request and no other thread is
//! woken to carry it. Within a thread there are clients per HTTP version a provider asks for
//! ([`HttpVersion`]), and for an origin that may speak HTTP/2, as many clients as its streams
//! in flight need: a client keeps one HTTP/2 connection per origin, the server lets a
//! connection carry at most `SETTINGS_MAX_CONCURRENT_STREAMS` requests at once, and a request
//! past that would wait, unseen, until another stream ends (a minute, for a long answer). So
//! a request to such an origin goes to the first client with fewer than
//! `streams_per_connection` requests in flight there, and a new client (a new connection) is
//! made when none has room.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

/// How a provider's connections speak HTTP (`[providers.NAME] http_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/2 where TLS negotiates it (ALPN), HTTP/1.1 otherwise (every plain `http://` URL).
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: by prior knowledge over plain `http://` (h2c), by ALPN over TLS.
    Http2,
}

impl HttpVersion {
    /// The configuration's spelling: `auto`, `http1` or `http2`.
    pub fn parse(text: &str) -> Option<HttpVersion> {
        match text {
            "auto" => Some(HttpVersion::Auto),
            "http1" => Some(HttpVersion::Http1),
            "http2" => Some(HttpVersion::Http2),
            _ => None,
        }
    }

    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1 => "http1",
            HttpVersion::Http2 => "http2",
        }
    }

    /// Whether requests to a URL of `scheme` may share a connection, so that how many are in
    /// flight on each must be counted.
    fn may_multiplex(self, scheme: &str) -> bool {
        match self {
            HttpVersion::Http2 => true,
            HttpVersion::Auto => scheme == "https",
            HttpVersion::Http1 => false,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Thread sets kept apart, at most: worker threads beyond it share them round the table.
const POOLS: usize = 64;

/// Clients of one HTTP version in one thread, at most. At the default of 100 streams per
/// connection that is 25,600 streams to one origin from one worker; past it, requests go to
/// the client with the fewest in flight and wait at the server for a stream.
const MAX_CLIENTS: usize = 256;

std::thread_local! {
    /// The pool of this thread: `0` for any thread that is not a worker.
    static POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as worker `index`: the upstream calls it makes use that worker's
/// own clients and connections. Called once by each worker thread as it starts.
pub fn use_worker_pool(index: usize) {
    POOL.set(1 + index % (POOLS - 1));
}

/// Every thread's clients: the shared set, for threads that are not workers, and each
/// worker's, built on its first call.
#[derive(Debug)]
pub(crate) struct Clients {
    connect_timeout: Duration,
    shared: ThreadClients,
    workers: [OnceLock<ThreadClients>; POOLS - 1],
}

/// One thread's clients, per HTTP version: the first carries every request that cannot share
/// a connection; the others are made as HTTP/2 streams need them.
#[derive(Debug, Default)]
struct ThreadClients {
    by_version: [Mutex<Vec<Lane>>; 3],
}

/// One client, and how many requests are in flight on it to each origin that multiplexes.
#[derive(Debug)]
struct Lane {
    client: reqwest::Client,
    in_flight: Vec<(Arc<str>, Arc<AtomicUsize>)>,
}

impl Lane {
    fn new(connect_timeout: Duration, version: HttpVersion) -> Result<Lane, reqwest::Error> {
        Ok(Lane {
            client: build_client(connect_timeout, version)?,
            in_flight: Vec::new(),
        })
    }

    fn count(&self, origin: &str) -> Option<&Arc<AtomicUsize>> {
        self.in_flight
            .iter()
            .find(|(o, _)| **o == *origin)
            .map(|(_, count)| count)
    }

    fn in_flight(&self, origin: &str) -> usize {
        self.count(origin).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Counts one more request to `origin` on this lane.
    fn take(&mut self, origin: &Arc<str>) -> Lease {
        let count = match self.count(origin) {
            Some(count) => count.clone(),
            None => {
                let count = Arc::new(AtomicUsize::new(0));
                self.in_flight.push((origin.clone(), count.clone()));
                count
            }
        };
        count.fetch_add(1, Ordering::Relaxed);
        Lease {
            client: self.client.clone(),
            slot: StreamSlot(Some(count)),
        }
    }
}

/// The client a request is sent with, and its place among the streams in flight there.
pub(crate) struct Lease {
    pub client: reqwest::Client,
    pub slot: StreamSlot,
}

/// A request's place on a shared connection, counted until it is dropped: the caller keeps it
/// until the answer's last byte is read. Empty for requests that do not share a connection.
#[derive(Debug, Default)]
pub(crate) struct StreamSlot(Option<Arc<AtomicUsize>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Clients {
    /// Builds the shared HTTP/1-or-ALPN client now, so that a TLS backend that cannot start
    /// fails at start; every other client on its first use.
    pub(crate) fn new(connect_timeout: Duration) -> Result<Clients, reqwest::Error> {
        let shared = ThreadClients::default();
        shared.by_version[HttpVersion::Auto.index()]
            .lock()
            .push(Lane::new(connect_timeout, HttpVersion::Auto)?);
        Ok(Clients {
            connect_timeout,
            shared,
            workers: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// The calling thread's clients.
    fn thread(&self) -> &ThreadClients {
        match POOL.get().checked_sub(1).and_then(|i| self.workers.get(i)) {
            Some(slot) => slot.get_or_init(ThreadClients::default),
            None => &self.shared,
        }
    }

    /// The client for a request to `origin` (`scheme://host:port`) over `version`: the first
    /// of the calling thread's, unless the origin may multiplex, in which case the first with
    /// fewer than `per_connection` requests in flight there, or a new one.
    pub(crate) fn lease(
        &self,
        version: HttpVersion,
        scheme: &str,
        origin: &Arc<str>,
        per_connection: usize,
    ) -> Result<Lease, reqwest::Error> {
        let mut lanes = self.thread().by_version[version.index()].lock();
        if lanes.is_empty() {
            lanes.push(Lane::new(self.connect_timeout, version)?);
        }
        if !version.may_multiplex(scheme) {
            return Ok(Lease {
                client: lanes[0].client.clone(),
                slot: StreamSlot::default(),
            });
        }
        let with_room = lanes
            .iter()
            .position(|lane| lane.in_flight(origin) < per_connection.max(1));
        let index = match with_room {
            Some(index) => index,
            None if lanes.len() < MAX_CLIENTS => {
                lanes.push(Lane::new(self.connect_timeout, version)?);
                lanes.len() - 1
            }
            None => (0..lanes.len())
                .min_by_key(|&i| lanes[i].in_flight(origin))
                .unwrap_or(0),
        };
        Ok(lanes[index].take(origin))
    }

    /// How many clients the calling thread has for `version` (for tests).
    #[cfg(test)]
    fn built(&self, version: HttpVersion) -> usize {
        self.thread().by_version[version.index()].lock().len()
    }
}

/// A client with rustls (the ring provider) and warm pooled connections.
fn build_client(
    connect_timeout: Duration,
    version: HttpVersion,
) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
    match version {
        HttpVersion::Auto => builder,
        HttpVersion::Http1 => builder.http1_only(),
        HttpVersion::Http2 => builder.http2_prior_knowledge(),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Clients::new(Duration::from_secs(1)).unwrap()
    }

    fn origin(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn each_worker_thread_calls_through_clients_of_its_own() {
        let clients = Arc::new(clients());
        let a = origin("http://h:1");
        // Which lane a thread's first HTTP/2 request takes tells whose clients they are: a
        // thread that already holds a stream there is given a second client.
        let held = clients
            .lease(HttpVersion::Http2, "http", &a, 1)
            .unwrap()
            .slot;
        assert_eq!(clients.built(HttpVersion::Http2), 1);
        let lanes_of = |worker: Option<usize>| {
            let (clients, a) = (clients.clone(), a.clone());
            std::thread::spawn(move || {
                if let Some(index) = worker {
                    use_worker_pool(index);
                }
                let _slot = clients.lease(HttpVersion::Http2, "http", &a, 1).unwrap();
                clients.built(HttpVersion::Http2)
            })
            .join()
            .unwrap()
        };
        assert_eq!(lanes_of(Some(0)), 1, "worker 0 starts with its own client");
        assert_eq!(lanes_of(Some(0)), 1, "its stream ended, its client is free");
        assert_eq!(lanes_of(None), 2, "other threads share the first set");
        drop(held);
    }

    #[test]
    fn http2_streams_past_the_limit_open_a_new_connection_per_origin() {
        let clients = clients();
        let (a, b) = (origin("http://h:1"), origin("http://h:2"));
        let mut held: Vec<StreamSlot> = (0..3)
            .map(|_| {
                clients
                    .lease(HttpVersion::Http2, "http", &a, 2)
                    .unwrap()
                    .slot
            })
            .collect();
        assert_eq!(clients.built(HttpVersion::Http2), 2, "two streams fill one");
        // Another origin's streams count apart.
        held.push(
            clients
                .lease(HttpVersion::Http2, "http", &b, 2)
                .unwrap()
                .slot,
        );
        held.push(
            clients
                .lease(HttpVersion::Http2, "http", &b, 2)
                .unwrap()
                .slot,
        );
        assert_eq!(clients.built(HttpVersion::Http2), 2);
        // A stream that ends frees its place for the next request.
        held.remove(0);
        let _next = clients.lease(HttpVersion::Http2, "http", &a, 2).unwrap();
        assert_eq!(clients.built(HttpVersion::Http2), 2);
        let _second_full = clients.lease(HttpVersion::Http2, "http", &a, 2).unwrap();
        assert_eq!(clients.built(HttpVersion::Http2), 2);
        let _third = clients.lease(HttpVersion::Http2, "http", &a, 2).unwrap();
        assert_eq!(clients.built(HttpVersion::Http2), 3);
    }

    #[test]
    fn connections_that_carry_one_request_are_not_counted() {
        let clients = clients();
        let a = origin("http://h:1");
        let held: Vec<Lease> = (0..5)
            .map(|_| clients.lease(HttpVersion::Auto, "http", &a, 1).unwrap())
            .chain((0..5).map(|_| clients.lease(HttpVersion::Http1, "https", &a, 1).unwrap()))
            .collect();
        assert!(held.iter().all(|lease| lease.slot.0.is_none()));
        assert_eq!(clients.built(HttpVersion::Auto), 1);
        assert_eq!(clients.built(HttpVersion::Http1), 1);
        // Over TLS, `auto` may be HTTP/2: counted.
        let _tls: Vec<Lease> = (0..2)
            .map(|_| clients.lease(HttpVersion::Auto, "https", &a, 1).unwrap())
            .collect();
        assert_eq!(clients.built(HttpVersion::Auto), 2);
    }
}
