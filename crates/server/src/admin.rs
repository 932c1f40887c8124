//! The admin API under `/admin/v1`: budgets (list with current usage, set, delete), usage
//! reports, and the active configuration's identity (`/config`), for operators, `sluice
//! budgets show` and `sluice status`.
//!
//! It is authenticated apart from client keys: `Authorization: Bearer <admin token>`, the
//! token from the environment variable `[admin] token_env` names, compared in constant time
//! (a client key is never an admin token). Without a token configured every admin route
//! answers 404 saying how to turn the API on. Errors are in our own shape
//! ([`crate::error::AdminError`]), not a client dialect's.
//!
//! Handlers stay thin: validation, storage and reloading the gateway's limits are
//! `sluice_pipeline::budgets`'s; the sums are `sluice_store::usage`'s.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sluice_store::{BudgetRow, DrillRecords, UsageDimension, UsageQuery};
use sluice_types::ErrorKind;

use crate::error::AdminError;
use crate::{AppState, json_response};

/// The admin token as the server keeps it: its SHA-256 digest, so that a comparison takes the
/// same time whatever the presented token (both sides are hashed to 32 bytes, then compared
/// byte by byte without stopping early), and the plaintext is not copied with every request's
/// state.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &SecretString) -> AdminToken {
        AdminToken(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ.
    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .zip(presented.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Where the routes are mounted; handlers see paths without it.
pub(crate) const PREFIX: &str = "/admin/v1";

/// The usage report's span when the query names no `since`: the last 30 days, as `sluice
/// usage` reports by default.
const DEFAULT_USAGE_SPAN_MS: i64 = 30 * 86_400_000;

/// The routes, to be nested under `/admin/v1`; every one behind [`authenticate`].
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/budgets",
            get(list_budgets)
                .put(put_budget)
                .delete(delete_budgets)
                .fallback(method_not_allowed),
        )
        .route("/usage", get(usage).fallback(method_not_allowed))
        .route("/config", get(config).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Lets a request through only with the admin token; answers 404 when the API is off.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Whether `headers` carry the admin token: `Ok` if so; otherwise the error to answer (404 when
/// the admin API is off, 401 for a missing or wrong token).
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(token) = &state.admin_token else {
        return Err(AdminError::new(
            ErrorKind::UnknownPath,
            "the admin API is off: set `[admin] token_env` in the configuration to the name of \
             an environment variable holding a token of at least 24 characters, then restart",
        )
        .with_code("admin_api_disabled"));
    };
    match bearer(headers) {
        Some(presented) if token.matches(presented) => Ok(()),
        Some(_) => Err(
            AdminError::new(ErrorKind::Unauthenticated, "invalid admin token")
                .with_code("invalid_admin_token"),
        ),
        None => Err(AdminError::new(
            ErrorKind::Unauthenticated,
            "missing admin token: send it as `Authorization: Bearer <token>` (the value of the \
             variable `[admin] token_env` names)",
        )
        .with_code("invalid_admin_token")),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// `GET /admin/v1/budgets`: every limit with `used` in its current window.
async fn list_budgets(State(state): State<AppState>) -> Result<Response, AdminError> {
    let statuses = state.gateway.budget_status().await?;
    json(&statuses)
}

/// `PUT /admin/v1/budgets`: a budget row as JSON, validated, stored and in force at once.
async fn put_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    let bytes: Bytes = crate::body::read(body, &headers, &state)
        .await
        .map_err(|e| AdminError::new(e.kind, e.message))?;
    let row: BudgetRow = serde_json::from_slice(&bytes).map_err(|e| {
        AdminError::new(
            ErrorKind::InvalidRequest,
            format!(
                "the body is not a budget row ({e}); expected {{\"scope\": \"team:ID\", \
                 \"metric\": \"usd|tokens|requests\", \"period\": \"day|week|month|60s...\", \
                 \"amount\": N}}"
            ),
        )
    })?;
    let stored = state.gateway.put_budget(row).await?;
    json(&stored)
}

/// `DELETE /admin/v1/budgets?scope=..[&metric=..&period=..]`.
async fn delete_budgets(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, AdminError> {
    let one = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(scope) = one("scope") else {
        return Err(AdminError::new(
            ErrorKind::InvalidRequest,
            "name the limits to delete: `?scope=team:ID`, and optionally `&metric=..&period=..`",
        ));
    };
    let metric_and_period = match (one("metric"), one("period")) {
        (None, None) => None,
        (Some(metric), Some(period)) => Some((metric, period)),
        _ => {
            return Err(AdminError::new(
                ErrorKind::InvalidRequest,
                "give `metric` and `period` together, or neither (every limit of the scope)",
            ));
        }
    };
    let deleted = state
        .gateway
        .delete_budgets(scope, metric_and_period)
        .await?;
    if deleted == 0 {
        return Err(
            AdminError::new(ErrorKind::NotFound, format!("no budget matches `{scope}`"))
                .with_code("budget_not_found"),
        );
    }
    json(&serde_json::json!({ "deleted": deleted }))
}

/// `GET /admin/v1/usage?by=team&by=feature&since=..&until=..&drills=true`.
async fn usage(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, AdminError> {
    let query = usage_query(&params, sluice_store::now_ms())?;
    let rows = state.gateway.usage_report(&query).await.map_err(|e| {
        tracing::error!(error = %e, "usage report failed");
        AdminError::new(ErrorKind::Internal, "the usage report failed")
    })?;
    json(&rows)
}

/// `GET /admin/v1/config`: which configuration is in force (see [`config_detail`]).
async fn config(State(state): State<AppState>) -> Response {
    json_response(Bytes::from(
        config_detail(&state.gateway.current()).to_string(),
    ))
}

/// The active configuration: its file, the SHA-256 of the file's bytes (hex), when it was
/// loaded (RFC 3339), and the reloads since start (swapped in, and refused as invalid).
pub(crate) fn config_detail(gateway: &sluice_pipeline::Gateway) -> serde_json::Value {
    let source = gateway.config_source();
    let reloads = gateway.reloads();
    let loaded_at = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(source.loaded_at_ms) * 1_000_000,
    )
    .ok()
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    });
    serde_json::json!({
        "path": source.path.as_ref().map(|p| p.display().to_string()),
        "sha256": (!source.sha256.is_empty()).then_some(&source.sha256),
        "loaded_at": loaded_at,
        "reloads": reloads.ok,
        "reloads_refused": reloads.refused,
    })
}

/// Reads the usage query string: `by` (repeatable; default `team`), `since` and `until` (Unix
/// milliseconds or RFC 3339; `since` defaults to 30 days ago), `drills` (`true` counts them).
fn usage_query(params: &[(String, String)], now_ms: i64) -> Result<UsageQuery, AdminError> {
    let invalid = |message: String| AdminError::new(ErrorKind::InvalidRequest, message);
    let mut query = UsageQuery {
        since_ms: Some(now_ms.saturating_sub(DEFAULT_USAGE_SPAN_MS)),
        ..UsageQuery::default()
    };
    for (name, value) in params {
        match name.as_str() {
            "by" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let dimension: UsageDimension =
                        part.parse().map_err(|e| invalid(format!("by: {e}")))?;
                    query.by.push(dimension);
                }
            }
            "since" => query.since_ms = Some(parse_time(value).map_err(invalid)?),
            "until" => query.until_ms = Some(parse_time(value).map_err(invalid)?),
            "drills" => {
                query.drills = match value.as_str() {
                    "true" | "1" => DrillRecords::Include,
                    "false" | "0" => DrillRecords::Exclude,
                    other => {
                        return Err(invalid(format!("drills: `{other}` is not true or false")));
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown parameter `{other}` (by, since, until, drills)"
                )));
            }
        }
    }
    if query.by.is_empty() {
        query.by.push(UsageDimension::Team);
    }
    Ok(query)
}

/// Unix milliseconds, or an RFC 3339 time.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| {
            format!(
                "`{text}` is neither Unix milliseconds nor an RFC 3339 time (2026-03-01T12:00:00Z)"
            )
        })
}

async fn not_found(request: Request) -> AdminError {
    AdminError::new(
        ErrorKind::UnknownPath,
        format!(
            "no admin route for {} {PREFIX}{} (routes: /budgets, /usage, /config)",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    let mut response = AdminError::new(
        ErrorKind::UnknownPath,
        format!(
            "{} is not allowed on {PREFIX}{}",
            request.method(),
            request.uri().path()
        ),
    )
    .with_code("method_not_allowed")
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

fn json(value: &impl serde::Serialize) -> Result<Response, AdminError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        tracing::error!(error = %e, "encoding an admin answer failed");
        AdminError::new(ErrorKind::Internal, "encoding the answer failed")
    })?;
    Ok(json_response(Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_token_matches_only_itself() {
        let token = AdminToken::new(&SecretString::from("a-token-of-enough-characters"));
        assert!(token.matches("a-token-of-enough-characters"));
        assert!(!token.matches("a-token-of-enough-characterz"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn usage_queries_default_to_team_over_thirty_days() {
        let now = 100 * 86_400_000;
        let query = usage_query(&[], now).unwrap();
        assert_eq!(query.by, [UsageDimension::Team]);
        assert_eq!(query.since_ms, Some(70 * 86_400_000));
        assert_eq!(
            (query.until_ms, query.drills),
            (None, DrillRecords::Exclude)
        );

        let query = usage_query(
            &params(&[
                ("by", "feature"),
                ("by", "model,key"),
                ("since", "2026-03-01T00:00:00Z"),
                ("until", "1772409600000"),
                ("drills", "true"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            query.by,
            [
                UsageDimension::Feature,
                UsageDimension::Model,
                UsageDimension::Key
            ]
        );
        assert_eq!(query.since_ms, Some(1_772_323_200_000));
        assert_eq!(query.until_ms, Some(1_772_409_600_000));
        assert_eq!(query.drills, DrillRecords::Include);
    }

    #[test]
    fn bad_usage_parameters_are_named() {
        for (pairs, expected) in [
            (
                vec![("by", "galaxy")],
                "by: `galaxy` is not something usage",
            ),
            (vec![("since", "yesterday")], "`yesterday` is neither"),
            (vec![("drills", "maybe")], "drills: `maybe`"),
            (vec![("team", "qa")], "unknown parameter `team`"),
        ] {
            let error = usage_query(&params(&pairs), 0).unwrap_err();
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }
}
