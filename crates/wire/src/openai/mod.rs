//! The OpenAI Chat Completions dialect (also spoken by vLLM, Ollama, llama.cpp and friends).
//!
//! - [`request`]: `POST /v1/chat/completions` bodies, both directions.
//! - [`response`]: `chat.completion` objects, both directions.
//! - [`stream`]: `chat.completion.chunk` SSE streams, both directions.
//! - [`error`]: `{"error":{...}}` bodies.
//! - [`embeddings`]: `/v1/embeddings` pass-through helpers.
//!
//! # Decoding a client request
//!
//! Every documented parameter is modelled; any other top-level field (`logit_bias`, `store`,
//! `reasoning_effort`, `service_tier`, `prediction`, ...) is kept verbatim in `extras`
//! (dialect OpenAI) unless it is `null`. System and developer messages stay in `messages` where
//! the client put them. A `tool` message becomes a `Role::Tool` message holding one
//! `Part::ToolResult`. `max_tokens` and `max_completion_tokens` both map to `max_tokens`
//! (`max_completion_tokens` wins when both are set). `image_url` parts with a base64 `data:` URL
//! become `ImageSource::Base64`, other URLs `ImageSource::Url`. An assistant `refusal` (field or
//! part) in the history becomes a text part: the canonical request has no refusal slot.
//! Refused as unsupported: `input_audio` and `file` parts, assistant `audio` and `function_call`,
//! the `function` role, custom tools and `allowed_tools` tool choices. Unknown keys inside
//! messages and parts (e.g. `prompt_cache_breakpoint`) are ignored.
//!
//! # Encoding an upstream request
//!
//! - `max_tokens` goes out as `max_completion_tokens` ([`OpenAiFlavor::OpenAi`]) or
//!   `max_tokens` ([`OpenAiFlavor::Compatible`]); `developer` messages go out as `system` for
//!   compatible servers, which rarely know the role.
//! - A streaming request always carries `stream_options.include_usage = true`: the gateway
//!   needs usage to settle, whatever the client asked for.
//! - Top-level `system` (from Anthropic) becomes a leading system message.
//! - An assistant turn that only calls tools goes out with `content: ""`, never `null`:
//!   llama.cpp-based and other strict servers reject `null` (OpenAI accepts both).
//! - Tool results become separate `role: tool` messages; other parts of the same canonical
//!   message go into a `user` message, in order. OpenAI has no error flag on tool results:
//!   `is_error` is dropped and the text kept. Images inside tool results are refused.
//! - Refused: `top_k` and extras from another dialect (Anthropic `thinking`, ...). Image
//!   sources that are not base64 or a URL cannot occur.
//! - Dropped (no effect on the output): `cache_control` markers.

pub mod embeddings;
pub mod error;
pub mod request;
pub mod response;
pub mod stream;

pub use embeddings::{decode_embeddings_request, embeddings_usage, encode_embeddings_request};
pub use error::{decode_error, encode_error};
pub use request::{decode_chat_request, encode_chat_request};
pub use response::{decode_chat_response, encode_chat_response};
pub use stream::{StreamDecoder, StreamEncoder};

pub use crate::UpstreamError;

/// Which kind of OpenAI-compatible server a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenAiFlavor {
    /// api.openai.com (and Azure OpenAI): `max_completion_tokens`, `developer` role.
    #[default]
    OpenAi,
    /// vLLM, Ollama, llama.cpp, LM Studio, ...: `max_tokens`, `system` instead of `developer`.
    Compatible,
}

/// How to encode an upstream request.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions<'a> {
    /// The deployment's model name, replacing the client's alias.
    pub model: &'a str,
    pub flavor: OpenAiFlavor,
}
