//! Anthropic routes: messages and token counting.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use sluice_pipeline::Endpoint;
use sluice_types::Dialect;

use crate::{AppState, body, chat, json_response, provenance};

pub(crate) async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    chat::handle(state, headers, request, Dialect::Anthropic).await
}

/// `POST /v1/messages/count_tokens`: the provider's own count when it has an endpoint for it,
/// otherwise the gateway's estimate, flagged by `x-sluice-token-count: estimated`.
pub(crate) async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let dialect = Dialect::Anthropic;
    let gateway = state.gateway.current();
    let (mut exchange, caller, bytes) = match body::admit_with_body(
        &state,
        &gateway,
        &headers,
        request,
        Endpoint::CountTokens,
        dialect,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let request = match sluice_wire::anthropic::decode_count_tokens_request(&bytes) {
        Ok(request) => request,
        Err(e) => return body::fail(exchange, dialect, e.into()),
    };
    let request = sluice_pipeline::tokens::CountTokens(request);
    let overrides = sluice_pipeline::TimeoutOverrides::default();
    let dispatched = match gateway
        .run(&mut exchange, &caller, request, overrides)
        .await
    {
        Ok(dispatched) => dispatched,
        Err(e) => return body::fail_pipeline(exchange, dialect, e),
    };
    match gateway.settle_count(exchange, dispatched) {
        Ok((count, provenance)) => {
            let body = serde_json::json!({ "input_tokens": count.input_tokens }).to_string();
            let mut response = json_response(Bytes::from(body));
            provenance::insert_all(response.headers_mut(), &provenance);
            if count.estimated {
                response.headers_mut().insert(
                    "x-sluice-token-count",
                    HeaderValue::from_static("estimated"),
                );
            }
            response
        }
        Err(unsettled) => body::fail_unsettled(unsettled, dialect),
    }
}
