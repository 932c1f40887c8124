use std::sync::Arc;
use std::time::Duration;

use sluice_providers::{Deployment, ProviderKind};

use super::*;

fn health(name: &str, breaker_enabled: bool) -> Arc<DeploymentHealth> {
    health_of_model(name, "m", breaker_enabled)
}

fn health_of_model(name: &str, model: &str, breaker_enabled: bool) -> Arc<DeploymentHealth> {
    let deployment = Arc::new(Deployment {
        name: name.into(),
        provider: "p".into(),
        kind: ProviderKind::OpenAiCompatible,
        base_url: "http://127.0.0.1:1/v1".parse().unwrap(),
        model: model.into(),
        api_key: None,
        default_max_tokens: 16,
        structured_output: Default::default(),
        http_version: Default::default(),
    });
    let breaker = BreakerPolicy {
        enabled: breaker_enabled,
        consecutive_failures: 1,
        failure_ratio: 1.0,
        min_requests: 100,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(7),
        half_open_probes: 1,
        min_callers: 1,
    };
    let capacity = CapacityPolicy {
        max_concurrency: None,
        max_queue: 0,
        queue_timeout: Duration::from_secs(1),
    };
    Arc::new(DeploymentHealth::new(deployment, breaker, capacity))
}

fn timeouts() -> RouteTimeouts {
    RouteTimeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        total: Duration::from_secs(60),
    }
}

fn router(pool: &[&Arc<DeploymentHealth>], fallbacks: &[&Arc<DeploymentHealth>]) -> Router {
    let spec = RouteSpec {
        alias: "chat".into(),
        pool: pool.iter().map(|h| (Arc::clone(h), 1)).collect(),
        fallbacks: fallbacks.iter().map(|h| Arc::clone(h)).collect(),
        policy: RoutePolicy::ordered(timeouts()),
    };
    let all = pool
        .iter()
        .chain(fallbacks)
        .map(|h| Arc::clone(h))
        .collect();
    Router::new([spec], all)
}

fn names(plan: &RoutePlan) -> Vec<(&str, Role)> {
    plan.candidates
        .iter()
        .map(|c| (c.health.name(), c.role))
        .collect()
}

async fn fail(health: &Arc<DeploymentHealth>) {
    let mut slot = health.acquire().await.unwrap();
    slot.record(Outcome::Failure, None, None);
}

#[tokio::test(start_paused = true)]
async fn plans_the_pool_then_the_fallbacks() {
    let (a, b, c) = (health("a", true), health("b", true), health("c", true));
    let router = router(&[&a, &b], &[&c]);
    let plan = router.plan("chat", false).unwrap();
    assert_eq!(&**plan.alias(), "chat");
    assert_eq!(
        names(&plan),
        [("a", Role::Pool), ("b", Role::Pool), ("c", Role::Fallback)]
    );
    assert!(plan.skipped.is_empty());
    assert!(
        matches!(router.plan("slow", false), Err(RoutingError::UnknownAlias(m)) if m == "slow")
    );
    assert_eq!(router.aliases().collect::<Vec<_>>(), ["chat"]);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_skipped_until_it_may_probe() {
    let (a, b) = (health("a", true), health("b", true));
    let router = router(&[&a], &[&b]);
    fail(&a).await;
    let plan = router.plan("chat", false).unwrap();
    assert_eq!(names(&plan), [("b", Role::Fallback)]);
    assert_eq!(plan.skipped.len(), 1);
    assert_eq!(plan.skipped[0].0.name(), "a");
    assert!(matches!(plan.skipped[0].1, Unavailable::CircuitOpen { .. }));
    tokio::time::advance(Duration::from_secs(7)).await;
    let plan = router.plan("chat", false).unwrap();
    assert_eq!(names(&plan), [("a", Role::Pool), ("b", Role::Fallback)]);
}

#[tokio::test(start_paused = true)]
async fn a_route_with_every_circuit_open_refuses_with_retry_after() {
    let (a, b) = (health("a", true), health("b", true));
    let router = router(&[&a], &[&b]);
    fail(&a).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    fail(&b).await;
    let plan = router.plan("chat", true).unwrap();
    assert!(plan.candidates.is_empty());
    let error = plan.unavailable().unwrap();
    assert_eq!(error.kind(), ErrorKind::RouteUnavailable);
    // a reopens in 5 s, b in 7 s: come back when the first may probe.
    assert_eq!(error.retry_after_secs(), Some(5));
    assert_eq!(
        error.to_string(),
        "no deployment of `chat` can take requests now (a: circuit_open, b: circuit_open); retry in 5s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cooled_down_deployment_is_skipped_for_its_retry_after() {
    let (a, b) = (health("a", false), health("b", false));
    let router = router(&[&a, &b], &[]);
    a.cool_down(Instant::now() + Duration::from_secs(3));
    let plan = router.plan("chat", false).unwrap();
    assert_eq!(names(&plan), [("b", Role::Pool)]);
    assert!(matches!(plan.skipped[0].1, Unavailable::CoolingDown { .. }));
    // Both waiting out a Retry-After: the route is rate limited, not down.
    b.cool_down(Instant::now() + Duration::from_secs(2));
    let error = router.plan("chat", false).unwrap().unavailable().unwrap();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(error.retry_after_secs(), Some(2));
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(router.plan("chat", false).unwrap().candidates.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn each_deployment_of_a_route_has_its_own_retry_budget() {
    let (a, b) = (health("a", true), health("b", true));
    let router = router(&[&a], &[&b]);
    let route = router.route("chat").unwrap();
    // min_retries (10) always, plus 20% of the requests `a` received.
    for _ in 0..50 {
        route.count_request("a");
    }
    let allowed = (0..100).filter(|_| route.spend_retry("a")).count();
    assert_eq!(allowed, 20);
    assert!(route.spend_retry("b"), "b's budget is untouched");
    assert!(!route.spend_retry("unknown"));
    let budgets = route.budgets();
    assert_eq!(budgets[0].deployment, "a");
    assert_eq!(
        (
            budgets[0].budget.requests,
            budgets[0].budget.retries,
            budgets[0].budget.available
        ),
        (50, 20, 0)
    );
    assert_eq!(budgets[1].role, Role::Fallback);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_open_circuit_of_an_unchanged_deployment() {
    let (a, b) = (health("a", true), health("b", true));
    let before = router(&[&a], &[&b]);
    fail(&a).await;
    fail(&b).await;
    assert_eq!(a.breaker_state(), BreakerState::Open);

    // The new configuration: `a` as it was, `b` pointed at another model, `c` new.
    let kept = before.keep_unchanged(vec![
        health("a", true),
        health_of_model("b", "m2", true),
        health("c", true),
    ]);
    assert!(Arc::ptr_eq(&kept[0], &a), "unchanged: the same health");
    assert!(!Arc::ptr_eq(&kept[1], &b), "changed: a fresh health");
    assert_eq!(kept[1].breaker_state(), BreakerState::Closed);
    assert_eq!(kept[2].name(), "c");
    let after = router(&[&kept[0], &kept[2]], &[&kept[1]]);
    let plan = after.plan("chat", false).unwrap();
    assert_eq!(names(&plan), [("c", Role::Pool), ("b", Role::Fallback)]);
    assert_eq!(plan.skipped[0].0.name(), "a");
    assert!(matches!(plan.skipped[0].1, Unavailable::CircuitOpen { .. }));

    // A changed breaker setting is a changed deployment too.
    let mut other_breaker = health("a", false);
    assert!(!a.same_settings(&other_breaker));
    other_breaker = before.keep_unchanged(vec![other_breaker]).remove(0);
    assert_eq!(other_breaker.breaker_state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_retry_budgets_of_a_route_it_keeps() {
    let (a, b) = (health("a", true), health("b", true));
    let before = router(&[&a], &[&b]);
    let route = before.route("chat").unwrap();
    // `a` has spent its 10 minimum retries.
    assert_eq!((0..20).filter(|_| route.spend_retry("a")).count(), 10);

    let after = router(&[&a], &[&b]).keep_retry_budgets(&before);
    let route = after.route("chat").unwrap();
    assert!(!route.spend_retry("a"), "no fresh retries for `a`");
    assert!(route.spend_retry("b"));
    // Without the carry-over, a new router's budget would have allowed them.
    assert!(router(&[&a], &[&b]).route("chat").unwrap().spend_retry("a"));
}
