//! [`DeploymentHealth`]: what the gateway knows about one deployment right now — its circuit
//! breaker, a cool-down asked for by `Retry-After`, its latency (EWMA of time to first token
//! and of total time, and recent samples for percentiles), and its concurrency limit with a
//! bounded queue. Shared by every route that uses the deployment; kept across requests,
//! rebuilt on restart.
//!
//! No shared fate: every slot is taken for a [`CallerTag`]. The breaker counts failures with
//! their caller (see `breaker.rs`), and a provider's `Retry-After` on a 429 pauses the whole
//! deployment only when the provider says its quota is spent for everyone
//! ([`RateLimitEvidence::ProviderQuota`]) or when 429s came from `min_callers` distinct callers
//! within the breaker's window; otherwise only the caller that got it backs off
//! ([`DeploymentHealth::cool_down_after`]).
//!
//! Locks are `std` mutexes held for a few arithmetic operations, never across `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sluice_providers::Deployment;
use sluice_types::record::{AttemptOutcome, Next};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::breaker::{
    Admission, Breaker, BreakerPolicy, BreakerState, CallerEvidence, CallerTag, Outcome,
};

/// Weight of a new sample in the latency EWMAs (the last ~10 samples dominate).
const EWMA_ALPHA: f64 = 0.2;

/// Recent time-to-first-token samples kept for percentiles.
const TTFT_SAMPLES: usize = 256;

/// Samples needed before a percentile is trusted (below it, hedging uses its fixed delay).
pub const MIN_PERCENTILE_SAMPLES: usize = 20;

/// How far back the recent-traffic view of `/health` and `sluice status` looks.
pub const RECENT_WINDOW: Duration = Duration::from_secs(300);

/// Attempts kept for the recent view at most (a bound, not a sample: at more than this per
/// window, the view covers the latest ones only, and says how far back it reaches).
const RECENT_CAPACITY: usize = 4096;

/// Per-caller cool-downs kept at most; past it, expired ones are dropped first, then the
/// earliest to end (a bound on memory whatever the number of keys).
const CALLER_COOLDOWNS: usize = 1024;

/// What a provider's 429 says about who is rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitEvidence {
    /// The provider said the deployment's quota is spent (`x-ratelimit-remaining-requests: 0`
    /// or its tokens or Anthropic equivalents): everyone waits.
    ProviderQuota,
    /// Nothing says it is more than this request's (its size, its caller's pace).
    ThisRequest,
}

/// A deployment's concurrency limit: at most `max_concurrency` requests in flight, at most
/// `max_queue` waiting for a slot, each for at most `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityPolicy {
    pub max_concurrency: Option<u32>,
    pub max_queue: u32,
    pub queue_timeout: Duration,
}

/// Why a deployment could not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    CircuitOpen { retry_in: Duration },
    CoolingDown { retry_in: Duration },
    QueueFull,
    QueueTimeout,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::CircuitOpen { .. } => "circuit_open",
            Unavailable::CoolingDown { .. } => "cooling_down",
            Unavailable::QueueFull => "queue_full",
            Unavailable::QueueTimeout => "queue_timeout",
        }
    }

    /// Why the record says the deployment was not sent the request.
    pub fn next(self) -> Next {
        match self {
            Unavailable::CircuitOpen { .. } => Next::CircuitOpen,
            Unavailable::CoolingDown { .. } => Next::CoolingDown,
            Unavailable::QueueFull => Next::QueueFull,
            Unavailable::QueueTimeout => Next::QueueTimeout,
        }
    }

    /// When the caller may try again.
    pub fn retry_in(self) -> Duration {
        match self {
            Unavailable::CircuitOpen { retry_in } | Unavailable::CoolingDown { retry_in } => {
                retry_in
            }
            Unavailable::QueueFull | Unavailable::QueueTimeout => Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
pub struct DeploymentHealth {
    pub deployment: Arc<Deployment>,
    breaker: Mutex<Breaker>,
    latency: Mutex<Latency>,
    cooldown_until: Mutex<Option<Instant>>,
    /// Cool-downs of single callers: a 429 that was theirs alone.
    caller_cooldowns: Mutex<std::collections::HashMap<CallerTag, Instant>>,
    /// Who got 429s lately, to tell one caller's rate limit from the deployment's.
    rate_limited: Mutex<CallerEvidence>,
    breaker_policy: BreakerPolicy,
    capacity: CapacityPolicy,
    slots: Option<Arc<Semaphore>>,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    sent: AtomicU64,
    recent: Mutex<VecDeque<Observed>>,
}

/// One finished attempt, for the recent view.
#[derive(Debug, Clone)]
struct Observed {
    at: Instant,
    /// `ok` or the error code (static: every attempt stores one, so no allocation each).
    outcome: AttemptOutcome,
    latency_us: u64,
    ttft_us: Option<u64>,
}

/// What a deployment did over the last [`RECENT_WINDOW`]: traffic, errors by kind, the share of
/// answers that could not be parsed, latency and time to first token percentiles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecentStats {
    /// Seconds the figures cover (less than the window after a start, or under heavy load).
    pub window_s: u64,
    pub attempts: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Error code -> count.
    pub errors_by_kind: std::collections::BTreeMap<String, u64>,
    /// Share of attempts whose answer could not be decoded (`upstream_malformed_response`).
    pub malformed_rate: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct Latency {
    ttft_ewma_us: Option<f64>,
    total_ewma_us: Option<f64>,
    ttft_samples: VecDeque<u64>,
}

fn ewma(current: Option<f64>, sample: f64) -> Option<f64> {
    Some(current.map_or(sample, |c| c + EWMA_ALPHA * (sample - c)))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A slot on a deployment, held for as long as the attempt runs (a stream: to its end).
/// Its outcome is given once with [`Slot::record`]; a slot dropped without one (the attempt
/// was cancelled: a lost hedge, a client that left) counts as neutral, so a half-open probe is
/// never lost. Dropping it frees the concurrency slot.
#[derive(Debug)]
pub struct Slot {
    health: Arc<DeploymentHealth>,
    _permit: Option<OwnedSemaphorePermit>,
    admission: Admission,
    caller: CallerTag,
    recorded: bool,
    /// Time spent waiting in the deployment's queue.
    pub queued_for: Duration,
}

impl Slot {
    pub fn health(&self) -> &Arc<DeploymentHealth> {
        &self.health
    }

    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// Who the slot was taken for.
    pub fn caller(&self) -> CallerTag {
        self.caller
    }

    /// The attempt's stream, already started, failed later: the breaker counts it as this
    /// caller's failure.
    pub fn record_late_failure(&self) {
        self.health.record_late_failure_from(self.caller);
    }

    /// How the attempt ended, for the breaker and the latency estimates (successes only).
    /// `ttft` is the time to the first event (streams) or to the whole answer; `total` the
    /// time to the whole answer. Only the first call counts.
    pub fn record(&mut self, outcome: Outcome, ttft: Option<Duration>, total: Option<Duration>) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.health
            .record(self.admission, outcome, self.caller, ttft, total);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.record(Outcome::Neutral, None, None);
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The state of a deployment as `/health` and `sluice status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentStatus {
    pub deployment: String,
    pub provider: String,
    pub model: String,
    pub breaker: BreakerState,
    /// Milliseconds until an open breaker lets a probe through.
    pub breaker_retry_in_ms: Option<u64>,
    pub breaker_opened: u64,
    /// Failures and requests in the breaker's current window.
    pub window_failures: u64,
    pub window_requests: u64,
    pub cooling_down_ms: Option<u64>,
    pub in_flight: usize,
    pub queued: usize,
    pub max_concurrency: Option<u32>,
    pub attempts: u64,
    pub ttft_ewma_ms: Option<f64>,
    pub latency_ewma_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    /// The last five minutes of attempts.
    pub recent: RecentStats,
}

impl DeploymentHealth {
    pub fn new(
        deployment: Arc<Deployment>,
        breaker: BreakerPolicy,
        capacity: CapacityPolicy,
    ) -> DeploymentHealth {
        let now = Instant::now();
        DeploymentHealth {
            deployment,
            breaker: Mutex::new(Breaker::new(breaker, now)),
            latency: Mutex::default(),
            cooldown_until: Mutex::new(None),
            caller_cooldowns: Mutex::default(),
            rate_limited: Mutex::default(),
            breaker_policy: breaker,
            capacity,
            slots: capacity
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            recent: Mutex::default(),
        }
    }

    /// Whether `other` is the same deployment configured the same way: the same upstream
    /// ([`Deployment::same_upstream`]), breaker and capacity. Then what this one learned
    /// (breaker, latency, cool-downs, load) holds for it too.
    pub fn same_settings(&self, other: &DeploymentHealth) -> bool {
        self.deployment.same_upstream(&other.deployment)
            && self.breaker_policy == other.breaker_policy
            && self.capacity == other.capacity
    }

    /// Counts a finished attempt (sent upstream) in the recent view.
    pub fn observe(&self, outcome: AttemptOutcome, latency: Duration, ttft: Option<Duration>) {
        let now = Instant::now();
        let mut recent = lock(&self.recent);
        while recent.len() >= RECENT_CAPACITY
            || recent
                .front()
                .is_some_and(|o| now.saturating_duration_since(o.at) > RECENT_WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back(Observed {
            at: now,
            outcome,
            latency_us: latency.as_micros() as u64,
            ttft_us: ttft.map(|t| t.as_micros() as u64),
        });
    }

    /// The last [`RECENT_WINDOW`] of attempts.
    pub fn recent(&self) -> RecentStats {
        let now = Instant::now();
        let recent = lock(&self.recent);
        let live: Vec<&Observed> = recent
            .iter()
            .filter(|o| now.saturating_duration_since(o.at) <= RECENT_WINDOW)
            .collect();
        let Some(oldest) = live.first() else {
            return RecentStats::default();
        };
        let mut stats = RecentStats {
            window_s: now.saturating_duration_since(oldest.at).as_secs().max(1),
            attempts: live.len() as u64,
            ..RecentStats::default()
        };
        let mut latencies = Vec::with_capacity(live.len());
        let mut ttfts = Vec::new();
        for o in &live {
            if o.outcome == AttemptOutcome::Ok {
                latencies.push(o.latency_us);
                ttfts.extend(o.ttft_us);
            } else {
                stats.errors += 1;
                *stats
                    .errors_by_kind
                    .entry(o.outcome.as_str().to_owned())
                    .or_insert(0) += 1;
            }
        }
        let share = |n: u64| n as f64 / stats.attempts as f64;
        stats.error_rate = share(stats.errors);
        stats.malformed_rate = share(
            stats
                .errors_by_kind
                .get("upstream_malformed_response")
                .copied()
                .unwrap_or(0),
        );
        latencies.sort_unstable();
        ttfts.sort_unstable();
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
        stats.latency_p50_ms = ms(nearest_rank(&latencies, 50.0));
        stats.latency_p99_ms = ms(nearest_rank(&latencies, 99.0));
        stats.ttft_p50_ms = ms(nearest_rank(&ttfts, 50.0));
        stats.ttft_p99_ms = ms(nearest_rank(&ttfts, 99.0));
        stats
    }

    pub fn name(&self) -> &str {
        &self.deployment.name
    }

    /// Whether the deployment would take a request now (breaker and cool-down; the queue is
    /// only known when a slot is asked for). Takes nothing.
    pub fn available(&self, now: Instant) -> Result<(), Unavailable> {
        if let Some(until) = *lock(&self.cooldown_until)
            && now < until
        {
            return Err(Unavailable::CoolingDown {
                retry_in: until - now,
            });
        }
        let breaker = lock(&self.breaker);
        if breaker.would_admit(now) {
            Ok(())
        } else {
            Err(Unavailable::CircuitOpen {
                retry_in: breaker
                    .open_until(now)
                    .map_or(Duration::from_secs(1), |until| until - now),
            })
        }
    }

    /// [`DeploymentHealth::available`] for one caller: also not while that caller waits out a
    /// rate limit of its own.
    pub fn available_for(&self, caller: CallerTag, now: Instant) -> Result<(), Unavailable> {
        self.available(now)?;
        if caller == CallerTag::UNATTRIBUTED {
            return Ok(());
        }
        match lock(&self.caller_cooldowns).get(&caller) {
            Some(until) if now < *until => Err(Unavailable::CoolingDown {
                retry_in: *until - now,
            }),
            _ => Ok(()),
        }
    }

    /// A slot for a caller not told apart ([`CallerTag::UNATTRIBUTED`]).
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, Unavailable> {
        self.acquire_for(CallerTag::UNATTRIBUTED).await
    }

    /// Asks for a slot for `caller`: through the breaker and the cool-downs, then the
    /// concurrency limit, waiting in the bounded queue when it is full. Cancel-safe: dropping
    /// the future leaves the queue.
    pub async fn acquire_for(self: &Arc<Self>, caller: CallerTag) -> Result<Slot, Unavailable> {
        self.available_for(caller, Instant::now())?;
        let started = Instant::now();
        let permit = match &self.slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => Some(self.wait_for_slot(slots).await?),
            },
        };
        let admission = lock(&self.breaker).admit(Instant::now());
        if let Admission::Refused { retry_in } = admission {
            return Err(Unavailable::CircuitOpen { retry_in });
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            health: self.clone(),
            _permit: permit,
            admission,
            caller,
            recorded: false,
            queued_for: started.elapsed(),
        })
    }

    async fn wait_for_slot(
        &self,
        slots: &Arc<Semaphore>,
    ) -> Result<OwnedSemaphorePermit, Unavailable> {
        let max_queue = self.capacity.max_queue as usize;
        let position = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = QueueGuard(&self.queued);
        if position >= max_queue {
            return Err(Unavailable::QueueFull);
        }
        match tokio::time::timeout(self.capacity.queue_timeout, slots.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a closed one means nothing can be served.
            Ok(Err(_)) => Err(Unavailable::QueueFull),
            Err(_) => Err(Unavailable::QueueTimeout),
        }
    }

    fn record(
        &self,
        admission: Admission,
        outcome: Outcome,
        caller: CallerTag,
        ttft: Option<Duration>,
        total: Option<Duration>,
    ) {
        let now = Instant::now();
        let changed = lock(&self.breaker).record_from(now, admission, outcome, caller);
        match changed {
            Some(BreakerState::Open) => {
                tracing::warn!(deployment = %self.deployment.name, "circuit opened")
            }
            Some(state) => {
                tracing::info!(deployment = %self.deployment.name, state = state.as_str(), "circuit changed state")
            }
            None => {}
        }
        if outcome != Outcome::Success {
            return;
        }
        let mut latency = lock(&self.latency);
        if let Some(ttft) = ttft {
            let us = ttft.as_micros() as u64;
            latency.ttft_ewma_us = ewma(latency.ttft_ewma_us, us as f64);
            if latency.ttft_samples.len() == TTFT_SAMPLES {
                latency.ttft_samples.pop_front();
            }
            latency.ttft_samples.push_back(us);
        }
        if let Some(total) = total {
            latency.total_ewma_us = ewma(latency.total_ewma_us, total.as_micros() as f64);
        }
    }

    /// An attempt that took at least `elapsed` without answering (it timed out, or lost a
    /// hedge and was cancelled): the latency EWMAs count it as that slow, so latency-aware
    /// strategies move away from a deployment that stalls instead of seeing only its fast
    /// answers. The percentile samples (the hedge threshold) keep real answers only.
    pub fn observe_slow(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as f64;
        let mut latency = lock(&self.latency);
        latency.ttft_ewma_us = Some(
            latency
                .ttft_ewma_us
                .map_or(us, |c| c.max(c + EWMA_ALPHA * (us - c))),
        );
        latency.total_ewma_us = Some(
            latency
                .total_ewma_us
                .map_or(us, |c| c.max(c + EWMA_ALPHA * (us - c))),
        );
    }

    /// A stream that had started failed later, its caller unknown: the breaker counts it like
    /// any failure ([`Slot::record_late_failure`] tells the caller).
    pub fn record_late_failure(&self) {
        self.record_late_failure_from(CallerTag::UNATTRIBUTED);
    }

    fn record_late_failure_from(&self, caller: CallerTag) {
        let now = Instant::now();
        let mut breaker = lock(&self.breaker);
        if breaker.record_from(now, Admission::Allowed, Outcome::Failure, caller)
            == Some(BreakerState::Open)
        {
            tracing::warn!(deployment = %self.deployment.name, "circuit opened");
        }
    }

    /// A provider's 429 with `Retry-After` (until `until`) on `caller`'s request: the whole
    /// deployment cools down when the provider said its quota is spent, or when 429s came
    /// from `min_callers` distinct callers within the breaker's window (or the caller is
    /// unknown); otherwise only `caller` does. Returns whether the whole deployment cools down.
    pub fn cool_down_after(
        &self,
        caller: CallerTag,
        until: Instant,
        evidence: RateLimitEvidence,
    ) -> bool {
        let now = Instant::now();
        let shared = evidence == RateLimitEvidence::ProviderQuota || {
            let mut rate_limited = lock(&self.rate_limited);
            rate_limited.add(caller, now);
            rate_limited.enough(
                now,
                self.breaker_policy.window,
                self.breaker_policy.min_callers,
            )
        };
        if shared {
            self.cool_down(until);
            return true;
        }
        let mut cooldowns = lock(&self.caller_cooldowns);
        if cooldowns.len() >= CALLER_COOLDOWNS && !cooldowns.contains_key(&caller) {
            cooldowns.retain(|_, until| now < *until);
            if cooldowns.len() >= CALLER_COOLDOWNS
                && let Some(earliest) = cooldowns
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(tag, _)| *tag)
            {
                cooldowns.remove(&earliest);
            }
        }
        let entry = cooldowns.entry(caller).or_insert(until);
        *entry = (*entry).max(until);
        false
    }

    /// Until when a `Retry-After` keeps requests away, if it still does.
    pub fn cooling_until(&self) -> Option<Instant> {
        (*lock(&self.cooldown_until)).filter(|until| Instant::now() < *until)
    }

    /// Keeps requests away until `until` (the provider's `Retry-After`).
    pub fn cool_down(&self, until: Instant) {
        let mut cooldown = lock(&self.cooldown_until);
        if cooldown.is_none_or(|current| current < until) {
            *cooldown = Some(until);
        }
    }

    /// Expected latency in µs for ranking: TTFT for streams, total otherwise; `None` before
    /// the first measurement.
    pub fn expected_latency_us(&self, stream: bool) -> Option<f64> {
        let latency = lock(&self.latency);
        if stream {
            latency.ttft_ewma_us.or(latency.total_ewma_us)
        } else {
            latency.total_ewma_us.or(latency.ttft_ewma_us)
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The `p`-th percentile (0–100) of recent time to first token, once there are enough
    /// samples.
    pub fn ttft_percentile(&self, p: f64) -> Option<Duration> {
        let latency = lock(&self.latency);
        percentile(&latency.ttft_samples, p).map(Duration::from_micros)
    }

    /// The breaker's state now (cheaper than [`DeploymentHealth::status`]).
    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state(Instant::now())
    }

    pub fn status(&self) -> DeploymentStatus {
        let now = Instant::now();
        let breaker = lock(&self.breaker);
        let (window_failures, window_requests) = breaker.window_counts(now);
        let latency = lock(&self.latency);
        let ms = |us: Option<f64>| us.map(|us| (us / 10.0).round() / 100.0);
        let cooling = (*lock(&self.cooldown_until))
            .filter(|until| now < *until)
            .map(|until| (until - now).as_millis() as u64);
        DeploymentStatus {
            deployment: self.deployment.name.clone(),
            provider: self.deployment.provider.clone(),
            model: self.deployment.model.clone(),
            breaker: breaker.state(now),
            breaker_retry_in_ms: breaker
                .open_until(now)
                .map(|until| (until - now).as_millis() as u64),
            breaker_opened: breaker.times_opened(),
            window_failures,
            window_requests,
            cooling_down_ms: cooling,
            in_flight: self.in_flight(),
            queued: self.queued.load(Ordering::Relaxed),
            max_concurrency: self.capacity.max_concurrency,
            attempts: self.sent.load(Ordering::Relaxed),
            ttft_ewma_ms: ms(latency.ttft_ewma_us),
            latency_ewma_ms: ms(latency.total_ewma_us),
            ttft_p50_ms: ms(percentile(&latency.ttft_samples, 50.0).map(|v| v as f64)),
            ttft_p99_ms: ms(percentile(&latency.ttft_samples, 99.0).map(|v| v as f64)),
            recent: self.recent(),
        }
    }
}

struct QueueGuard<'a>(&'a AtomicUsize);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Nearest-rank percentile of the samples, `None` below [`MIN_PERCENTILE_SAMPLES`].
fn percentile(samples: &VecDeque<u64>, p: f64) -> Option<u64> {
    if samples.len() < MIN_PERCENTILE_SAMPLES {
        return None;
    }
    let mut sorted: Vec<u64> = samples.iter().copied().collect();
    sorted.sort_unstable();
    nearest_rank(&sorted, p)
}

/// Nearest-rank percentile of sorted samples (`None` when there are none).
fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests own the tasks they spawn")]
mod tests {
    use super::*;
    use sluice_providers::ProviderKind;
    use sluice_types::ErrorKind;

    pub(crate) fn deployment(name: &str) -> Arc<Deployment> {
        Arc::new(Deployment {
            name: name.into(),
            provider: "p".into(),
            kind: ProviderKind::OpenAiCompatible,
            base_url: "http://127.0.0.1:1/v1".parse().unwrap(),
            model: "m".into(),
            api_key: None,
            default_max_tokens: 16,
            structured_output: Default::default(),
            http_version: Default::default(),
        })
    }

    fn breaker() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 2,
            failure_ratio: 1.0,
            min_requests: 100,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
            min_callers: 1,
        }
    }

    fn limited(max: u32, queue: u32) -> CapacityPolicy {
        CapacityPolicy {
            max_concurrency: Some(max),
            max_queue: queue,
            queue_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once_and_a_waiting_request_times_out() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            breaker(),
            limited(1, 1),
        ));
        let first = health.acquire().await.unwrap();
        assert_eq!(health.in_flight(), 1);
        // One may wait; the next is refused without waiting.
        let waiting = tokio::spawn({
            let health = health.clone();
            async move { health.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(health.status().queued, 1);
        assert_eq!(health.acquire().await.unwrap_err(), Unavailable::QueueFull);
        // The waiting one gives up after the queue timeout.
        assert_eq!(waiting.await.unwrap(), Err(Unavailable::QueueTimeout));
        assert_eq!(health.status().queued, 0);
        drop(first);
        assert_eq!(health.in_flight(), 0);
        let again = health.acquire().await.unwrap();
        assert_eq!(again.queued_for, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_recent_view_shows_errors_by_kind_and_malformed_answers_for_five_minutes() {
        let health = DeploymentHealth::new(deployment("d"), breaker(), limited(10, 0));
        let ms = Duration::from_millis;
        for i in 0..8u64 {
            health.observe(AttemptOutcome::Ok, ms(100 + i), Some(ms(10 + i)));
        }
        health.observe(
            AttemptOutcome::Failed(ErrorKind::UpstreamMalformed),
            ms(5),
            None,
        );
        health.observe(
            AttemptOutcome::Failed(ErrorKind::UpstreamTimeout),
            ms(2000),
            None,
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        let stats = health.recent();
        assert_eq!((stats.attempts, stats.errors), (10, 2));
        assert_eq!(stats.window_s, 60);
        assert_eq!(stats.error_rate, 0.2);
        assert_eq!(stats.malformed_rate, 0.1);
        assert_eq!(stats.errors_by_kind["upstream_timeout"], 1);
        // Percentiles of the successful attempts only.
        assert_eq!(
            (stats.latency_p50_ms, stats.latency_p99_ms),
            (Some(103.0), Some(107.0))
        );
        assert_eq!(
            (stats.ttft_p50_ms, stats.ttft_p99_ms),
            (Some(13.0), Some(17.0))
        );
        tokio::time::advance(Duration::from_secs(241)).await;
        health.observe(AttemptOutcome::Ok, ms(1), Some(ms(1)));
        let stats = health.recent();
        assert_eq!(
            (stats.attempts, stats.errors),
            (1, 0),
            "older than five minutes: gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_a_verdict_frees_its_place() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            breaker(),
            limited(10, 0),
        ));
        for _ in 0..2 {
            health
                .acquire()
                .await
                .unwrap()
                .record(Outcome::Failure, None, None);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = health.acquire().await.unwrap();
        assert_eq!(probe.admission(), Admission::Probe);
        assert!(health.acquire().await.is_err(), "one probe at a time");
        // A lost hedge or a client that left: no verdict, but the next probe may go.
        drop(probe);
        assert_eq!(
            health.acquire().await.unwrap().admission(),
            Admission::Probe
        );
        assert_eq!(health.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gets_the_slot_when_it_frees() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            breaker(),
            limited(1, 4),
        ));
        let first = health.acquire().await.unwrap();
        let waiting = tokio::spawn({
            let health = health.clone();
            async move { health.acquire().await.map(|slot| slot.queued_for) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(Duration::from_millis(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_open_the_circuit_and_retry_after_cools_down() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            breaker(),
            CapacityPolicy {
                max_concurrency: None,
                max_queue: 0,
                queue_timeout: Duration::from_secs(1),
            },
        ));
        for _ in 0..2 {
            let mut slot = health.acquire().await.unwrap();
            slot.record(Outcome::Failure, None, None);
        }
        assert!(matches!(
            health.acquire().await.unwrap_err(),
            Unavailable::CircuitOpen { retry_in } if retry_in == Duration::from_secs(5)
        ));
        assert_eq!(health.status().breaker, BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut probe = health.acquire().await.unwrap();
        assert_eq!(probe.admission(), Admission::Probe);
        probe.record(Outcome::Success, Some(Duration::from_millis(40)), None);
        assert_eq!(health.status().breaker, BreakerState::Closed);

        health.cool_down(Instant::now() + Duration::from_secs(3));
        assert!(matches!(
            health.available(Instant::now()),
            Err(Unavailable::CoolingDown { .. })
        ));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(health.available(Instant::now()).is_ok());
    }

    fn shared_fate_breaker() -> BreakerPolicy {
        BreakerPolicy {
            min_callers: 2,
            ..breaker()
        }
    }

    fn unlimited() -> CapacityPolicy {
        CapacityPolicy {
            max_concurrency: None,
            max_queue: 0,
            queue_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_whose_requests_make_the_upstream_fail_leaves_others_served() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            shared_fate_breaker(),
            unlimited(),
        ));
        let (bad, good) = (CallerTag::of("key_bad"), CallerTag::of("key_good"));
        // Far past `consecutive_failures` (2), all from one key, some of them late in streams.
        for i in 0..20 {
            let mut slot = health.acquire_for(bad).await.unwrap();
            if i % 4 == 0 {
                slot.record(Outcome::Success, None, None);
                slot.record_late_failure();
            } else {
                slot.record(Outcome::Failure, None, None);
            }
        }
        assert_eq!(health.status().breaker, BreakerState::Closed);
        // Both keys are still served.
        let mut slot = health.acquire_for(good).await.unwrap();
        slot.record(Outcome::Success, None, None);
        drop(slot);
        assert!(health.acquire_for(bad).await.is_ok());
        // When the other key's requests fail as well, the deployment is the problem.
        for _ in 0..2 {
            health
                .acquire_for(good)
                .await
                .unwrap()
                .record(Outcome::Failure, None, None);
        }
        assert_eq!(health.status().breaker, BreakerState::Open);
        assert!(matches!(
            health.acquire_for(good).await.unwrap_err(),
            Unavailable::CircuitOpen { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn one_callers_429_backs_off_that_caller_only_unless_the_quota_is_spent() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            shared_fate_breaker(),
            unlimited(),
        ));
        let (a, b, c) = (CallerTag::of("a"), CallerTag::of("b"), CallerTag::of("c"));
        let until = Instant::now() + Duration::from_secs(30);
        assert!(!health.cool_down_after(a, until, RateLimitEvidence::ThisRequest));
        assert!(matches!(
            health.acquire_for(a).await.unwrap_err(),
            Unavailable::CoolingDown { retry_in } if retry_in == Duration::from_secs(30)
        ));
        assert!(
            health.acquire_for(b).await.is_ok(),
            "another caller is served"
        );
        assert_eq!(health.status().cooling_down_ms, None);
        // The same caller again is still its own rate limit.
        assert!(!health.cool_down_after(a, until, RateLimitEvidence::ThisRequest));
        assert!(health.acquire_for(c).await.is_ok());
        // A second caller rate-limited in the window: the deployment is.
        assert!(health.cool_down_after(b, until, RateLimitEvidence::ThisRequest));
        assert!(matches!(
            health.acquire_for(c).await.unwrap_err(),
            Unavailable::CoolingDown { .. }
        ));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(health.acquire_for(a).await.is_ok());

        // The provider saying the quota is spent pauses it for everyone at once.
        let health = Arc::new(DeploymentHealth::new(
            deployment("e"),
            shared_fate_breaker(),
            unlimited(),
        ));
        let until = Instant::now() + Duration::from_secs(5);
        assert!(health.cool_down_after(a, until, RateLimitEvidence::ProviderQuota));
        assert!(health.acquire_for(b).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_an_ewma_and_percentiles_need_samples() {
        let health = Arc::new(DeploymentHealth::new(
            deployment("d"),
            breaker(),
            limited(100, 0),
        ));
        let record = |outcome, ttft: u64, total: Option<u64>| {
            let health = health.clone();
            async move {
                let mut slot = health.acquire().await.unwrap();
                let ms = Duration::from_millis;
                slot.record(outcome, Some(ms(ttft)), total.map(ms));
            }
        };
        record(Outcome::Success, 100, Some(400)).await;
        assert_eq!(health.expected_latency_us(true), Some(100_000.0));
        assert_eq!(health.expected_latency_us(false), Some(400_000.0));
        record(Outcome::Success, 200, None).await;
        assert_eq!(health.expected_latency_us(true), Some(120_000.0));
        assert_eq!(health.ttft_percentile(95.0), None);
        for ms in 1..=100 {
            record(Outcome::Success, ms, None).await;
        }
        // 102 samples: 100 ms, 200 ms and 1..=100 ms; the 95th percentile is rank 97 of them.
        assert_eq!(
            health.ttft_percentile(95.0),
            Some(Duration::from_millis(97))
        );
        // Failures do not make a deployment look fast.
        let before = health.expected_latency_us(true);
        record(Outcome::Failure, 1, None).await;
        assert_eq!(health.expected_latency_us(true), before);
        // A stall it never answered makes it look slow (but leaves the percentiles alone).
        let before = health.expected_latency_us(true).unwrap();
        health.observe_slow(Duration::from_secs(2));
        let after = health.expected_latency_us(true).unwrap();
        assert!(
            (after - (before + 0.2 * (2_000_000.0 - before))).abs() < 1.0,
            "{after}"
        );
        assert_eq!(
            health.ttft_percentile(95.0),
            Some(Duration::from_millis(97))
        );
    }
}
