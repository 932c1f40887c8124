//! OpenAI and OpenAI-compatible servers: `POST {base}/chat/completions` and
//! `POST {base}/embeddings`, bearer credentials.
//!
//! Compatible servers differ from OpenAI in small ways handled here: they take `max_tokens`
//! rather than `max_completion_tokens` (see `sluice_wire::openai::OpenAiFlavor`), may omit the
//! key entirely, and answer errors in shapes of their own (`decode_error` is tolerant).

use secrecy::ExposeSecret;
use sluice_types::{ChatRequest, EmbeddingsRequest};
use sluice_wire::openai as wire;
use sluice_wire::sse::SseEvent;

use crate::clients::{Lease, StreamSlot};
use crate::http_call::{EventDecoder, read_body, send, sse_stream};
use crate::{Completion, Deployment, Embeddings, ProviderError, ProviderKind, Reply, Upstream};

fn flavor(deployment: &Deployment) -> wire::OpenAiFlavor {
    match deployment.kind {
        ProviderKind::OpenAi => wire::OpenAiFlavor::OpenAi,
        _ => wire::OpenAiFlavor::Compatible,
    }
}

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
        .body(body);
    let request = match &deployment.api_key {
        Some(key) => request.bearer_auth(key.expose_secret()),
        None => request,
    };
    Ok((request, slot))
}

pub(crate) async fn chat(
    upstream: &Upstream,
    deployment: &Deployment,
    req: &ChatRequest,
) -> Result<Reply, ProviderError> {
    let options = wire::EncodeOptions {
        model: &deployment.model,
        flavor: flavor(deployment),
    };
    let body = wire::encode_chat_request(req, &options).map_err(ProviderError::Encode)?;
    let (request, slot) = post(upstream, deployment, "/chat/completions", body)?;
    let response = send(upstream, deployment, request, wire::decode_error).await?;
    if req.stream {
        return Ok(Reply::Stream(sse_stream(
            upstream,
            deployment,
            response,
            slot,
            wire::StreamDecoder::new(),
        )));
    }
    let raw = read_body(upstream, deployment, response).await?;
    drop(slot);
    let response = wire::decode_chat_response(&raw).map_err(|e| ProviderError::Malformed {
        provider: deployment.provider.clone(),
        detail: e.to_string(),
    })?;
    Ok(Reply::Complete(Completion { response, raw }))
}

pub(crate) async fn embeddings(
    upstream: &Upstream,
    deployment: &Deployment,
    req: &EmbeddingsRequest,
) -> Result<Embeddings, ProviderError> {
    let body = wire::encode_embeddings_request(req, &deployment.model);
    let (request, slot) = post(upstream, deployment, "/embeddings", body)?;
    let response = send(upstream, deployment, request, wire::decode_error).await?;
    let raw = read_body(upstream, deployment, response).await?;
    drop(slot);
    let parsed: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| ProviderError::Malformed {
            provider: deployment.provider.clone(),
            detail: e.to_string(),
        })?;
    let model = parsed
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_owned);
    Ok(Embeddings {
        usage: wire::embeddings_usage(&raw),
        model,
        raw,
    })
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
