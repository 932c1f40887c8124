//! OpenAI routes: chat completions and embeddings.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use sluice_pipeline::Endpoint;
use sluice_types::Dialect;

use crate::{AppState, body, chat, json_response, provenance};

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    chat::handle(state, headers, request, Dialect::OpenAi).await
}

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let dialect = Dialect::OpenAi;
    let gateway = state.gateway.current();
    let (mut exchange, caller, bytes) = match body::admit_with_body(
        &state,
        &gateway,
        &headers,
        request,
        Endpoint::Embeddings,
        dialect,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    exchange.offer_request_body(bytes.clone());
    let request = match sluice_wire::openai::decode_embeddings_request(&bytes) {
        Ok(request) => request,
        Err(e) => return body::fail(exchange, dialect, e.into()),
    };
    let overrides = match body::timeout_overrides(&headers) {
        Ok(overrides) => overrides,
        Err(e) => return body::fail(exchange, dialect, e),
    };
    let dispatched = match gateway
        .run(&mut exchange, &caller, request, overrides)
        .await
    {
        Ok(dispatched) => dispatched,
        Err(e) => return body::fail_pipeline(exchange, dialect, e),
    };
    match gateway.settle_embeddings(exchange, dispatched) {
        Ok((embeddings, provenance)) => {
            let mut response = json_response(embeddings.raw);
            provenance::insert_all(response.headers_mut(), &provenance);
            response
        }
        Err(unsettled) => body::fail_unsettled(unsettled, dialect),
    }
}
