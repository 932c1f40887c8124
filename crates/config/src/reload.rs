//! What a reload of the configuration cannot change: the settings a running gateway fixed at
//! start (its sockets, store, counters, exporters). A reload applies everything else — routes,
//! deployments, prices, energy, route policies (DLP, tool policy, stop guard, structured
//! output, input limits), alias limits, `[upstream]` timeouts — and reports these as needing a
//! restart. The CLI does the reloading; `docs/configuration.md` lists both sets.

use secrecy::{ExposeSecret, SecretString};

use crate::{CounterBackend, Settings};

impl Settings {
    /// The fields of `next` that differ from `self` and take effect only after a restart, as
    /// configuration paths (`server.listen`, `budgets.counters`...), in file order.
    pub fn needs_restart(&self, next: &Settings) -> Vec<&'static str> {
        let (a, b) = (&self.server, &next.server);
        let (sa, sb) = (&self.store, &next.store);
        let (ta, tb) = (&self.telemetry, &next.telemetry);
        let (ba, bb) = (&self.policy.budgets, &next.policy.budgets);
        let checks = [
            ("server.listen", a.listen != b.listen),
            (
                "server.max_body_bytes",
                a.max_body_bytes != b.max_body_bytes,
            ),
            (
                "server.header_read_timeout_ms",
                a.header_read_timeout != b.header_read_timeout,
            ),
            (
                "server.body_read_timeout_ms",
                a.body_read_timeout != b.body_read_timeout,
            ),
            ("server.idle_timeout_ms", a.idle_timeout != b.idle_timeout),
            (
                "server.max_connections",
                a.max_connections != b.max_connections,
            ),
            (
                "server.max_connections_per_client",
                a.max_connections_per_client != b.max_connections_per_client,
            ),
            (
                "server.shutdown_grace_ms",
                a.shutdown_grace != b.shutdown_grace,
            ),
            (
                "server.listen_backlog",
                a.listen_backlog != b.listen_backlog,
            ),
            (
                "server.metrics_listen",
                a.metrics_listen != b.metrics_listen,
            ),
            ("server.watch_config", a.watch_config != b.watch_config),
            ("server.workers", a.workers != b.workers),
            ("server.reuse_port", a.reuse_port != b.reuse_port),
            ("store.path / store.url", !sa.location.same_as(&sb.location)),
            ("store.record_queue", sa.record_queue != sb.record_queue),
            ("store.retention_days", sa.retention != sb.retention),
            (
                "store.journal / store.journal_max_mb",
                sa.journal != sb.journal,
            ),
            ("store.offline_keys_ms", sa.offline_keys != sb.offline_keys),
            (
                "upstream.http2_streams_per_connection",
                self.upstream.http2_streams_per_connection
                    != next.upstream.http2_streams_per_connection,
            ),
            (
                "telemetry.otlp_endpoint",
                ta.otlp_endpoint != tb.otlp_endpoint,
            ),
            (
                "telemetry.otlp_protocol",
                ta.otlp_protocol != tb.otlp_protocol,
            ),
            (
                "telemetry.otlp_headers",
                ta.otlp_headers.len() != tb.otlp_headers.len()
                    || ta
                        .otlp_headers
                        .iter()
                        .zip(&tb.otlp_headers)
                        .any(|((na, va), (nb, vb))| na != nb || !same_secret(va, vb)),
            ),
            ("telemetry.service_name", ta.service_name != tb.service_name),
            ("telemetry.trace_queue", ta.trace_queue != tb.trace_queue),
            (
                "telemetry.otlp_timeout_ms",
                ta.otlp_timeout != tb.otlp_timeout,
            ),
            (
                "budgets.counters",
                !same_counters(&ba.counters, &bb.counters),
            ),
            ("budgets.reload_ms", ba.reload != bb.reload),
            (
                "budgets.max_counters_per_tenant",
                ba.max_counters_per_tenant != bb.max_counters_per_tenant,
            ),
            (
                "admin.token_env",
                match (&self.policy.admin_token, &next.policy.admin_token) {
                    (Some(ta), Some(tb)) => !same_secret(ta, tb),
                    (None, None) => false,
                    _ => true,
                },
            ),
        ];
        checks
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(field, _)| field)
            .collect()
    }
}

/// The same counter store: both in process, or the same Redis, prefix and timeout.
fn same_counters(a: &CounterBackend, b: &CounterBackend) -> bool {
    match (a, b) {
        (CounterBackend::Memory, CounterBackend::Memory) => true,
        (
            CounterBackend::Redis {
                url: ua,
                prefix: pa,
                timeout: ta,
            },
            CounterBackend::Redis {
                url: ub,
                prefix: pb,
                timeout: tb,
            },
        ) => same_secret(ua, ub) && pa == pb && ta == tb,
        _ => false,
    }
}

fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}
