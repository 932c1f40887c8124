//! The canonical chat request, response and stream events.
//!
//! Every ingress dialect decodes into these types and every provider encodes from them, so a
//! translation is always `dialect A -> canonical -> dialect B`. The canonical form models every
//! parameter Sluice can carry across dialects; top-level fields it does not model are kept in
//! [`Extras`] and forwarded only to a provider of the same dialect (elsewhere they are refused,
//! never dropped).

use serde_json::{Map, Value};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    /// OpenAI's `developer` role: system-level instructions from the application.
    Developer,
    User,
    Assistant,
    /// A message carrying tool results (OpenAI `role: tool`).
    Tool,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// An `https:` URL.
    Url(String),
    /// Inline data: `media_type` like `image/png` and base64 `data`.
    Base64 { media_type: String, data: String },
}

/// One piece of message content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
        /// Anthropic prompt-cache marker, kept verbatim (`{"type":"ephemeral"}`).
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
        /// OpenAI `detail` (`auto`, `low`, `high`).
        detail: Option<String>,
    },
    /// A tool call made by the assistant.
    ToolCall(ToolCall),
    /// The result of a tool call, sent back by the client.
    ToolResult {
        tool_call_id: String,
        content: Vec<Part>,
        is_error: bool,
    },
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text {
            text: text.into(),
            cache_control: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text, exactly as the model produced them.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    /// OpenAI participant `name`.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the arguments.
    pub parameters: Value,
    /// OpenAI `strict` function calling.
    pub strict: Option<bool>,
    pub cache_control: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Value,
        strict: Option<bool>,
    },
}

/// Top-level request fields the canonical form does not model, with the dialect they came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Extras {
    pub dialect: crate::Dialect,
    pub fields: Map<String, Value>,
}

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model the client asked for: an alias, resolved by routing.
    pub model: String,
    /// System instructions given at top level (Anthropic `system`). OpenAI system and
    /// developer messages stay in `messages` where the client put them.
    pub system: Vec<Part>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stop: Vec<String>,
    pub n: Option<u32>,
    pub seed: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// End-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// OpenAI `metadata` (string pairs).
    pub metadata: Option<Map<String, Value>>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`; Anthropic streams always carry usage.
    pub include_usage: bool,
    pub extras: Extras,
}

/// Why a choice ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end (`stop` / `end_turn`).
    EndTurn,
    /// Output token limit (`length` / `max_tokens`).
    MaxTokens,
    /// A stop sequence matched; Anthropic names which one.
    StopSequence(Option<String>),
    /// The model called tools (`tool_calls` / `tool_use`).
    ToolUse,
    /// Output was filtered or refused (`content_filter` / `refusal`).
    ContentFilter,
    /// Anything else, verbatim from the provider.
    Other(String),
}

/// Token usage. `input_tokens` counts every prompt token, cached ones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Prompt tokens served from the provider's cache.
    pub cached_input_tokens: u32,
    /// Prompt tokens written to the provider's cache (Anthropic).
    pub cache_write_tokens: u32,
    /// True when the gateway counted the tokens itself because the provider did not report them.
    pub estimated: bool,
}

impl Usage {
    pub fn total_tokens(&self) -> u32 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: u32,
    /// Text and tool-call parts, in order.
    pub parts: Vec<Part>,
    /// OpenAI `refusal`.
    pub refusal: Option<String>,
    pub finish_reason: Option<FinishReason>,
    /// OpenAI `logprobs`, verbatim.
    pub logprobs: Option<Value>,
}

/// A complete (non-streamed) chat response in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    /// The model as the provider reported it (the exact served version).
    pub model: String,
    /// Unix seconds.
    pub created: i64,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
    pub system_fingerprint: Option<String>,
}

/// One event of a streamed response, in canonical form. Decoders emit them in upstream order;
/// encoders keep whatever state their dialect needs (block indices, chunk envelopes).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The response began. Always first.
    Start {
        id: String,
        model: String,
        created: i64,
    },
    /// Text for a choice.
    TextDelta { choice: u32, text: String },
    /// Refusal text for a choice (OpenAI).
    RefusalDelta { choice: u32, text: String },
    /// A tool call began. `index` numbers the tool calls of one choice from 0.
    ToolCallStart {
        choice: u32,
        index: u32,
        id: String,
        name: String,
    },
    /// A fragment of a tool call's JSON arguments.
    ToolCallDelta {
        choice: u32,
        index: u32,
        arguments: String,
    },
    /// A choice ended.
    Finish { choice: u32, reason: FinishReason },
    /// Usage so far; the last one wins. Anthropic sends input usage first and output usage last.
    Usage(Usage),
    /// The stream failed after it began; the encoder ends the client stream with an error event.
    Error(StreamError),
}

/// A failure after the first byte, rendered as the dialect's error event.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamError {
    pub kind: crate::ErrorKind,
    pub message: String,
}

/// An embeddings request (OpenAI dialect only; providers that cannot embed refuse it).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// The whole client body; `model` is rewritten to the deployment's model on the way out.
    pub body: Map<String, Value>,
}
