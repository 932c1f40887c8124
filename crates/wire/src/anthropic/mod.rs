//! The Anthropic Messages dialect.
//!
//! - [`request`]: `POST /v1/messages` and `/v1/messages/count_tokens` bodies, both directions.
//! - [`response`]: `message` objects, both directions.
//! - [`stream`]: the `message_start` ... `message_stop` event sequence, both directions.
//! - [`error`]: `{"type":"error","error":{...}}` bodies.
//!
//! # Decoding a client request
//!
//! `system` (string or text blocks, with `cache_control`) becomes `ChatRequest::system`.
//! `tool_use` blocks become `Part::ToolCall` with `input` rendered as compact JSON text.
//! **A user message is split at tool results**: each run of `tool_result` blocks becomes a
//! `Role::Tool` message and each run of other blocks a `Role::User` message, in the original
//! order, so the canonical form looks the same whichever dialect a conversation came from (the
//! encoders on both sides also accept tool results inside user messages). A `cache_control` on a
//! `tool_result` block moves to the last text part of its content (and back when encoding);
//! `cache_control` on image and `tool_use` blocks is dropped (caching only, no effect on
//! output). `tool_choice.disable_parallel_tool_use` maps to `parallel_tool_calls`
//! (`true` -> `Some(false)`), `metadata.user_id` to `user`. Other top-level fields (`thinking`,
//! `service_tier`, `output_config`, ...) are kept in `extras` (dialect Anthropic). Refused as
//! unsupported: `document`, `thinking`, `redacted_thinking`, `search_result` and server-tool
//! blocks, file image sources, server tools (any tool `type` other than `custom`) and
//! `metadata` keys other than `user_id`.
//!
//! # Encoding an upstream request
//!
//! - System and developer messages, wherever they are, are hoisted into top-level `system`
//!   (after `ChatRequest::system`), one text block each: Anthropic has no mid-conversation
//!   system turn, so instructions given late apply to the whole conversation.
//! - Roles map to `user` (user and tool) and `assistant`, and consecutive messages of the same
//!   role merge, since Anthropic requires strict alternation. Empty text parts are dropped.
//! - Images: base64 -> `base64` source, `https:` URLs -> `url` source; other URLs are refused.
//!   `detail` is dropped (a resolution hint Anthropic does not have).
//! - Tool-call arguments must be a JSON object (`""` counts as `{}`), else refused.
//! - `stop` -> `stop_sequences`; `user` -> `metadata.user_id`; missing `max_tokens` ->
//!   [`EncodeOptions::default_max_tokens`]; `tool_choice` required -> `any`, named -> `tool`;
//!   `parallel_tool_calls: false` -> `disable_parallel_tool_use: true` on the tool choice (an
//!   `auto` choice is added when there is none and tools are present).
//! - `response_format: json_schema` becomes a forced tool (`tools: [{name, description,
//!   input_schema}]`, `tool_choice: {type: tool, name}`) and [`Encoded::structured_output_tool`]
//!   names it, so the response and stream decoders turn that tool call back into plain JSON text
//!   with finish reason `EndTurn`. Refused when the request has tools of its own (the error
//!   says to drop them or use an OpenAI-dialect deployment). The schema's
//!   `strict` is not forwarded (adherence is the forced tool's, best effort).
//! - Refused: `n > 1`, `logprobs: true`, `top_logprobs > 0`, `seed`, non-zero presence or
//!   frequency penalty, `temperature > 1` (Anthropic's range is 0..=1),
//!   `response_format: json_object`, and extras from another dialect.
//! - Dropped (no effect on the output): OpenAI `metadata`, message `name`, image `detail`,
//!   `include_usage` (Anthropic streams always carry usage).

mod blocks;
pub mod error;
pub mod request;
pub mod response;
pub mod stream;

pub use error::{decode_error, encode_error};
pub use request::{
    decode_chat_request, decode_count_tokens_request, encode_chat_request,
    encode_count_tokens_request,
};
pub use response::{decode_chat_response, decode_chat_response_with, encode_chat_response};
pub use stream::{StreamDecoder, StreamEncoder};

pub use crate::UpstreamError;

/// How to encode an upstream request.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions<'a> {
    /// The deployment's model name, replacing the client's alias.
    pub model: &'a str,
    /// `max_tokens` to send when the request has none (Anthropic requires it).
    pub default_max_tokens: u32,
}

/// An encoded upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub body: Vec<u8>,
    /// The forced tool standing in for `response_format: json_schema`. Pass it to
    /// [`decode_chat_response_with`] or [`StreamDecoder::new`] so its call comes back as text.
    pub structured_output_tool: Option<String>,
}
