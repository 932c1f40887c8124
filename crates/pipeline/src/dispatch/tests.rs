//! The attempt loop on a paused clock (paused once the record store is open): a fake operation answers or fails per deployment after
//! a scripted delay, and the tests read the record the loop wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_providers::{Deployment, ProviderError, Timeouts, Upstream};
use sluice_routing::{
    Condition, Conditions, HedgePolicy, RoutePolicy, RouteSpec, RouteTimeouts, Router,
};
use sluice_types::ErrorKind;
use sluice_types::record::{AttemptOutcome, Next, Role};
use tokio::time::Instant;

use super::*;
use crate::admission::Demand;
use crate::test_support::{exchange, health};

/// One attempt's fate: a wait, then an answer or an upstream status.
type Step = (Duration, Result<&'static str, u16>);

/// What each deployment does with its attempts, in order.
#[derive(Clone)]
struct Script(Arc<Mutex<HashMap<String, Vec<Step>>>>);

struct Scripted {
    script: Script,
    stream: bool,
}

impl Operation for Scripted {
    type Answer = &'static str;
    fn model(&self) -> &str {
        "chat"
    }
    fn stream(&self) -> bool {
        self.stream
    }
    fn reserves(&self) -> bool {
        false
    }
    fn demand(&self) -> Demand {
        Demand {
            input_tokens: 0,
            max_tokens: None,
            generates: false,
        }
    }
    fn prompt_tokens(&self) -> u32 {
        7
    }
    fn hedges(&self) -> bool {
        true
    }
    async fn send(
        &self,
        _upstream: Upstream,
        deployment: &Deployment,
        _first: FirstAnswer,
    ) -> Result<&'static str, ProviderError> {
        let step = {
            let mut script = self.script.0.lock().unwrap();
            let steps = script.get_mut(&deployment.name).unwrap();
            steps.remove(0)
        };
        tokio::time::sleep(step.0).await;
        step.1.map_err(|status| ProviderError::Status {
            provider: "p".into(),
            status,
            kind: match status {
                503 => ErrorKind::UpstreamOverloaded,
                400 => ErrorKind::UpstreamRejected,
                _ => ErrorKind::UpstreamUnavailable,
            },
            message: "scripted".into(),
            retry_after: None,
            cause: None,
            quota_exhausted: false,
        })
    }
}

fn timeouts() -> RouteTimeouts {
    RouteTimeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        total: Duration::from_secs(60),
    }
}

/// A route over `a` then `b`, with `policy` changed by `tune`.
fn plan(tune: impl FnOnce(&mut RoutePolicy)) -> RoutePlan {
    let (a, b) = (health("a"), health("b"));
    let mut policy = RoutePolicy::ordered(timeouts());
    policy.fallback_on = Conditions::new([Condition::Overloaded, Condition::ServerError]);
    tune(&mut policy);
    let spec = RouteSpec {
        alias: "chat".into(),
        pool: vec![(a.clone(), 1), (b.clone(), 1)],
        fallbacks: Vec::new(),
        policy,
    };
    Router::new([spec], vec![a, b]).plan("chat", false).unwrap()
}

fn script(steps: &[(&str, Duration, Result<&'static str, u16>)]) -> Script {
    let mut map: HashMap<String, Vec<_>> = HashMap::new();
    for (name, delay, result) in steps {
        map.entry((*name).to_owned())
            .or_default()
            .push((*delay, *result));
    }
    Script(Arc::new(Mutex::new(map)))
}

async fn run(
    plan: &RoutePlan,
    script: Script,
    exchange: &mut Exchange,
) -> Result<Won<&'static str>, PipelineError> {
    let upstream = Upstream::new(Timeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        total: Duration::from_secs(60),
    })
    .unwrap();
    let op = Scripted {
        script,
        stream: true,
    };
    Dispatch {
        upstream: &upstream,
        caller: sluice_routing::CallerTag::of("key_test"),
        plan,
        req: &op,
        timeouts: timeouts(),
        deadline: Instant::now() + Duration::from_secs(10),
        trace_id: "0".repeat(32),
        started: std::time::Instant::now(),
        structured: None,
    }
    .run(exchange)
    .await
}

fn steps(exchange: &Exchange) -> Vec<(String, AttemptOutcome, Option<Next>, bool)> {
    exchange
        .record()
        .attempts
        .iter()
        .map(|a| (a.deployment.clone(), a.outcome, a.next, a.hedge))
        .collect()
}

#[tokio::test]
async fn an_overloaded_deployment_falls_back_to_the_next() {
    let plan = plan(|_| {});
    let (mut exchange, _records) = exchange().await;
    // Paused only now: the store under the exchange opens on real time.
    tokio::time::pause();
    let script = script(&[
        ("a", Duration::from_millis(20), Err(503)),
        ("b", Duration::from_millis(30), Ok("from b")),
    ]);
    let won = run(&plan, script, &mut exchange).await.unwrap();
    assert_eq!((won.answer, won.candidate.health.name()), ("from b", "b"));
    assert_eq!(won.candidate.role, Role::Pool);
    assert_eq!(
        steps(&exchange),
        vec![
            (
                "a".into(),
                AttemptOutcome::Failed(ErrorKind::UpstreamOverloaded),
                Some(Next::Fallback),
                false
            ),
            ("b".into(), AttemptOutcome::Ok, None, false),
        ]
    );
}

#[tokio::test]
async fn a_failure_no_other_attempt_can_fix_stops_at_once() {
    let plan = plan(|_| {});
    let (mut exchange, _records) = exchange().await;
    // Paused only now: the store under the exchange opens on real time.
    tokio::time::pause();
    let script = script(&[("a", Duration::from_millis(5), Err(400))]);
    let error = run(&plan, script, &mut exchange).await.err().unwrap();
    assert_eq!(error.kind(), ErrorKind::UpstreamRejected);
    assert_eq!(
        steps(&exchange),
        vec![(
            "a".into(),
            AttemptOutcome::Failed(ErrorKind::UpstreamRejected),
            Some(Next::NotRetryable),
            false
        )]
    );
}

#[tokio::test]
async fn a_slow_first_answer_is_hedged_and_the_loser_cancelled_and_recorded() {
    let plan = plan(|policy| {
        policy.hedge = Some(HedgePolicy {
            after: Duration::from_secs(1),
            percentile: None,
        });
    });
    let (mut exchange, _records) = exchange().await;
    // Paused only now: the store under the exchange opens on real time.
    tokio::time::pause();
    let script = script(&[
        ("a", Duration::from_secs(5), Ok("from a")),
        ("b", Duration::from_millis(100), Ok("from b")),
    ]);
    let started = Instant::now();
    let won = run(&plan, script, &mut exchange).await.unwrap();
    // The hedge went out at 1 s and answered 100 ms later: the slow primary was not awaited.
    assert_eq!(won.answer, "from b");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1100) && elapsed < Duration::from_millis(1200),
        "{elapsed:?}"
    );
    let steps = steps(&exchange);
    assert_eq!(
        steps,
        vec![
            ("b".into(), AttemptOutcome::Ok, None, true),
            (
                "a".into(),
                AttemptOutcome::Cancelled,
                Some(Next::LostHedge),
                false
            ),
        ]
    );
    // The cancelled attempt's prompt may be billed: it is on the record.
    assert_eq!(exchange.record().attempts[1].input_tokens, Some(7));
}

#[tokio::test]
async fn retries_of_one_deployment_back_off_and_stop_at_the_deadline() {
    let plan = plan(|policy| {
        policy.retry.max_attempts = Some(100);
        policy.retry.backoff_initial = Duration::from_secs(4);
        policy.retry.backoff_max = Duration::from_secs(4);
    });
    let (mut exchange, _records) = exchange().await;
    // Paused only now: the store under the exchange opens on real time.
    tokio::time::pause();
    // Both fail, over and over; with jittered backoff of up to 4 s, the 10 s deadline ends the
    // request long before its 100 attempts.
    let failing: Vec<_> = (0..50)
        .flat_map(|_| {
            [
                ("a", Duration::from_millis(10), Err(500)),
                ("b", Duration::from_millis(10), Err(500)),
            ]
        })
        .collect();
    let started = Instant::now();
    let error = run(&plan, script(&failing), &mut exchange)
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::UpstreamUnavailable);
    assert!(
        started.elapsed() <= Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let steps = steps(&exchange);
    // Every attempt but the last says where the request went next; the last, why it stopped.
    let (last, before) = steps.split_last().unwrap();
    assert_eq!(last.2, Some(Next::Deadline), "{steps:?}");
    assert!(
        before.iter().all(|s| s.2 == Some(Next::Fallback)),
        "{steps:?}"
    );
    assert!(steps.len() < 100, "{steps:?}");
}
