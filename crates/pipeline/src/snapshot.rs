//! The configuration a request runs on, and how a reload replaces it.
//!
//! Everything the request path reads that the configuration file decides — routes and
//! deployments (the [`Router`]), the upstream clients' timeouts, prices, each route's rules
//! and hooks (the [`PolicyEngine`]) — sits in one immutable [`Snapshot`]. A request takes the
//! current one once, when it starts ([`Gateway::current`]), and carries it through every stage:
//! its exchange prices and settles with the snapshot's engine, its stream keeps the snapshot's
//! route and hooks, so a request (or a stream) that started before a reload ends as it began.
//!
//! The snapshot sits in an [`ArcSwap`]: loading it is one wait-free atomic read plus a
//! reference count, with no lock a reload could hold up (a `RwLock<Arc<_>>` makes every
//! request take the lock word; a `watch` channel takes a lock on every borrow). A reload builds
//! the next snapshot beside the current one and swaps it in whole.
//!
//! What outlives snapshots is the [`Gateway`]'s own: the store, keys, the record queue,
//! metrics, budget counters and the budget rows read from the store. Deployment health (breaker,
//! latency, cool-downs, concurrency slots) is carried over by the caller building the next
//! router (`Router::keep_unchanged`). Reading and validating the file is the CLI's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_providers::{Timeouts, Upstream};
use sluice_routing::Router;

use crate::{Gateway, PolicyEngine, PolicyParts};

/// Everything a request reads that the configuration decides. Immutable: a reload builds a
/// new one.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) router: Router,
    /// The default upstream client, with `[upstream]`'s timeouts.
    pub(crate) upstream: Upstream,
    /// Clients for routes with a connect timeout of their own (reqwest fixes it per client).
    pub(crate) upstreams_by_connect: Vec<(Duration, Upstream)>,
    pub(crate) policy: Arc<PolicyEngine>,
    pub(crate) source: ConfigSource,
}

/// Where the active configuration came from and when it was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file read; `None` when no file was (built-in defaults, or settings built in code).
    pub path: Option<PathBuf>,
    /// SHA-256 of the file's bytes, lowercase hex; empty without a file.
    pub sha256: String,
    /// When it was loaded, in Unix milliseconds.
    pub loaded_at_ms: i64,
}

impl ConfigSource {
    /// Settings that came from no file (built-in defaults, or built in code), loaded now.
    pub fn without_file() -> ConfigSource {
        ConfigSource {
            loaded_at_ms: sluice_types::clock::unix_ms(),
            ..ConfigSource::default()
        }
    }
}

/// Reloads since start: swapped in, and refused (an invalid file, the running one kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub ok: u64,
    pub refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Reloads {
    ok: AtomicU64,
    refused: AtomicU64,
}

impl Snapshot {
    /// The snapshot of `router`, `upstream` and `policy`. Clients for routes' own connect
    /// timeouts are taken from `previous` when it has one of the same timeout (their pools stay
    /// warm), built otherwise.
    pub(crate) fn new(
        router: Router,
        upstream: Upstream,
        mut policy: PolicyEngine,
        previous: Option<&Snapshot>,
        source: ConfigSource,
    ) -> Snapshot {
        policy.know_deployments(router.deployments().iter().map(|h| &*h.deployment));
        let mut upstreams_by_connect: Vec<(Duration, Upstream)> = Vec::new();
        for route in router.routes() {
            let connect = route.policy.timeouts.connect;
            if connect == upstream.timeouts().connect
                || upstreams_by_connect.iter().any(|(d, _)| *d == connect)
            {
                continue;
            }
            let kept = previous.and_then(|p| {
                p.upstreams_by_connect
                    .iter()
                    .find(|(d, _)| *d == connect)
                    .map(|(_, client)| client.with_timeouts(upstream.timeouts()))
            });
            match kept.map_or_else(|| upstream.with_connect_timeout(connect), Ok) {
                Ok(client) => upstreams_by_connect.push((connect, client)),
                // Only a TLS backend that cannot start fails here, and the default client
                // started: keep it, and say so.
                Err(e) => {
                    tracing::warn!(alias = %route.alias, error = %e, "route connect timeout ignored")
                }
            }
        }
        Snapshot {
            router,
            upstream,
            upstreams_by_connect,
            policy: Arc::new(policy),
            source,
        }
    }

    /// The same snapshot, said to come from `source`.
    fn with_source(&self, source: ConfigSource) -> Snapshot {
        Snapshot {
            router: self.router.clone(),
            upstream: self.upstream.clone(),
            upstreams_by_connect: self.upstreams_by_connect.clone(),
            policy: self.policy.clone(),
            source,
        }
    }
}

impl Gateway {
    /// The gateway on the configuration in force now. Every request calls it once, when it
    /// starts, and runs all its stages on the value it returns: a reload after that does not
    /// change what the request sees. One atomic load; no allocation.
    pub fn current(&self) -> Gateway {
        Gateway {
            inner: self.inner.clone(),
            config: self.inner.live.load_full(),
        }
    }

    /// Names where the configuration this gateway starts with came from (before any clone is
    /// handed out: clones taken earlier keep the unnamed snapshot).
    pub fn configured_from(self, source: ConfigSource) -> Gateway {
        let config = Arc::new(self.config.with_source(source));
        self.inner.live.store(config.clone());
        Gateway {
            inner: self.inner,
            config,
        }
    }

    /// Where the configuration of this value's snapshot came from.
    pub fn config_source(&self) -> &ConfigSource {
        &self.config.source
    }

    /// Swaps in a new configuration: `router` (built with the health of unchanged deployments
    /// carried over), `[upstream]`'s `timeouts`, and the policy engine's configured parts
    /// (`policy.counters` must be [`PolicyEngine::counters`] of the running engine: counters
    /// are not reconfigured). Budget rows, counters and settlements in flight carry over.
    /// Requests already running keep the snapshot they started with. Callers serialize reloads.
    pub fn reconfigure(
        &self,
        router: Router,
        timeouts: Timeouts,
        policy: PolicyParts,
        source: ConfigSource,
    ) {
        let previous = self.inner.live.load_full();
        let upstream = previous.upstream.with_timeouts(timeouts);
        let policy = previous.policy.reconfigured(policy);
        let next = Snapshot::new(router, upstream, policy, Some(&previous), source);
        self.inner.live.store(Arc::new(next));
        self.inner.reloads.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reload refused (the file was invalid; the running configuration stays).
    pub fn count_refused_reload(&self) {
        self.inner.reloads.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads since start.
    pub fn reloads(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.inner.reloads.ok.load(Ordering::Relaxed),
            refused: self.inner.reloads.refused.load(Ordering::Relaxed),
        }
    }
}
