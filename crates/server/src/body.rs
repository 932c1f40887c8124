//! Reading what the client sent: its key and a size-capped body, with failures answered in
//! the caller's dialect and recorded.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use sluice_pipeline::{Caller, Endpoint, Exchange, Gateway, TimeoutOverrides};
use sluice_types::{Dialect, ErrorKind, IdPlace};

use crate::provenance;
use crate::{ApiError, AppState};

// Request headers Sluice reads, named once: a lookup by a static name skips parsing the name.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const FEATURE: HeaderName = HeaderName::from_static("x-sluice-feature");
const END_USER: HeaderName = HeaderName::from_static("x-sluice-user");
const TIMEOUT: HeaderName = HeaderName::from_static("x-sluice-timeout-ms");
const FIRST_TOKEN_TIMEOUT: HeaderName = HeaderName::from_static("x-sluice-first-token-timeout-ms");
const IDLE_TIMEOUT: HeaderName = HeaderName::from_static("x-sluice-idle-timeout-ms");

/// The key as each official SDK sends it: `Authorization: Bearer` on both APIs, and
/// `x-api-key` on the Anthropic ones (older Anthropic SDKs and raw clients).
pub(crate) fn presented_key(headers: &HeaderMap, dialect: Dialect) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match dialect {
        Dialect::OpenAi => bearer,
        Dialect::Anthropic => {
            bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        }
    }
}

/// Reads the whole body, refusing anything over `state.max_body_bytes` and answering 408
/// when it has not all arrived within `state.body_read_timeout` (a client sending it a byte at
/// a time holds a connection and a handler for no longer than that).
pub(crate) async fn read(
    body: Body,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Bytes, ApiError> {
    let timeout = state.body_read_timeout;
    match tokio::time::timeout(timeout, read_capped(body, headers, state.max_body_bytes)).await {
        Ok(read) => read,
        Err(_) => {
            state.connections.body_timed_out();
            Err(ApiError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            ))
        }
    }
}

async fn read_capped(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the {limit} byte limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let over_limit = std::error::Error::source(&e).is_some_and(|s| {
                s.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
            });
            if over_limit {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("could not read the request body: {e}"),
                ))
            }
        }
    }
}

/// Answers an error in the caller's dialect and settles the record with it. The caller's quota
/// state goes along when admission got that far.
pub(crate) fn fail(exchange: Exchange, dialect: Dialect, error: ApiError) -> Response {
    let mut response = error.render(dialect);
    provenance::request_id(response.headers_mut(), &exchange.id.to_string());
    provenance::insert_failure(response.headers_mut(), &exchange);
    crate::quota::insert(response.headers_mut(), exchange.quota());
    exchange.fail(response.status().as_u16(), error.kind);
    response
}

/// [`fail`] for a pipeline error: a refusal also names its limit in the quota headers.
pub(crate) fn fail_pipeline(
    exchange: Exchange,
    dialect: Dialect,
    error: sluice_pipeline::PipelineError,
) -> Response {
    log_failure(&exchange, &error);
    let refusal = match &error {
        sluice_pipeline::PipelineError::Refused { refusal, .. } => Some(refusal.clone()),
        _ => None,
    };
    let mut response = fail(exchange, dialect, error.into());
    if let Some(refusal) = refusal {
        crate::quota::insert_refusal(response.headers_mut(), &refusal);
    }
    response
}

/// [`fail_pipeline`] for a settle that failed: the record came back with its error.
pub(crate) fn fail_unsettled(unsettled: sluice_pipeline::Unsettled, dialect: Dialect) -> Response {
    let (exchange, error) = *unsettled;
    fail_pipeline(exchange, dialect, error)
}

/// Logs a failed request once, here at the edge, with its whole cause chain: a warning when the
/// gateway itself failed, an info line when an upstream did (an outage is also on `/metrics`),
/// a debug line when the client's request was at fault.
fn log_failure(exchange: &Exchange, error: &sluice_pipeline::PipelineError) {
    use sluice_types::{Classify, Origin};
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let kind = error.kind().code();
    match error.origin() {
        Origin::Client => {
            tracing::debug!(request_id = %exchange.id, kind, error = %chain, "request refused")
        }
        Origin::Upstream => {
            tracing::info!(request_id = %exchange.id, kind, error = %chain, "request failed upstream")
        }
        Origin::Gateway => {
            tracing::warn!(request_id = %exchange.id, kind, error = %chain, "request failed")
        }
    }
}

/// What every API handler starts with: the request's record and its authenticated caller.
/// On failure the error response is ready and the record settled.
/// `gateway` is the request's, from [`sluice_pipeline::Gateway::current`].
pub(crate) async fn admit(
    gateway: &Gateway,
    headers: &HeaderMap,
    endpoint: Endpoint,
    dialect: Dialect,
) -> Result<(Exchange, Caller), Response> {
    let mut exchange = gateway.begin(endpoint, dialect);
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    // Client-chosen ids are bounded before they reach the record or a counter key.
    let bounded = |name: &HeaderName, field: &'static str| -> Result<Option<&str>, ApiError> {
        let Some(value) = header(name) else {
            return Ok(None);
        };
        sluice_types::check_client_id(field, IdPlace::Header, value).map_err(|e| {
            let mut error = ApiError::new(ErrorKind::InvalidRequest, e.to_string());
            error.param = Some(field.to_owned());
            error
        })?;
        Ok(Some(value))
    };
    exchange.set_traceparent(header(&TRACEPARENT));
    let feature = bounded(&FEATURE, "x-sluice-feature");
    exchange.set_feature(feature.as_ref().ok().copied().flatten());
    let caller = match gateway.authenticate(presented_key(headers, dialect)).await {
        Ok(caller) => caller,
        Err(e) => return Err(fail_pipeline(exchange, dialect, e)),
    };
    exchange.set_caller(&caller);
    let end_user = match feature.and_then(|_| bounded(&END_USER, "x-sluice-user")) {
        Ok(end_user) => end_user,
        Err(e) => return Err(fail(exchange, dialect, e)),
    };
    // The request's own `user` field, read later, wins over this header.
    exchange.set_end_user(end_user);
    Ok((exchange, caller))
}

/// [`admit`], then the size-capped body.
pub(crate) async fn admit_with_body(
    state: &AppState,
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
    dialect: Dialect,
) -> Result<(Exchange, Caller, Bytes), Response> {
    let (exchange, caller) = admit(gateway, headers, endpoint, dialect).await?;
    match read(body, headers, state).await {
        Ok(bytes) => Ok((exchange, caller, bytes)),
        Err(e) => Err(fail(exchange, dialect, e)),
    }
}

/// Timeouts a request asks for, each in milliseconds: `x-sluice-timeout-ms` (the whole
/// request), `x-sluice-first-token-timeout-ms` and `x-sluice-idle-timeout-ms` (per attempt).
/// They can only shorten the route's.
pub(crate) fn timeout_overrides(headers: &HeaderMap) -> Result<TimeoutOverrides, ApiError> {
    let read = |name: &HeaderName| -> Result<Option<std::time::Duration>, ApiError> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(ms) if ms > 0 => Ok(Some(std::time::Duration::from_millis(ms))),
            _ => Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!("header `{name}` must be a whole number of milliseconds greater than 0"),
            )),
        }
    };
    Ok(TimeoutOverrides {
        total: read(&TIMEOUT)?,
        first_token: read(&FIRST_TOKEN_TIMEOUT)?,
        idle: read(&IDLE_TIMEOUT)?,
    })
}
