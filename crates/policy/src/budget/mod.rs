//! Budgets and rate limits as values: who is limited ([`Scope`]), in what unit ([`Metric`]),
//! by how much, over which [`Period`], and the window arithmetic behind them.
//!
//! Owns: the organisation → team → project → key → end-user hierarchy, calendar (UTC) and
//! rolling windows, counter keys, turning a request's demand into one [`Charge`] per applicable
//! limit ([`plan_charges`]), allocation validation ([`validate_allocations`]) and the human
//! sentence of a refusal. Leaves to others: counting ([`crate::counters`]), where limits are
//! configured (`sluice-config`), which limits apply to a caller (`sluice-pipeline`, from the
//! authenticated key), and rendering the 429 (`sluice-server`).
//!
//! Time is always an argument. A rate limit is a limit with a short rolling period and the
//! [`Metric::Requests`] or [`Metric::Tokens`] metric: [`Limit::requests_per_minute`].

mod allocation;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use sluice_types::Money;

use crate::calendar::{
    MS_PER_DAY, UnixMs, civil_from_days, days_from_civil, duration_ms, weekday_from_monday,
};
use crate::counters::{Charge, MAX_COUNTER_AMOUNT, Slot};
use crate::error::{LimitProblem, PolicyError};
use crate::model_id;

pub use allocation::{AllocationProblem, BudgetNode, validate_allocations};

/// One level of the hierarchy and its id. Ids must be unique within their level across the
/// deployment (the store issues them); counters of `Team("search")` are shared by every caller
/// whose chain names that team.
///
/// End users are the exception: their ids are chosen by clients, so they belong to the key's
/// tenant. A request's end user is `EndUser("TENANT/USER")` ([`Scope::end_user`]), so `bob` of
/// `acme` and `bob` of `globex` never share a counter. A budget row may name one tenant's user
/// (`user:acme/bob`) or, without a tenant, a user id in every tenant (`user:bob`: a limit each
/// tenant's `bob` gets on its own, like `user:*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Organisation(String),
    Team(String),
    Project(String),
    Key(String),
    /// `TENANT/USER` (the tenant escaped: [`Scope::end_user`]), or `USER` in a budget row that
    /// names no tenant.
    EndUser(String),
    /// A route, whoever calls it: outside the hierarchy (it has no parent and no children).
    Alias(String),
}

/// The depth of a [`Scope`] in the hierarchy; `Organisation` is the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Organisation,
    Team,
    Project,
    Key,
    EndUser,
    /// Not a level of the hierarchy: a route's own limits.
    Alias,
}

impl Scope {
    pub fn level(&self) -> Level {
        match self {
            Scope::Organisation(_) => Level::Organisation,
            Scope::Team(_) => Level::Team,
            Scope::Project(_) => Level::Project,
            Scope::Key(_) => Level::Key,
            Scope::EndUser(_) => Level::EndUser,
            Scope::Alias(_) => Level::Alias,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Scope::Organisation(id)
            | Scope::Team(id)
            | Scope::Project(id)
            | Scope::Key(id)
            | Scope::EndUser(id)
            | Scope::Alias(id) => id,
        }
    }
}

impl Scope {
    /// The end user `user` of `tenant`: its own counters, apart from every other tenant's
    /// user of the same id. A `/` or `%` in the tenant is escaped, so the first `/` of the id
    /// always ends the tenant.
    pub fn end_user(tenant: &str, user: &str) -> Scope {
        let tenant = if tenant.contains(['%', '/']) {
            tenant.replace('%', "%25").replace('/', "%2F")
        } else {
            tenant.to_owned()
        };
        Scope::EndUser(format!("{tenant}/{user}"))
    }

    /// An end user's tenant (as escaped in the id) and user id; `None` for other levels and
    /// for a row's end user that names no tenant.
    pub fn tenant_user(&self) -> Option<(&str, &str)> {
        match self {
            Scope::EndUser(id) => id.split_once('/'),
            _ => None,
        }
    }

    /// Whether the scope stands for many counters rather than one: `key:*`, `user:*`, and an
    /// end user named without a tenant (`user:bob`, one counter per tenant's `bob`). Such a
    /// row has no single usage and no place in allocations.
    pub fn is_template(&self) -> bool {
        match self {
            Scope::Key(id) => id == "*",
            Scope::EndUser(id) => id == "*" || !id.contains('/'),
            _ => false,
        }
    }

    /// The row ids whose limits apply to this scope, most specific first: its own id, then,
    /// for a tenant's end user, the same user id in every tenant, then `*` for keys and end
    /// users. A limit found under an earlier id overrides one of the same metric, period and
    /// model under a later one.
    pub fn row_ids(&self) -> Vec<&str> {
        let mut ids = vec![self.id()];
        if let Some((_, user)) = self.tenant_user() {
            ids.push(user);
        }
        if matches!(self, Scope::Key(_) | Scope::EndUser(_)) && self.id() != "*" {
            ids.push("*");
        }
        ids
    }
}

impl Level {
    /// The word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Organisation => "organisation",
            Level::Team => "team",
            Level::Project => "project",
            Level::Key => "key",
            Level::EndUser => "end user",
            Level::Alias => "model",
        }
    }

    /// The prefix of the textual form (`team:search`), also used in counter keys.
    pub fn key_part(self) -> &'static str {
        match self {
            Level::Organisation => "org",
            Level::Team => "team",
            Level::Project => "project",
            Level::Key => "key",
            Level::EndUser => "user",
            Level::Alias => "alias",
        }
    }

    const ALL: [Level; 6] = [
        Level::Organisation,
        Level::Team,
        Level::Project,
        Level::Key,
        Level::EndUser,
        Level::Alias,
    ];

    /// Whether the level is part of the organisation → end-user hierarchy.
    pub fn in_hierarchy(self) -> bool {
        self != Level::Alias
    }
}

/// What is wrong with the text of a scope, metric or period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseProblem(String);

/// `team:search`, `user:ana`, `alias:gpt-4o`; `org:` and `organisation:` are both accepted.
impl std::str::FromStr for Scope {
    type Err = ParseProblem;

    fn from_str(text: &str) -> Result<Scope, ParseProblem> {
        let (level, id) = text.split_once(':').ok_or_else(|| {
            ParseProblem(format!(
                "`{text}` is not a scope: write LEVEL:ID, e.g. `team:search` \
                 (levels: org, team, project, key, user, alias)"
            ))
        })?;
        let id = id.trim();
        if id.is_empty() {
            return Err(ParseProblem(format!(
                "`{text}` names no id after the colon"
            )));
        }
        let level = match level.trim().to_ascii_lowercase().as_str() {
            "organisation" | "organization" => Level::Organisation,
            other => Level::ALL
                .into_iter()
                .find(|level| level.key_part() == other)
                .ok_or_else(|| {
                    ParseProblem(format!(
                        "unknown scope level `{level}` (levels: org, team, project, key, user, alias)"
                    ))
                })?,
        };
        if level == Level::EndUser
            && let Some((tenant, user)) = id.split_once('/')
            && (tenant.is_empty() || user.is_empty() || user == "*")
        {
            return Err(ParseProblem(format!(
                "`{text}` is not an end user: write `user:TENANT/USER` for one tenant's user, \
                 `user:USER` for that user id in every tenant, or `user:*`"
            )));
        }
        let id = id.to_owned();
        Ok(match level {
            Level::Organisation => Scope::Organisation(id),
            Level::Team => Scope::Team(id),
            Level::Project => Scope::Project(id),
            Level::Key => Scope::Key(id),
            Level::EndUser => Scope::EndUser(id),
            Level::Alias => Scope::Alias(id),
        })
    }
}

impl Scope {
    /// The textual form `FromStr` reads: `team:search`.
    pub fn to_text(&self) -> String {
        let (level, id) = (self.level().key_part(), self.id());
        let mut text = String::with_capacity(level.len() + 1 + id.len());
        text.push_str(level);
        text.push(':');
        text.push_str(id);
        text
    }
}

/// `team `search``: the level and the id, as a message names it; a tenant's end user is
/// `end user `bob` of tenant `acme``.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tenant_user() {
            Some((tenant, user)) => {
                let tenant = tenant.replace("%2F", "/").replace("%25", "%");
                write!(f, "end user `{user}` of tenant `{tenant}`")
            }
            None => write!(f, "{} `{}`", self.level().as_str(), self.id()),
        }
    }
}

/// The unit a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Spend, counted in micro-USD.
    Usd,
    /// Input plus output tokens.
    Tokens,
    /// Requests admitted.
    Requests,
}

impl std::str::FromStr for Metric {
    type Err = ParseProblem;

    fn from_str(text: &str) -> Result<Metric, ParseProblem> {
        match text.trim().to_ascii_lowercase().as_str() {
            "usd" => Ok(Metric::Usd),
            "tokens" => Ok(Metric::Tokens),
            "requests" => Ok(Metric::Requests),
            other => Err(ParseProblem(format!(
                "unknown metric `{other}` (usd, tokens, requests)"
            ))),
        }
    }
}

impl Metric {
    /// The textual form `FromStr` reads.
    pub fn as_str(self) -> &'static str {
        self.key_part()
    }

    fn key_part(self) -> &'static str {
        match self {
            Metric::Usd => "usd",
            Metric::Tokens => "tokens",
            Metric::Requests => "requests",
        }
    }

    /// An amount of this metric as a message shows it: `$4.98`, `99,000`.
    pub fn format_amount(self, amount: u64) -> String {
        match self {
            Metric::Usd => format_usd(amount),
            Metric::Tokens | Metric::Requests => group_thousands(amount),
        }
    }
}

/// Number of buckets a rolling window is counted in. The window sums the current bucket and the
/// eleven before it, so the counted span is between 11/12 and 12/12 of the period, and usage
/// leaves the window one bucket (1/12 of the period) at a time.
pub const ROLLING_BUCKETS: i64 = 12;
/// The shortest rolling period accepted.
pub const MIN_ROLLING: Duration = Duration::from_secs(1);
/// The longest rolling period accepted.
pub const MAX_ROLLING: Duration = Duration::from_secs(366 * 86_400);

/// How long a counter outlives its window: covers clock skew between replicas and settlements
/// that land just after a boundary.
pub(crate) const EXPIRY_SLACK: Duration = Duration::from_secs(300);

/// The period a limit applies to. Calendar periods are UTC and reset at their boundary; weeks
/// start on Monday (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Week,
    Month,
    /// The last `Duration`, counted in [`ROLLING_BUCKETS`] buckets.
    Rolling(Duration),
}

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: UnixMs,
    pub end: UnixMs,
}

impl Period {
    /// The window `now` falls in. For a calendar period, the whole day, week or month; for a
    /// rolling period, the buckets counted at `now` (from the oldest bucket's start to the end
    /// of the current one).
    pub fn window(&self, now: UnixMs) -> Window {
        match *self {
            Period::Day => {
                let start = now.day_number() * MS_PER_DAY;
                Window {
                    start: UnixMs(start),
                    end: UnixMs(start.saturating_add(MS_PER_DAY)),
                }
            }
            Period::Week => {
                let day = now.day_number();
                let monday = day - weekday_from_monday(day);
                let start = monday * MS_PER_DAY;
                Window {
                    start: UnixMs(start),
                    end: UnixMs(start.saturating_add(7 * MS_PER_DAY)),
                }
            }
            Period::Month => {
                let (year, month, _) = civil_from_days(now.day_number());
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Window {
                    start: UnixMs(days_from_civil(year, month, 1) * MS_PER_DAY),
                    end: UnixMs(
                        days_from_civil(next_year, next_month, 1).saturating_mul(MS_PER_DAY),
                    ),
                }
            }
            Period::Rolling(length) => {
                let bucket = rolling_bucket_ms(length);
                let current = now.0.div_euclid(bucket);
                Window {
                    start: UnixMs((current - (ROLLING_BUCKETS - 1)).saturating_mul(bucket)),
                    end: UnixMs((current + 1).saturating_mul(bucket)),
                }
            }
        }
    }

    /// When a calendar window resets (its end). For a rolling period: the end of the current
    /// bucket, when the oldest bucket next leaves the window; the counters report the exact
    /// moment capacity frees, from which buckets are non-empty.
    pub fn resets_at(&self, now: UnixMs) -> UnixMs {
        self.window(now).end
    }

    /// The counters that make up the window at `now`, oldest first; the last is the one a new
    /// charge is added to. Each slot says when it leaves the window.
    pub(crate) fn slots(&self, now: UnixMs) -> Vec<(UnixMs, UnixMs)> {
        match *self {
            Period::Day | Period::Week | Period::Month => {
                let window = self.window(now);
                vec![(window.start, window.end)]
            }
            Period::Rolling(length) => {
                let bucket = rolling_bucket_ms(length);
                let span = bucket.saturating_mul(ROLLING_BUCKETS);
                let current = now.0.div_euclid(bucket);
                ((current - (ROLLING_BUCKETS - 1))..=current)
                    .map(|index| {
                        let start = index.saturating_mul(bucket);
                        (UnixMs(start), UnixMs(start.saturating_add(span)))
                    })
                    .collect()
            }
        }
    }

    /// The textual form `FromStr` reads: `day`, `week`, `month`, or a rolling length
    /// (`60s`, `1h`, `7d`, `1500ms`).
    pub fn to_text(&self) -> String {
        match self {
            Period::Day => "day".to_owned(),
            Period::Week => "week".to_owned(),
            Period::Month => "month".to_owned(),
            Period::Rolling(length) => {
                let ms = duration_ms(*length);
                [
                    (86_400_000, "d"),
                    (3_600_000, "h"),
                    (60_000, "m"),
                    (1_000, "s"),
                ]
                .into_iter()
                .find(|(unit, _)| ms % unit == 0)
                .map_or(format!("{ms}ms"), |(unit, suffix)| {
                    format!("{}{suffix}", ms / unit)
                })
            }
        }
    }

    fn push_key_part(&self, key: &mut String) {
        match self {
            Period::Day => key.push_str("day"),
            Period::Week => key.push_str("week"),
            Period::Month => key.push_str("month"),
            Period::Rolling(length) => {
                key.push_str("roll");
                push_decimal(key, duration_ms(*length));
            }
        }
    }

    /// `daily`, `weekly`, `monthly`, `rolling 1-minute`.
    pub fn adjective(&self) -> String {
        match self {
            Period::Day => "daily".to_owned(),
            Period::Week => "weekly".to_owned(),
            Period::Month => "monthly".to_owned(),
            Period::Rolling(length) => format!("rolling {}", describe_duration(*length)),
        }
    }
}

/// `day`, `week`, `month` (calendar, UTC), or a rolling window: `minute`, `hour`, or a length
/// such as `60s`, `5m`, `1h`, `7d`, `1500ms`.
impl std::str::FromStr for Period {
    type Err = ParseProblem;

    fn from_str(text: &str) -> Result<Period, ParseProblem> {
        let text = text.trim().to_ascii_lowercase();
        let rolling = |ms: u64| Period::Rolling(Duration::from_millis(ms));
        match text.as_str() {
            "day" | "daily" => return Ok(Period::Day),
            "week" | "weekly" => return Ok(Period::Week),
            "month" | "monthly" => return Ok(Period::Month),
            "minute" => return Ok(rolling(60_000)),
            "hour" => return Ok(rolling(3_600_000)),
            _ => {}
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit_ms = match unit {
            "ms" => Some(1),
            "s" => Some(1_000),
            "m" => Some(60_000),
            "h" => Some(3_600_000),
            "d" => Some(86_400_000),
            _ => None,
        };
        match (number.parse::<u64>(), unit_ms) {
            (Ok(count), Some(unit_ms)) if count > 0 => Ok(rolling(count.saturating_mul(unit_ms))),
            _ => Err(ParseProblem(format!(
                "`{text}` is not a period: day, week, month, minute, hour, or a rolling length \
                 such as 60s, 5m, 1h, 7d"
            ))),
        }
    }
}

fn rolling_bucket_ms(length: Duration) -> i64 {
    (duration_ms(length) / ROLLING_BUCKETS).max(1)
}

fn describe_duration(length: Duration) -> String {
    let seconds = length.as_secs();
    let (count, unit) = if length.subsec_millis() != 0 {
        (
            u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
            "millisecond",
        )
    } else if seconds >= 86_400 && seconds.is_multiple_of(86_400) {
        (seconds / 86_400, "day")
    } else if seconds >= 3_600 && seconds.is_multiple_of(3_600) {
        (seconds / 3_600, "hour")
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        (seconds / 60, "minute")
    } else {
        (seconds, "second")
    };
    format!("{count}-{unit}")
}

/// A limit on one scope: at most `amount` of `metric` per `period`, optionally only for
/// requests to one model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limit {
    pub scope: Scope,
    pub metric: Metric,
    /// In the metric's unit: micro-USD, tokens or requests.
    pub amount: u64,
    pub period: Period,
    /// Only requests to this model (or its dated versions) count; `None`: every model.
    pub model: Option<String>,
}

impl Limit {
    /// A spend budget. Errors if `budget` is negative.
    pub fn usd(scope: Scope, budget: Money, period: Period) -> Result<Limit, PolicyError> {
        let amount = u64::try_from(budget.micros()).map_err(|_| PolicyError::InvalidLimit {
            scope: scope.clone(),
            problem: LimitProblem::NegativeAmount,
        })?;
        Limit::new(scope, Metric::Usd, amount, period)
    }

    pub fn tokens(scope: Scope, tokens: u64, period: Period) -> Result<Limit, PolicyError> {
        Limit::new(scope, Metric::Tokens, tokens, period)
    }

    pub fn requests(scope: Scope, requests: u64, period: Period) -> Result<Limit, PolicyError> {
        Limit::new(scope, Metric::Requests, requests, period)
    }

    /// Requests per rolling minute: a rate limit.
    pub fn requests_per_minute(scope: Scope, requests: u64) -> Result<Limit, PolicyError> {
        Limit::requests(scope, requests, Period::Rolling(Duration::from_secs(60)))
    }

    /// Tokens per rolling minute: a rate limit.
    pub fn tokens_per_minute(scope: Scope, tokens: u64) -> Result<Limit, PolicyError> {
        Limit::tokens(scope, tokens, Period::Rolling(Duration::from_secs(60)))
    }

    /// Any limit, validated.
    pub fn new(
        scope: Scope,
        metric: Metric,
        amount: u64,
        period: Period,
    ) -> Result<Limit, PolicyError> {
        let limit = Limit {
            scope,
            metric,
            amount,
            period,
            model: None,
        };
        limit.validate()?;
        Ok(limit)
    }

    /// The same limit, counting only requests to `model`.
    pub fn for_model(mut self, model: impl Into<String>) -> Limit {
        self.model = Some(model.into().to_ascii_lowercase());
        self
    }

    /// Checks what [`Limit::new`] checks, for limits built as struct literals.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let problem = if self.amount > MAX_COUNTER_AMOUNT {
            Some(LimitProblem::AmountTooLarge)
        } else {
            match self.period {
                Period::Rolling(length) if length < MIN_ROLLING => {
                    Some(LimitProblem::RollingWindowTooShort)
                }
                Period::Rolling(length) if length > MAX_ROLLING => {
                    Some(LimitProblem::RollingWindowTooLong)
                }
                _ => None,
            }
        };
        match problem {
            Some(problem) => Err(PolicyError::InvalidLimit {
                scope: self.scope.clone(),
                problem,
            }),
            None => Ok(()),
        }
    }

    /// Whether a request to `model` counts against this limit.
    pub fn applies_to(&self, model: &str) -> bool {
        match &self.model {
            None => true,
            Some(limited) => model_id::candidates(model).any(|candidate| candidate == *limited),
        }
    }

    /// The counter that holds this limit's usage for the slot starting at `slot_start`.
    /// Distinct limits never share a counter; the amount is not part of the key, so raising a
    /// budget mid-period keeps what was already spent.
    #[cfg(test)]
    pub(crate) fn counter_key(&self, slot_start: UnixMs) -> String {
        slot_key(&self.counter_prefix(), slot_start)
    }

    /// Everything of a counter key but the slot: built once per charge, since a rolling
    /// window has [`ROLLING_BUCKETS`] slots.
    /// `{level}={id}:{metric}:{period}:{model or *}:`, written in one string.
    fn counter_prefix(&self) -> String {
        let mut prefix = String::with_capacity(64);
        prefix.push_str(self.scope.level().key_part());
        prefix.push('=');
        push_escaped_key_part(&mut prefix, self.scope.id());
        prefix.push(':');
        prefix.push_str(self.metric.key_part());
        prefix.push(':');
        self.period.push_key_part(&mut prefix);
        prefix.push(':');
        match &self.model {
            Some(model) => push_escaped_key_part(&mut prefix, model),
            None => prefix.push('*'),
        }
        prefix.push(':');
        prefix
    }

    /// A charge of `amount` against this limit at `now`, for [`crate::counters::Counters`].
    pub fn charge(&self, amount: u64, now: UnixMs) -> Result<Charge, PolicyError> {
        self.validate()?;
        let prefix = self.counter_prefix();
        let slots: Vec<Slot> = self
            .period
            .slots(now)
            .into_iter()
            .map(|(start, leaves_at)| Slot { start, leaves_at })
            .collect();
        let write_leaves_at = slots.last().map_or(now, |slot| slot.leaves_at);
        let write_key = slots
            .last()
            .map_or_else(String::new, |slot| slot_key(&prefix, slot.start));
        Ok(Charge {
            limit: self.clone(),
            amount,
            prefix,
            slots,
            write_key,
            expires_at: write_leaves_at.saturating_add(EXPIRY_SLACK),
            as_of: now,
        })
    }

    /// The noun of a message: `budget`, `token limit`, `request limit`, for a model if filtered.
    fn noun(&self) -> String {
        let noun = match self.metric {
            Metric::Usd => "budget",
            Metric::Tokens => "token limit",
            Metric::Requests => "request limit",
        };
        match &self.model {
            Some(model) => format!("{noun} for `{model}`"),
            None => noun.to_owned(),
        }
    }

    /// The sentence a person reads in a 429: which limit, used, limit, and when it resets.
    pub(crate) fn refusal_message(&self, used: u64, requested: u64, resets_at: UnixMs) -> String {
        let limit = self.metric.format_amount(self.amount);
        let period = self.period.adjective();
        if requested > self.amount {
            return format!(
                "{}'s {period} {} is {limit}; this request needs up to {}, more than the whole limit",
                self.scope,
                self.noun(),
                self.metric.format_amount(requested),
            );
        }
        let when = match self.period {
            Period::Rolling(_) => "capacity frees up from",
            _ => "resets at",
        };
        format!(
            "{} has used {} of its {limit} {period} {}; {when} {resets_at}",
            self.scope,
            self.metric.format_amount(used),
            self.noun(),
        )
    }
}

/// Counter keys separate fields with `:`, so ids are escaped to keep distinct limits distinct.
fn push_escaped_key_part(key: &mut String, part: &str) {
    if part.contains(['%', ':']) {
        key.push_str(&part.replace('%', "%25").replace(':', "%3A"));
    } else {
        key.push_str(part);
    }
}

/// The tenant (as escaped in the key) whose end user a counter key counts, `None` for every
/// other counter: the keys of client-chosen ids, which in-process counters bound per tenant.
pub(crate) fn counter_owner(key: &str) -> Option<&str> {
    let (id, _) = key.strip_prefix("user=")?.split_once(':')?;
    id.split_once('/').map(|(tenant, _)| tenant)
}

pub(crate) fn slot_key(prefix: &str, slot_start: UnixMs) -> String {
    let mut key = String::with_capacity(prefix.len() + 14);
    key.push_str(prefix);
    push_decimal(&mut key, slot_start.0);
    key
}

/// Appends `value` in decimal: a counter key is built for every slot a request is charged to
/// (twelve for a rolling window), so with `itoa`, not the formatting machinery.
pub(crate) fn push_decimal(text: &mut String, value: impl itoa::Integer) {
    text.push_str(itoa::Buffer::new().format(value));
}

/// `$5.00`, `$4.98`, `$1,234.0012`: at least two decimals, no trailing zeros beyond them, exact.
fn format_usd(micros: u64) -> String {
    let mut text = format!("${}.", group_thousands(micros / 1_000_000));
    push_usd_decimals(&mut text, micros);
    text
}

/// Micro-USD as a plain number of dollars, for headers and machines: `5.00`, `4.98`, `0.000125`.
/// Written digit by digit: budget headers carry two on every answer.
pub fn plain_usd(micros: u64) -> String {
    let mut text = String::with_capacity(28);
    push_decimal(&mut text, micros / 1_000_000);
    text.push('.');
    push_usd_decimals(&mut text, micros);
    text
}

/// The cents and below of an amount: at least two digits, no trailing zeros beyond them.
fn push_usd_decimals(text: &mut String, micros: u64) {
    let mut fraction = [b'0'; 6];
    // Below a million: it fits.
    let fraction_micros = i64::try_from(micros % 1_000_000).unwrap_or(0);
    crate::calendar::put_digits(&mut fraction, fraction_micros);
    let significant = fraction
        .iter()
        .rposition(|digit| *digit != b'0')
        .map_or(0, |last| last + 1)
        .max(2);
    text.push_str(std::str::from_utf8(&fraction[..significant]).unwrap_or_default());
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// What a request uses of each metric: its worst case before dispatch, its actual usage after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consumption {
    pub cost: Money,
    /// Input plus output tokens.
    pub tokens: u64,
}

impl Consumption {
    /// The amount counted for `metric`: micro-USD (never negative), tokens, or one request.
    pub fn amount_for(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Usd => u64::try_from(self.cost.micros()).unwrap_or(0),
            Metric::Tokens => self.tokens,
            Metric::Requests => 1,
        }
    }
}

/// One charge per limit that applies to a request to `model`, for its `demand` (worst case),
/// in the order given. Pass every limit of the caller's chain, organisation first, so each
/// level's allocation is drawn down together with its parents'. A limit listed twice is
/// charged once.
pub fn plan_charges<'a>(
    limits: impl IntoIterator<Item = &'a Limit>,
    model: &str,
    demand: &Consumption,
    now: UnixMs,
) -> Result<Vec<Charge>, PolicyError> {
    let mut charges: Vec<Charge> = Vec::new();
    for limit in limits {
        if !limit.applies_to(model) || charges.iter().any(|charge| charge.limit == *limit) {
            continue;
        }
        charges.push(limit.charge(demand.amount_for(limit.metric), now)?);
    }
    Ok(charges)
}
