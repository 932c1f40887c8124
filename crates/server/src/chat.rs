//! The chat flow shared by `/v1/chat/completions` and `/v1/messages`: authenticate, decode the
//! caller's dialect, run the pipeline, answer in the caller's dialect.

use axum::response::Response;
use http::HeaderMap;
use sluice_pipeline::{Endpoint, Settled};
use sluice_types::Dialect;

use crate::{AppState, body, json_response, provenance, stream};

pub(crate) async fn handle(
    state: AppState,
    headers: HeaderMap,
    request_body: axum::body::Body,
    dialect: Dialect,
) -> Response {
    let endpoint = match dialect {
        Dialect::OpenAi => Endpoint::ChatCompletions,
        Dialect::Anthropic => Endpoint::Messages,
    };
    // The configuration this request runs on, from here to the end of its answer.
    let gateway = state.gateway.current();
    let (mut exchange, caller, bytes) =
        match body::admit_with_body(&state, &gateway, &headers, request_body, endpoint, dialect)
            .await
        {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    exchange.offer_request_body(bytes.clone());
    let decoded = match dialect {
        Dialect::OpenAi => sluice_wire::openai::decode_chat_request(&bytes),
        Dialect::Anthropic => sluice_wire::anthropic::decode_chat_request(&bytes),
    };
    let request = match decoded {
        Ok(request) => request,
        Err(e) => return body::fail(exchange, dialect, e.into()),
    };
    let overrides = match body::timeout_overrides(&headers) {
        Ok(overrides) => overrides,
        Err(e) => return body::fail(exchange, dialect, e),
    };
    let include_usage = request.include_usage;
    let dispatched = match gateway
        .run(&mut exchange, &caller, request, overrides)
        .await
    {
        Ok(dispatched) => dispatched,
        Err(e) => return body::fail_pipeline(exchange, dialect, e),
    };
    match gateway.settle(exchange, dispatched) {
        Err(unsettled) => body::fail_unsettled(unsettled, dialect),
        Ok(Settled::Complete {
            completion,
            provenance,
        }) => {
            let body = if provenance.passthrough {
                completion.raw
            } else {
                match dialect {
                    Dialect::OpenAi => {
                        sluice_wire::openai::encode_chat_response(&completion.response)
                    }
                    Dialect::Anthropic => {
                        sluice_wire::anthropic::encode_chat_response(&completion.response)
                    }
                }
                .into()
            };
            let mut response = json_response(body);
            provenance::insert_all(response.headers_mut(), &provenance);
            response
        }
        Ok(Settled::Stream { stream, provenance }) => {
            stream::respond(stream, &provenance, dialect, include_usage)
        }
    }
}
