//! Anthropic Messages: `POST {base}/messages` and `POST {base}/messages/count_tokens`, with
//! `x-api-key` and a pinned `anthropic-version`.
//!
//! Structured output requested in the OpenAI way (`response_format: json_schema`) is sent as a
//! forced tool call; the wire translation turns that tool call back into text on the way out.

use secrecy::ExposeSecret;
use sluice_types::ChatRequest;
use sluice_wire::anthropic as wire;
use sluice_wire::sse::SseEvent;

use crate::clients::{Lease, StreamSlot};
use crate::http_call::{EventDecoder, read_body, send, sse_stream};
use crate::{Completion, Deployment, ProviderError, Reply, Upstream};

/// The API version Sluice's translation is written against.
const API_VERSION: &str = "2023-06-01";

fn post(
    upstream: &Upstream,
    deployment: &Deployment,
    path: &'static str,
    body: Vec<u8>,
) -> Result<(reqwest::RequestBuilder, StreamSlot), ProviderError> {
    let Lease { client, slot } = upstream.lease(deployment)?;
    let request = client
        .post(deployment.base_url.join(path))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("anthropic-version", API_VERSION)
        .body(body);
    let request = match &deployment.api_key {
        Some(key) => request.header("x-api-key", key.expose_secret()),
        None => request,
    };
    Ok((request, slot))
}

fn malformed(deployment: &Deployment, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Malformed {
        provider: deployment.provider.clone(),
        detail: e.to_string(),
    }
}

pub(crate) async fn chat(
    upstream: &Upstream,
    deployment: &Deployment,
    req: &ChatRequest,
) -> Result<Reply, ProviderError> {
    let options = wire::EncodeOptions {
        model: &deployment.model,
        default_max_tokens: deployment.default_max_tokens,
    };
    let encoded = wire::encode_chat_request(req, &options).map_err(ProviderError::Encode)?;
    let (request, slot) = post(upstream, deployment, "/messages", encoded.body)?;
    let response = send(upstream, deployment, request, wire::decode_error).await?;
    if req.stream {
        let decoder = wire::StreamDecoder::new(encoded.structured_output_tool);
        return Ok(Reply::Stream(sse_stream(
            upstream, deployment, response, slot, decoder,
        )));
    }
    let raw = read_body(upstream, deployment, response).await?;
    drop(slot);
    let response = wire::decode_chat_response_with(&raw, encoded.structured_output_tool.as_deref())
        .map_err(|e| malformed(deployment, e))?;
    Ok(Reply::Complete(Completion { response, raw }))
}

pub(crate) async fn count_tokens(
    upstream: &Upstream,
    deployment: &Deployment,
    req: &ChatRequest,
) -> Result<u32, ProviderError> {
    let body =
        wire::encode_count_tokens_request(req, &deployment.model).map_err(ProviderError::Encode)?;
    let (request, slot) = post(upstream, deployment, "/messages/count_tokens", body)?;
    let response = send(upstream, deployment, request, wire::decode_error).await?;
    let raw = read_body(upstream, deployment, response).await?;
    drop(slot);
    let parsed: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| malformed(deployment, e))?;
    parsed
        .get("input_tokens")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| malformed(deployment, "count_tokens answer has no input_tokens"))
}

impl EventDecoder for wire::StreamDecoder {
    fn decode(
        &mut self,
        event: &SseEvent,
    ) -> Result<Vec<sluice_types::StreamEvent>, sluice_wire::WireError> {
        wire::StreamDecoder::decode(self, event)
    }
    fn is_done(&self) -> bool {
        wire::StreamDecoder::is_done(self)
    }
}
