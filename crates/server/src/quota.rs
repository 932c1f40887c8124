//! Quota headers (PRODUCT §5): every answer to a caller under budgets or rate limits says what
//! is left of them, and a refusal says which limit refused.
//!
//! - `x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests` and the same for
//!   `-tokens`: the tightest request and token limits (OpenAI's header names; the reset is a
//!   duration such as `42s`).
//! - `x-sluice-budget-limit`, `-remaining` (USD), `-reset` (RFC 3339), `-scope`: the tightest
//!   spend budget.
//! - `x-sluice-soft-limit`: the soft limit the caller is over; `x-sluice-degraded-to`: the
//!   cheaper alias that served instead of the one asked for.
//!
//! Remaining amounts are as of admission, with this request's worst case reserved.

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_pipeline::QuotaState;
use sluice_policy::{Clock, Metric, Quota, Refusal, SystemClock, UnixMs, plain_usd};

pub(crate) const SOFT_LIMIT: HeaderName = HeaderName::from_static("x-sluice-soft-limit");
pub(crate) const DEGRADED_TO: HeaderName = HeaderName::from_static("x-sluice-degraded-to");

/// `x-ratelimit-{limit,remaining,reset}-{unit}` of one unit.
struct RateHeaders {
    limit: HeaderName,
    remaining: HeaderName,
    reset: HeaderName,
}

const REQUESTS: RateHeaders = RateHeaders {
    limit: HeaderName::from_static("x-ratelimit-limit-requests"),
    remaining: HeaderName::from_static("x-ratelimit-remaining-requests"),
    reset: HeaderName::from_static("x-ratelimit-reset-requests"),
};
const TOKENS: RateHeaders = RateHeaders {
    limit: HeaderName::from_static("x-ratelimit-limit-tokens"),
    remaining: HeaderName::from_static("x-ratelimit-remaining-tokens"),
    reset: HeaderName::from_static("x-ratelimit-reset-tokens"),
};
const BUDGET_LIMIT: HeaderName = HeaderName::from_static("x-sluice-budget-limit");
const BUDGET_REMAINING: HeaderName = HeaderName::from_static("x-sluice-budget-remaining");
const BUDGET_RESET: HeaderName = HeaderName::from_static("x-sluice-budget-reset");
const BUDGET_SCOPE: HeaderName = HeaderName::from_static("x-sluice-budget-scope");

/// The most headers [`insert`] adds for `state`: three per rate-limit unit, four for the
/// budget, the soft limit and the alias degraded to.
pub(crate) fn most_headers(state: &QuotaState) -> usize {
    if state.quotas.is_empty() && state.over_soft_limit.is_none() {
        0
    } else {
        3 + 3 + 4 + 2
    }
}

/// The quota headers of an admitted request.
pub(crate) fn insert(headers: &mut HeaderMap, state: &QuotaState) {
    if state.quotas.is_empty() && state.over_soft_limit.is_none() {
        return;
    }
    let now = SystemClock.now();
    for metric in [Metric::Requests, Metric::Tokens, Metric::Usd] {
        let tightest = state
            .quotas
            .iter()
            .filter(|quota| quota.limit.metric == metric)
            .min_by_key(|quota| quota.remaining());
        if let Some(quota) = tightest {
            insert_limit(headers, quota, quota.remaining(), now);
        }
    }
    if let Some(soft) = &state.over_soft_limit {
        let mut text = format!(
            "{} {} {}",
            soft.scope.to_text(),
            soft.metric.as_str(),
            soft.period.to_text()
        );
        if let Some(model) = &soft.model {
            text.push_str(" model=");
            text.push_str(model);
        }
        put(headers, SOFT_LIMIT, &text);
    }
    if let Some(alias) = &state.degraded_to {
        put(headers, DEGRADED_TO, alias);
    }
}

/// The headers of the limit that refused a request.
pub(crate) fn insert_refusal(headers: &mut HeaderMap, refusal: &Refusal) {
    let quota = Quota {
        limit: refusal.limit.clone(),
        used: refusal.used,
        resets_at: refusal.resets_at,
    };
    insert_limit(headers, &quota, refusal.remaining(), SystemClock.now());
}

fn insert_limit(headers: &mut HeaderMap, quota: &Quota, remaining: u64, now: UnixMs) {
    let limit = &quota.limit;
    let names = match limit.metric {
        Metric::Requests => &REQUESTS,
        Metric::Tokens => &TOKENS,
        Metric::Usd => {
            put(headers, BUDGET_LIMIT, &plain_usd(limit.amount));
            put(headers, BUDGET_REMAINING, &plain_usd(remaining));
            put(headers, BUDGET_RESET, &quota.resets_at.to_string());
            put(headers, BUDGET_SCOPE, &limit.scope.to_text());
            return;
        }
    };
    let reset_secs = now.until(quota.resets_at).as_millis().div_ceil(1_000);
    headers.insert(names.limit.clone(), HeaderValue::from(limit.amount));
    headers.insert(names.remaining.clone(), HeaderValue::from(remaining));
    let mut reset = reset_secs.to_string();
    reset.push('s');
    put(headers, names.reset.clone(), &reset);
}

/// Scope ids come from keys and requests; one that is not a valid header value is left out.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_policy::{Limit, Period, Scope};
    use sluice_types::Money;

    #[test]
    fn the_tightest_limit_of_each_metric_is_reported() {
        let limit = |scope: Scope, amount| Limit::requests_per_minute(scope, amount).unwrap();
        let state = QuotaState {
            quotas: vec![
                Quota {
                    limit: limit(Scope::Team("a".into()), 100),
                    used: 10,
                    resets_at: UnixMs(SystemClock.now().0 + 30_000),
                },
                Quota {
                    limit: limit(Scope::EndUser("ana".into()), 5),
                    used: 3,
                    resets_at: UnixMs(SystemClock.now().0 + 5_000),
                },
            ],
            over_soft_limit: None,
            degraded_to: None,
        };
        let mut headers = HeaderMap::new();
        insert(&mut headers, &state);
        assert_eq!(headers["x-ratelimit-limit-requests"], "5");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "2");
        let reset = headers["x-ratelimit-reset-requests"].to_str().unwrap();
        assert!(reset == "5s" || reset == "4s", "{reset}");
        assert!(!headers.contains_key("x-ratelimit-limit-tokens"));
        assert!(!headers.contains_key("x-sluice-budget-remaining"));
    }

    #[test]
    fn a_spend_limit_is_reported_in_plain_dollars() {
        let budget = Money::from_micros(5_000_000);
        let state = QuotaState {
            quotas: vec![Quota {
                limit: Limit::usd(Scope::Team("a".into()), budget, Period::Day).unwrap(),
                used: 20_000,
                resets_at: UnixMs(SystemClock.now().0 + 30_000),
            }],
            over_soft_limit: None,
            degraded_to: None,
        };
        let mut headers = HeaderMap::new();
        insert(&mut headers, &state);
        assert_eq!(headers["x-sluice-budget-limit"], "5.00");
        assert_eq!(headers["x-sluice-budget-remaining"], "4.98");
        assert_eq!(headers["x-sluice-budget-scope"], "team:a");
    }
}
