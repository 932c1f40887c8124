//! A Redis that stalls (a paused process rather than a refused connection) queues the
//! gateway's counter commands; when it resumes it runs them. Reservations the gateway already
//! gave up on (and answered 503) must not be charged then, and a refusal for a stalled Redis
//! takes one timeout, not several.
//!
//! The test starts a Redis of its own (it pauses it with SIGSTOP, which a shared one must not
//! suffer), so it needs `redis-server` on the PATH.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![cfg(all(unix, feature = "redis"))]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_policy::PolicyError;
use sluice_policy::budget::{Consumption, Limit, Period, Scope};
use sluice_policy::calendar::UnixMs;
use sluice_policy::counters::{Counters, RedisCounters, RedisSettings};

/// A `redis-server` of the test's own, killed when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    async fn start() -> Option<OwnRedis> {
        // A free port: bind, read it, let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = OwnRedis { child, port };
        // Up once it accepts connections (a bounded wait).
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> UnixMs {
    UnixMs(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn reservations_given_up_on_during_a_stall_are_not_charged_when_redis_resumes() {
    let Some(redis) = OwnRedis::start().await else {
        eprintln!("skipped: no redis-server on the PATH");
        return;
    };
    let timeout = Duration::from_millis(400);
    let settings = RedisSettings {
        response_timeout: timeout,
        key_prefix: "stall:".into(),
        ..RedisSettings::new(format!("redis://127.0.0.1:{}", redis.port))
    };
    let counters = RedisCounters::connect(&settings).await.unwrap();
    let limit = Limit::requests(Scope::Key("stalled".into()), 100, Period::Day).unwrap();
    let reserve = || async {
        let charge = [limit.charge(1, now()).unwrap()];
        counters.reserve(&charge).await
    };

    // Served before the stall.
    let hold = reserve().await.unwrap();
    counters.settle(hold, Consumption::default()).await.unwrap();

    redis.signal("-STOP");
    for _ in 0..3 {
        let started = Instant::now();
        let refused = reserve().await;
        let took = started.elapsed();
        assert!(
            matches!(refused, Err(PolicyError::CounterTimeout { .. })),
            "{refused:?}"
        );
        // One timeout, not one per retry: well under two.
        assert!(took < timeout * 3 / 2, "a refusal took {took:?}");
    }
    redis.signal("-CONT");

    // Served after it: the first reservation to succeed sees only the two served requests (the
    // three refused ones ran late and were not applied).
    let mut after = None;
    for _ in 0..50 {
        match reserve().await {
            Ok(hold) => {
                after = Some(hold);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let hold = after.expect("Redis serves again once resumed");
    assert_eq!(hold.quotas()[0].used, 2, "{:?}", hold.quotas());
    counters.settle(hold, Consumption::default()).await.unwrap();
    assert_eq!(counters.usage(&limit, now()).await.unwrap(), 2);
}
