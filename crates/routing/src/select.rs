//! Ordering a route's pool for one request, per [`Strategy`]. Pure apart from reading each
//! deployment's live latency and load; randomness comes in as an argument.

use rand::Rng;

use crate::health::DeploymentHealth;
use crate::policy::Strategy;

/// Share of requests a least-latency route sends in random order, so a deployment that was
/// slow once gets measured again instead of being starved forever.
const EXPLORE_SHARE: f64 = 0.05;

/// A pool member as selection sees it.
pub(crate) trait Ranked {
    fn weight(&self) -> u32;
    fn health(&self) -> &DeploymentHealth;
}

/// The pool's indices in the order this request should try them.
pub(crate) fn order<M: Ranked>(
    pool: &[M],
    strategy: Strategy,
    stream: bool,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..pool.len()).collect();
    if pool.len() < 2 {
        return indices;
    }
    match strategy {
        Strategy::Ordered => {}
        Strategy::Weighted => weighted_shuffle(pool, &mut indices, rng),
        Strategy::LeastLatency => {
            if rng.random_bool(EXPLORE_SHARE) {
                shuffle(&mut indices, rng);
            } else {
                // Unmeasured deployments first (so each gets measured), then the fastest.
                indices.sort_by(|&a, &b| {
                    let la = pool[a].health().expected_latency_us(stream);
                    let lb = pool[b].health().expected_latency_us(stream);
                    match (la, lb) {
                        (None, None) => a.cmp(&b),
                        (None, Some(_)) => std::cmp::Ordering::Less,
                        (Some(_), None) => std::cmp::Ordering::Greater,
                        (Some(x), Some(y)) => x.total_cmp(&y),
                    }
                });
            }
        }
        Strategy::PowerOfTwo => {
            let first = rng.random_range(0..pool.len());
            let mut second = rng.random_range(0..pool.len() - 1);
            if second >= first {
                second += 1;
            }
            let cost = |i: usize| {
                let health = pool[i].health();
                // Unmeasured counts as 1 µs: cheap, so it gets tried and measured.
                health.expected_latency_us(stream).unwrap_or(1.0) * (health.in_flight() + 1) as f64
            };
            let (winner, loser) = if cost(second) < cost(first) {
                (second, first)
            } else {
                (first, second)
            };
            let mut rest: Vec<usize> = indices
                .into_iter()
                .filter(|&i| i != winner && i != loser)
                .collect();
            rest.sort_by(|&a, &b| cost(a).total_cmp(&cost(b)));
            indices = [winner, loser].into_iter().chain(rest).collect();
        }
    }
    indices
}

fn shuffle(indices: &mut [usize], rng: &mut impl Rng) {
    for i in (1..indices.len()).rev() {
        let j = rng.random_range(0..=i);
        indices.swap(i, j);
    }
}

/// Weighted sampling without replacement: each position is drawn in proportion to the
/// weights of the members not drawn yet. A zero weight only serves as a last resort.
fn weighted_shuffle<M: Ranked>(pool: &[M], indices: &mut Vec<usize>, rng: &mut impl Rng) {
    let mut remaining = std::mem::take(indices);
    while !remaining.is_empty() {
        let total: u64 = remaining.iter().map(|&i| u64::from(pool[i].weight())).sum();
        let pick = if total == 0 {
            0
        } else {
            let mut target = rng.random_range(0..total);
            remaining
                .iter()
                .position(|&i| {
                    let w = u64::from(pool[i].weight());
                    if target < w {
                        true
                    } else {
                        target -= w;
                        false
                    }
                })
                .unwrap_or(0)
        };
        indices.push(remaining.remove(pick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerPolicy, Outcome};
    use crate::health::CapacityPolicy;
    use rand::SeedableRng;
    use std::sync::Arc;
    use std::time::Duration;

    struct Member(Arc<DeploymentHealth>, u32);

    impl Ranked for Member {
        fn weight(&self) -> u32 {
            self.1
        }
        fn health(&self) -> &DeploymentHealth {
            &self.0
        }
    }

    fn member(name: &str, weight: u32) -> Member {
        let deployment = Arc::new(sluice_providers::Deployment {
            name: name.into(),
            provider: "p".into(),
            kind: sluice_providers::ProviderKind::OpenAiCompatible,
            base_url: "http://127.0.0.1:1/v1".parse().unwrap(),
            model: "m".into(),
            api_key: None,
            default_max_tokens: 16,
            structured_output: Default::default(),
            http_version: Default::default(),
        });
        let breaker = BreakerPolicy {
            enabled: false,
            consecutive_failures: 0,
            failure_ratio: 1.0,
            min_requests: 1,
            window: Duration::from_secs(1),
            open_for: Duration::from_secs(1),
            half_open_probes: 1,
            min_callers: 1,
        };
        let capacity = CapacityPolicy {
            max_concurrency: None,
            max_queue: 0,
            queue_timeout: Duration::from_secs(1),
        };
        Member(
            Arc::new(DeploymentHealth::new(deployment, breaker, capacity)),
            weight,
        )
    }

    async fn measure(member: &Member, ms: u64) {
        let mut slot = member.0.acquire().await.unwrap();
        let d = Duration::from_millis(ms);
        slot.record(Outcome::Success, Some(d), Some(d));
    }

    fn firsts(pool: &[Member], strategy: Strategy, n: usize) -> Vec<usize> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut counts = vec![0; pool.len()];
        for _ in 0..n {
            let order = order(pool, strategy, false, &mut rng);
            let mut seen = order.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..pool.len()).collect::<Vec<_>>(), "a permutation");
            counts[order[0]] += 1;
        }
        counts
    }

    #[test]
    fn ordered_keeps_the_configured_order() {
        let pool = [member("a", 1), member("b", 1), member("c", 1)];
        assert_eq!(firsts(&pool, Strategy::Ordered, 100), [100, 0, 0]);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let pool = [member("a", 3), member("b", 1), member("c", 0)];
        let counts = firsts(&pool, Strategy::Weighted, 4000);
        assert_eq!(
            counts[2], 0,
            "weight 0 is never first while others have weight"
        );
        // 3:1 within a few percent.
        let share = counts[0] as f64 / 4000.0;
        assert!((0.72..0.78).contains(&share), "share of a: {share}");
    }

    #[tokio::test]
    async fn least_latency_prefers_the_fastest_and_measures_the_unmeasured_first() {
        let pool = [member("slow", 1), member("fast", 1), member("new", 1)];
        measure(&pool[0], 300).await;
        measure(&pool[1], 20).await;
        let counts = firsts(&pool, Strategy::LeastLatency, 1000);
        assert!(counts[2] > 950, "unmeasured first: {counts:?}");
        measure(&pool[2], 100).await;
        let counts = firsts(&pool, Strategy::LeastLatency, 1000);
        assert!(counts[1] > 950, "fastest first: {counts:?}");
        assert!(
            counts[0] > 0,
            "the slow one is still explored now and then: {counts:?}"
        );
    }

    #[tokio::test]
    async fn power_of_two_picks_the_less_loaded_of_two() {
        let pool = [member("a", 1), member("b", 1)];
        measure(&pool[0], 10).await;
        measure(&pool[1], 10).await;
        // `a` has three requests in flight, `b` none: every pair is {a, b}, so b wins.
        let _busy: Vec<_> =
            futures_util::future::join_all((0..3).map(|_| pool[0].0.acquire())).await;
        assert_eq!(firsts(&pool, Strategy::PowerOfTwo, 200), [0, 200]);
    }
}
