//! Counters in one Redis, shared by every replica.
//!
//! A reservation is one Lua script (sent as EVALSHA, loaded and retried on NOSCRIPT by
//! `redis::Script`): Redis runs scripts one at a time, so checking every level and adding to
//! every level is atomic across replicas. Each counter is an integer key under the configured
//! prefix that expires at the end of its window plus [`crate::budget`]'s slack (`PEXPIREAT`, so
//! replicas agree on the expiry). All keys of a reservation are touched by one script: on a
//! Redis Cluster they must hash to one slot, which a hash tag in the prefix (`{sluice}:`)
//! arranges.
//!
//! Numbers: Lua numbers are doubles, exact up to 2^53, which is why limits and charges are
//! capped at [`super::MAX_COUNTER_AMOUNT`]; amounts are passed to `INCRBY` as the original
//! decimal strings, never re-formatted by Lua.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    Adjustment, Charge, CounterFuture, Counters, HeldAmount, Hold, Quota, Restore, check_distinct,
    quota_resets_at,
};
use crate::budget::{Consumption, Limit};
use crate::calendar::UnixMs;
use crate::error::PolicyError;

/// KEYS: every charge's slot keys, charge after charge, oldest slot first.
/// ARGV: the deadline (Unix ms on Redis's clock, `0` for none), the number of charges, then per
/// charge: slot count, amount, limit, expiry (Unix ms).
/// Reply: `{2, now}` when Redis runs it after its deadline (the gateway has given up on it and
/// answered the request already: nothing is added); `{0, charge, used, oldest non-empty slot}`
/// (1-based, 0 for none) when a charge does not fit and nothing was added; otherwise
/// `{1, used after, oldest non-empty slot after, ..., now}` with one pair per charge and
/// Redis's clock (Unix ms) last.
const RESERVE_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = tonumber(ARGV[1])
if deadline > 0 and now > deadline then
  return {2, now}
end
local charge_count = tonumber(ARGV[2])
local key_index = 1
local arg_index = 3
local plans = {}
for charge = 1, charge_count do
  local slot_count = tonumber(ARGV[arg_index])
  local amount_text = ARGV[arg_index + 1]
  local amount = tonumber(amount_text)
  local limit = tonumber(ARGV[arg_index + 2])
  local expires_at = ARGV[arg_index + 3]
  arg_index = arg_index + 4
  local values = redis.call('MGET', unpack(KEYS, key_index, key_index + slot_count - 1))
  local used = 0
  local first_non_empty = 0
  for slot = 1, slot_count do
    local value = tonumber(values[slot]) or 0
    if value > 0 and first_non_empty == 0 then
      first_non_empty = slot
    end
    used = used + value
  end
  if used + amount > limit then
    return {0, charge, used, first_non_empty}
  end
  if first_non_empty == 0 and amount > 0 then
    first_non_empty = slot_count
  end
  plans[charge] = {KEYS[key_index + slot_count - 1], amount, amount_text, expires_at, used + amount, first_non_empty}
  key_index = key_index + slot_count
end
local reply = {1}
for charge = 1, charge_count do
  local plan = plans[charge]
  if plan[2] > 0 then
    redis.call('INCRBY', plan[1], plan[3])
    redis.call('PEXPIREAT', plan[1], plan[4])
  end
  reply[#reply + 1] = plan[5]
  reply[#reply + 1] = plan[6]
end
reply[#reply + 1] = now
return reply
";

/// KEYS: counters to adjust. ARGV: per key, the delta and the expiry (Unix ms) to give a
/// counter that has to be created. A result below zero is clamped to zero; a missing counter
/// is only created for a positive delta. Reply: the number of keys.
const ADJUST_SCRIPT: &str = r"
for index = 1, #KEYS do
  local key = KEYS[index]
  local delta_text = ARGV[index * 2 - 1]
  local delta = tonumber(delta_text)
  if redis.call('EXISTS', key) == 1 then
    local value = redis.call('INCRBY', key, delta_text)
    if value < 0 then
      redis.call('INCRBY', key, string.format('%.0f', -value))
    end
  elseif delta > 0 then
    redis.call('INCRBY', key, delta_text)
    redis.call('PEXPIREAT', key, ARGV[index * 2])
  end
end
return #KEYS
";

/// KEYS: counters to raise. ARGV: per key, the amount and the expiry (Unix ms). Each counter
/// becomes the larger of its value and the amount; one created gets the expiry.
const RESTORE_SCRIPT: &str = r"
for index = 1, #KEYS do
  local key = KEYS[index]
  local amount = tonumber(ARGV[index * 2 - 1])
  local value = tonumber(redis.call('GET', key) or '0')
  if amount > value then
    redis.call('INCRBY', key, string.format('%.0f', amount - value))
    if value == 0 then
      redis.call('PEXPIREAT', key, ARGV[index * 2])
    end
  end
end
return #KEYS
";

/// The key whose presence says the counters hold the deployment's state: set when they are
/// rebuilt; a Redis that lost its data lost it too.
const LIVE_MARKER: &str = "counters-live";

/// How to reach the shared Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; may carry a password, so never logged.
    pub url: String,
    /// Put before every counter key, e.g. `sluice:` (or `{sluice}:` on a cluster).
    pub key_prefix: String,
    /// Bound on establishing (and re-establishing) the connection.
    pub connect_timeout: Duration,
    /// Bound on each command, a reservation script included.
    pub response_timeout: Duration,
}

impl RedisSettings {
    /// Defaults: prefix `sluice:`, 1 s to connect, 500 ms per command.
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            key_prefix: "sluice:".to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// Counters shared through Redis. Cloning shares the connection.
///
/// Every operation is bounded by `response_timeout` as a whole (reconnection attempts
/// included), so a refusal for an unreachable Redis takes one timeout. A reservation carries a
/// deadline on Redis's clock (estimated from the offset measured at connect and refreshed by
/// every reservation's reply), half a timeout after it is sent: a Redis that stalled (a paused
/// process, a long fork) and runs it later, after the gateway answered the request 503, refuses
/// to apply it, so no budget is charged for a request that was never served.
#[derive(Clone)]
pub struct RedisCounters {
    connection: ConnectionManager,
    key_prefix: String,
    reserve_script: redis::Script,
    adjust_script: redis::Script,
    restore_script: redis::Script,
    timeout: Duration,
    /// Redis's clock minus ours, in ms.
    clock_offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounters")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Connects (within `connect_timeout`); the connection is re-established automatically
    /// after a failure.
    pub async fn connect(settings: &RedisSettings) -> Result<RedisCounters, PolicyError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        let mut counters = RedisCounters::from_connection(connection, settings.key_prefix.clone());
        counters.timeout = settings.response_timeout;
        counters.measure_clock().await?;
        Ok(counters)
    }

    /// Measures Redis's clock against ours (`TIME`, half the round trip taken as the lag).
    async fn measure_clock(&self) -> Result<(), PolicyError> {
        let mut connection = self.connection.clone();
        let sent = wall_clock_ms();
        let time: (String, String) = self
            .bounded(redis::cmd("TIME").query_async(&mut connection))
            .await?;
        let received = wall_clock_ms();
        let parse = |text: &str| text.parse::<i64>().unwrap_or(0);
        let redis_now = parse(&time.0) * 1_000 + parse(&time.1) / 1_000;
        let ours = sent + (received - sent) / 2;
        self.clock_offset_ms
            .store(redis_now - ours, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// `operation`, failing with [`PolicyError::CounterTimeout`] past the timeout.
    async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, PolicyError> {
        let timed_out = || PolicyError::CounterTimeout {
            timeout: self.timeout,
        };
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            // The client's own response timeout is the same bound.
            Ok(Err(error)) if error.is_timeout() => Err(timed_out()),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(timed_out()),
        }
    }

    /// Counters on an existing connection.
    pub fn from_connection(
        connection: ConnectionManager,
        key_prefix: impl Into<String>,
    ) -> RedisCounters {
        RedisCounters {
            connection,
            key_prefix: key_prefix.into(),
            reserve_script: redis::Script::new(RESERVE_SCRIPT),
            adjust_script: redis::Script::new(ADJUST_SCRIPT),
            restore_script: redis::Script::new(RESTORE_SCRIPT),
            timeout: Duration::from_millis(500),
            clock_offset_ms: std::sync::Arc::default(),
        }
    }

    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    async fn reserve_in_redis(&self, charges: &[Charge]) -> Result<Hold, PolicyError> {
        check_distinct(charges)?;
        if charges.is_empty() {
            return Ok(Hold {
                held: Vec::new(),
                quotas: Vec::new(),
            });
        }
        // Half a timeout after sending, on Redis's clock: a reply to a script run before it has
        // the other half to arrive before the gateway gives up.
        let offset = self
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let half = i64::try_from(self.timeout.as_millis() / 2).unwrap_or(i64::MAX);
        let deadline = wall_clock_ms()
            .saturating_add(offset)
            .saturating_add(half)
            .max(1);
        let mut invocation = self.reserve_script.prepare_invoke();
        invocation.arg(deadline).arg(charges.len());
        for charge in charges {
            for slot in &charge.slots {
                invocation.key(self.full_key(&charge.slot_key(slot)));
            }
            invocation
                .arg(charge.slots.len())
                .arg(charge.amount)
                .arg(charge.limit.amount)
                .arg(charge.expires_at.0);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        let received = wall_clock_ms();
        let (reply, redis_now) = match reply.as_slice() {
            [2, _] => {
                return Err(PolicyError::CounterTimeout {
                    timeout: self.timeout,
                });
            }
            [1, rest @ .., now] => (&reply[..=rest.len()], Some(*now)),
            _ => (reply.as_slice(), None),
        };
        if let Some(redis_now) = redis_now {
            // The script ran before the reply arrived: this estimate errs towards an earlier
            // deadline, never a later one.
            self.clock_offset_ms
                .store(redis_now - received, std::sync::atomic::Ordering::Relaxed);
        }
        decode_reserve_reply(charges, reply)
    }

    async fn adjust(&self, adjustments: Vec<Adjustment>) -> Result<(), PolicyError> {
        if adjustments.is_empty() {
            return Ok(());
        }
        let mut invocation = self.adjust_script.prepare_invoke();
        for adjustment in &adjustments {
            invocation
                .key(self.full_key(&adjustment.key))
                .arg(adjustment.delta)
                .arg(adjustment.expires_at.0);
        }
        let mut connection = self.connection.clone();
        let _adjusted: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
    }

    async fn usage_in_redis(&self, limit: &Limit, now: UnixMs) -> Result<u64, PolicyError> {
        let charge = limit.charge(0, now)?;
        let keys: Vec<String> = charge
            .slots
            .iter()
            .map(|slot| self.full_key(&charge.slot_key(slot)))
            .collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<i64>> = self
            .bounded(redis::cmd("MGET").arg(&keys).query_async(&mut connection))
            .await?;
        Ok(values
            .into_iter()
            .map(|value| u64::try_from(value.unwrap_or(0)).unwrap_or(0))
            .fold(0_u64, u64::saturating_add))
    }
}

/// Our wall clock, Unix ms (what deadlines sent to Redis are measured against).
fn wall_clock_ms() -> i64 {
    sluice_types::clock::unix_ms()
}

fn decode_reserve_reply(charges: &[Charge], reply: &[i64]) -> Result<Hold, PolicyError> {
    let unexpected = PolicyError::UnexpectedReply {
        operation: "reserve",
    };
    let slot_index = |one_based: i64| usize::try_from(one_based).ok()?.checked_sub(1);
    match reply {
        [0, charge, used, first_non_empty] => {
            let charge = slot_index(*charge)
                .and_then(|index| charges.get(index))
                .ok_or(unexpected)?;
            let used = u64::try_from(*used).unwrap_or(0);
            Err(charge.refusal(used, charge.frees_at_slot(slot_index(*first_non_empty))))
        }
        [1, pairs @ ..] if pairs.len() == charges.len() * 2 => {
            let mut held = Vec::with_capacity(charges.len());
            let mut quotas = Vec::with_capacity(charges.len());
            for (charge, pair) in charges.iter().zip(pairs.chunks_exact(2)) {
                let Some(write) = charge.write_key() else {
                    continue;
                };
                held.push(HeldAmount {
                    key: write.to_owned(),
                    metric: charge.limit.metric,
                    reserved: charge.amount,
                    expires_at: charge.expires_at,
                });
                quotas.push(Quota {
                    limit: charge.limit.clone(),
                    used: u64::try_from(pair[0]).unwrap_or(0),
                    resets_at: quota_resets_at(charge, slot_index(pair[1])),
                });
            }
            Ok(Hold { held, quotas })
        }
        _ => Err(unexpected),
    }
}

impl Counters for RedisCounters {
    fn restore<'a>(&'a self, amounts: &'a [Restore]) -> CounterFuture<'a, Result<(), PolicyError>> {
        Box::pin(async move {
            // In batches, so one script never holds Redis for long.
            for batch in amounts.chunks(512) {
                let mut invocation = self.restore_script.prepare_invoke();
                for restore in batch {
                    invocation
                        .key(self.full_key(&restore.key))
                        .arg(restore.amount)
                        .arg(restore.expires_at.0);
                }
                let mut connection = self.connection.clone();
                let _restored: i64 = self
                    .bounded(invocation.invoke_async(&mut connection))
                    .await?;
            }
            Ok(())
        })
    }

    fn claim_rebuild(&self) -> CounterFuture<'_, Result<bool, PolicyError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let set: Option<String> = self
                .bounded(
                    redis::cmd("SET")
                        .arg(self.full_key(LIVE_MARKER))
                        .arg(wall_clock_ms())
                        .arg("NX")
                        .query_async(&mut connection),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn reserve<'a>(
        &'a self,
        charges: &'a [Charge],
    ) -> CounterFuture<'a, Result<Hold, PolicyError>> {
        Box::pin(self.reserve_in_redis(charges))
    }

    fn settle(
        &self,
        hold: Hold,
        actual: Consumption,
    ) -> CounterFuture<'_, Result<(), PolicyError>> {
        Box::pin(self.adjust(hold.settlement(actual)))
    }

    fn release(&self, hold: Hold) -> CounterFuture<'_, Result<(), PolicyError>> {
        Box::pin(self.adjust(hold.releases()))
    }

    fn usage<'a>(
        &'a self,
        limit: &'a Limit,
        now: UnixMs,
    ) -> CounterFuture<'a, Result<u64, PolicyError>> {
        Box::pin(self.usage_in_redis(limit, now))
    }
}
