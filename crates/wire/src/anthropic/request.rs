//! Messages and count_tokens request bodies: client body -> [`ChatRequest`] and
//! [`ChatRequest`] -> upstream body. The mapping decisions are listed in the
//! [module docs](super).

use serde::Serialize;
use serde_json::{Map, Value, json};
use sluice_types::{
    ChatRequest, Dialect, Extras, ImageSource, Message, Part, ResponseFormat, Role, Tool, ToolCall,
    ToolChoice,
};

use super::blocks::{WireBlock, WireContent, WireImageSource};
use super::{EncodeOptions, Encoded};
use crate::WireError;
use crate::json::{self, Obj, index, one_of};

const KNOWN_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "stream",
];

/// Block types Anthropic defines that the canonical form cannot carry.
const UNSUPPORTED_BLOCKS: &[&str] = &[
    "document",
    "thinking",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
];

/// Which body is decoded: count_tokens has no `max_tokens`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Messages,
    CountTokens,
}

/// Decodes a client `/v1/messages` body.
///
/// Errors: invalid UTF-8 or JSON, wrong types, missing `model` / `max_tokens` / `messages`,
/// unknown enum values (`InvalidRequest`, naming the field path); blocks and tools Sluice
/// cannot carry (`UnsupportedParameter`).
pub fn decode_chat_request(body: &[u8]) -> Result<ChatRequest, WireError> {
    decode(body, Endpoint::Messages)
}

/// Decodes a client `/v1/messages/count_tokens` body: the Messages shape without `max_tokens`.
pub fn decode_count_tokens_request(body: &[u8]) -> Result<ChatRequest, WireError> {
    decode(body, Endpoint::CountTokens)
}

fn decode(body: &[u8], endpoint: Endpoint) -> Result<ChatRequest, WireError> {
    let root = json::parse_body(body)?;
    let obj = Obj::root(&root)?;
    let model = obj.req_str("model")?.to_owned();
    let max_tokens = match endpoint {
        Endpoint::Messages => Some(obj.req_u32("max_tokens")?),
        Endpoint::CountTokens => obj.u32("max_tokens")?,
    };
    let raw_messages = obj.req_array("messages")?;
    if raw_messages.is_empty() {
        return Err(WireError::InvalidValue {
            path: "messages".into(),
            reason: "must contain at least one message",
        });
    }
    let mut messages = Vec::new();
    for (i, m) in raw_messages.iter().enumerate() {
        decode_message(m, index("messages", i), &mut messages)?;
    }
    let (tool_choice, parallel_tool_calls) = decode_tool_choice(&obj)?;
    Ok(ChatRequest {
        model,
        system: decode_system(&obj)?,
        messages,
        tools: decode_tools(&obj)?,
        tool_choice,
        parallel_tool_calls,
        response_format: None,
        max_tokens,
        temperature: obj.f64("temperature")?,
        top_p: obj.f64("top_p")?,
        top_k: obj.u32("top_k")?,
        stop: decode_stop_sequences(&obj)?,
        n: None,
        seed: None,
        logprobs: None,
        top_logprobs: None,
        presence_penalty: None,
        frequency_penalty: None,
        user: decode_user(&obj)?,
        metadata: None,
        stream: obj.bool("stream")?.unwrap_or(false),
        include_usage: false,
        extras: Extras {
            dialect: Dialect::Anthropic,
            fields: obj.unknown_fields(KNOWN_FIELDS),
        },
    })
}

fn decode_system(obj: &Obj<'_>) -> Result<Vec<Part>, WireError> {
    let path = obj.path("system");
    match obj.get("system") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::text(s.as_str())]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let o = Obj::at(item, index(&path, i))?;
                one_of(o.req_str("type")?, &o.path("type"), &["text"])?;
                text_part(&o)
            })
            .collect(),
        Some(other) => Err(WireError::InvalidType {
            path,
            expected: "string or array",
            found: json::type_name(other),
        }),
    }
}

fn text_part(o: &Obj<'_>) -> Result<Part, WireError> {
    Ok(Part::Text {
        text: o.req_str("text")?.to_owned(),
        cache_control: o.get("cache_control").cloned(),
    })
}

/// Decodes one message, splitting a user message at its tool results (see module docs).
fn decode_message(v: &Value, path: String, out: &mut Vec<Message>) -> Result<(), WireError> {
    let o = Obj::at(v, path)?;
    let role = one_of(o.req_str("role")?, &o.path("role"), &["user", "assistant"])?;
    let content_path = o.path("content");
    let parts = match o.required("content")? {
        Value::String(s) => vec![Part::text(s.as_str())],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(j, item)| decode_block(item, index(&content_path, j), role))
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(WireError::InvalidType {
                path: content_path,
                expected: "string or array",
                found: json::type_name(other),
            });
        }
    };
    if role == "assistant" {
        out.push(Message {
            role: Role::Assistant,
            parts,
            name: None,
        });
        return Ok(());
    }
    if parts.is_empty() {
        out.push(Message {
            role: Role::User,
            parts,
            name: None,
        });
        return Ok(());
    }
    let first = out.len();
    for part in parts {
        let role = if matches!(part, Part::ToolResult { .. }) {
            Role::Tool
        } else {
            Role::User
        };
        // Extend only a message this call started: never merge into the previous turn.
        let extend = out.len() > first && out.last().is_some_and(|m| m.role == role);
        match out.last_mut() {
            Some(last) if extend => last.parts.push(part),
            _ => out.push(Message {
                role,
                parts: vec![part],
                name: None,
            }),
        }
    }
    Ok(())
}

fn decode_block(v: &Value, path: String, role: &str) -> Result<Part, WireError> {
    let o = Obj::at(v, path)?;
    let type_path = o.path("type");
    let kind = o.req_str("type")?;
    if UNSUPPORTED_BLOCKS.contains(&kind) {
        return Err(WireError::UnsupportedInput {
            path: type_path,
            value: kind.to_owned(),
        });
    }
    let allowed: &'static [&'static str] = if role == "assistant" {
        &["text", "tool_use"]
    } else {
        &["text", "image", "tool_result"]
    };
    match one_of(kind, &type_path, allowed)? {
        "text" => text_part(&o),
        "image" => Ok(Part::Image {
            source: decode_image_source(&o.req_obj("source")?)?,
            detail: None,
        }),
        "tool_use" => {
            let input = o.required("input")?;
            if !input.is_object() {
                return Err(WireError::InvalidType {
                    path: o.path("input"),
                    expected: "object",
                    found: json::type_name(input),
                });
            }
            Ok(Part::ToolCall(ToolCall {
                id: o.req_str("id")?.to_owned(),
                name: o.req_str("name")?.to_owned(),
                arguments: input.to_string(),
            }))
        }
        _ => decode_tool_result(&o),
    }
}

fn decode_image_source(o: &Obj<'_>) -> Result<ImageSource, WireError> {
    let type_path = o.path("type");
    match one_of(o.req_str("type")?, &type_path, &["base64", "url", "file"])? {
        "base64" => Ok(ImageSource::Base64 {
            media_type: o.req_str("media_type")?.to_owned(),
            data: o.req_str("data")?.to_owned(),
        }),
        "url" => Ok(ImageSource::Url(o.req_str("url")?.to_owned())),
        other => Err(WireError::UnsupportedInput {
            path: type_path,
            value: other.to_owned(),
        }),
    }
}

fn decode_tool_result(o: &Obj<'_>) -> Result<Part, WireError> {
    let content_path = o.path("content");
    let mut content = match o.get("content") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![Part::text(s.as_str())],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(k, item)| {
                let b = Obj::at(item, index(&content_path, k))?;
                let type_path = b.path("type");
                let kind = b.req_str("type")?;
                if UNSUPPORTED_BLOCKS.contains(&kind) {
                    return Err(WireError::UnsupportedInput {
                        path: type_path,
                        value: kind.into(),
                    });
                }
                match one_of(kind, &type_path, &["text", "image"])? {
                    "text" => text_part(&b),
                    _ => Ok(Part::Image {
                        source: decode_image_source(&b.req_obj("source")?)?,
                        detail: None,
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(WireError::InvalidType {
                path: content_path,
                expected: "string or array",
                found: json::type_name(other),
            });
        }
    };
    if let Some(marker) = o.get("cache_control")
        && let Some(Part::Text { cache_control, .. }) = content.last_mut()
    {
        *cache_control = Some(marker.clone());
    }
    Ok(Part::ToolResult {
        tool_call_id: o.req_str("tool_use_id")?.to_owned(),
        content,
        is_error: o.bool("is_error")?.unwrap_or(false),
    })
}

fn decode_tools(obj: &Obj<'_>) -> Result<Vec<Tool>, WireError> {
    let Some(tools) = obj.array("tools")? else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let o = Obj::at(t, index("tools", i))?;
            if let Some(kind) = o.str("type")?
                && kind != "custom"
            {
                return Err(WireError::UnsupportedInput {
                    path: o.path("type"),
                    value: kind.into(),
                });
            }
            let schema = o.required("input_schema")?;
            if !schema.is_object() {
                return Err(WireError::InvalidType {
                    path: o.path("input_schema"),
                    expected: "object",
                    found: json::type_name(schema),
                });
            }
            Ok(Tool {
                name: o.req_str("name")?.to_owned(),
                description: o.str("description")?.map(str::to_owned),
                parameters: schema.clone(),
                strict: o.bool("strict")?,
                cache_control: o.get("cache_control").cloned(),
            })
        })
        .collect()
}

fn decode_tool_choice(obj: &Obj<'_>) -> Result<(Option<ToolChoice>, Option<bool>), WireError> {
    let Some(o) = obj.obj("tool_choice")? else {
        return Ok((None, None));
    };
    let choice = match one_of(
        o.req_str("type")?,
        &o.path("type"),
        &["auto", "any", "tool", "none"],
    )? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "tool" => ToolChoice::Named(o.req_str("name")?.to_owned()),
        _ => ToolChoice::None,
    };
    let parallel = o.bool("disable_parallel_tool_use")?.map(|disable| !disable);
    Ok((Some(choice), parallel))
}

fn decode_stop_sequences(obj: &Obj<'_>) -> Result<Vec<String>, WireError> {
    let Some(items) = obj.array("stop_sequences")? else {
        return Ok(Vec::new());
    };
    let path = obj.path("stop_sequences");
    items
        .iter()
        .enumerate()
        .map(|(i, s)| json::as_str(s, &index(&path, i)).map(str::to_owned))
        .collect()
}

fn decode_user(obj: &Obj<'_>) -> Result<Option<String>, WireError> {
    let Some(metadata) = obj.obj("metadata")? else {
        return Ok(None);
    };
    if let Some(key) = metadata.map.keys().find(|k| k.as_str() != "user_id") {
        return Err(WireError::UnsupportedInput {
            path: metadata.path(key),
            value: key.clone(),
        });
    }
    Ok(metadata.str("user_id")?.map(str::to_owned))
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<WireContent<'a>>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "no_stop")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(flatten)]
    extras: Map<String, Value>,
}

fn no_stop(stop: &&[String]) -> bool {
    stop.is_empty()
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

fn unsupported(param: impl Into<String>) -> WireError {
    WireError::Unsupported {
        param: param.into(),
        target: Dialect::Anthropic,
    }
}

/// Encodes a canonical request for Anthropic's `/v1/messages`.
///
/// Errors: [`WireError::Unsupported`] for every parameter Anthropic cannot honour (see the
/// [module docs](super)).
pub fn encode_chat_request(req: &ChatRequest, opts: &EncodeOptions) -> Result<Encoded, WireError> {
    refuse_sampling_parameters(req)?;
    let extras = forwarded_extras(req)?;
    let mut structured_output_tool = None;
    let (tools, tool_choice) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (encode_tools(&req.tools), encode_tool_choice(req)),
        Some(ResponseFormat::JsonObject) => return Err(unsupported("response_format")),
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            ..
        }) => {
            if !req.tools.is_empty() {
                return Err(WireError::Untranslatable {
                    param: "response_format".into(),
                    target: Dialect::Anthropic,
                    reason: "a `json_schema` response format is carried there as a forced tool \
                             call, which cannot be combined with the request's own `tools`; \
                             send it without `tools`, or use a deployment of an \
                             OpenAI-dialect provider, which takes both",
                });
            }
            structured_output_tool = Some(name.clone());
            let tool = WireTool {
                name,
                description: description.as_deref(),
                input_schema: object_schema(schema),
                cache_control: None,
                strict: None,
            };
            (vec![tool], Some(json!({"type": "tool", "name": name})))
        }
    };
    let (system, messages) = encode_messages(req)?;
    if messages.is_empty() {
        // Everything was system instructions, hoisted into `system`: Anthropic answers an empty
        // conversation with a 400, so refuse before any network call.
        return Err(WireError::Untranslatable {
            param: "messages".into(),
            target: Dialect::Anthropic,
            reason: "Anthropic needs at least one user or assistant message besides system instructions",
        });
    }
    let wire = WireRequest {
        model: opts.model,
        max_tokens: Some(req.max_tokens.unwrap_or(opts.default_max_tokens)),
        system,
        messages,
        tools,
        tool_choice,
        stop_sequences: &req.stop,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        metadata: req.user.as_ref().map(|user| json!({"user_id": user})),
        stream: req.stream,
        extras,
    };
    Ok(Encoded {
        body: json::to_vec(&wire),
        structured_output_tool,
    })
}

/// Encodes a canonical request for `/v1/messages/count_tokens`: model, system, messages,
/// tools and tool choice (a `json_schema` response format counts as its forced tool), plus
/// Anthropic extras such as `thinking`. Sampling parameters do not affect the count and are
/// neither sent nor refused.
pub fn encode_count_tokens_request(req: &ChatRequest, model: &str) -> Result<Vec<u8>, WireError> {
    let extras = match req.extras.dialect {
        Dialect::Anthropic => req.extras.fields.clone(),
        Dialect::OpenAi => Map::new(),
    };
    let (tools, tool_choice) = match &req.response_format {
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            ..
        }) if req.tools.is_empty() => {
            let tool = WireTool {
                name,
                description: description.as_deref(),
                input_schema: object_schema(schema),
                cache_control: None,
                strict: None,
            };
            (vec![tool], Some(json!({"type": "tool", "name": name})))
        }
        _ => (encode_tools(&req.tools), encode_tool_choice(req)),
    };
    let (system, messages) = encode_messages(req)?;
    let wire = WireRequest {
        model,
        max_tokens: None,
        system,
        messages,
        tools,
        tool_choice,
        stop_sequences: &[],
        temperature: None,
        top_p: None,
        top_k: None,
        metadata: None,
        stream: false,
        extras,
    };
    Ok(json::to_vec(&wire))
}

fn refuse_sampling_parameters(req: &ChatRequest) -> Result<(), WireError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("n"));
    }
    if req.logprobs == Some(true) {
        return Err(unsupported("logprobs"));
    }
    if req.top_logprobs.is_some_and(|n| n > 0) {
        return Err(unsupported("top_logprobs"));
    }
    if req.seed.is_some() {
        return Err(unsupported("seed"));
    }
    if req.presence_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported("presence_penalty"));
    }
    if req.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported("frequency_penalty"));
    }
    if req.temperature.is_some_and(|t| t > 1.0) {
        return Err(unsupported("temperature"));
    }
    Ok(())
}

fn forwarded_extras(req: &ChatRequest) -> Result<Map<String, Value>, WireError> {
    match req.extras.dialect {
        Dialect::Anthropic => Ok(req
            .extras
            .fields
            .iter()
            .filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()),
        Dialect::OpenAi => match req.extras.fields.keys().next() {
            Some(key) => Err(unsupported(key.as_str())),
            None => Ok(Map::new()),
        },
    }
}

/// A tool schema for `input_schema`, which Anthropic requires: an absent one means "no
/// arguments".
fn object_schema(schema: &Value) -> Value {
    if schema.is_null() {
        json!({"type": "object", "properties": {}})
    } else {
        schema.clone()
    }
}

fn encode_tools(tools: &[Tool]) -> Vec<WireTool<'_>> {
    tools
        .iter()
        .map(|t| WireTool {
            name: &t.name,
            description: t.description.as_deref(),
            input_schema: object_schema(&t.parameters),
            cache_control: t.cache_control.as_ref(),
            strict: t.strict,
        })
        .collect()
}

fn encode_tool_choice(req: &ChatRequest) -> Option<Value> {
    // Without tools, `auto` and `none` mean the same as no choice at all.
    if req.tools.is_empty() && matches!(req.tool_choice, Some(ToolChoice::Auto | ToolChoice::None))
    {
        return None;
    }
    let mut choice = match &req.tool_choice {
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Named(name)) => json!({"type": "tool", "name": name}),
        None if req.parallel_tool_calls == Some(false) && !req.tools.is_empty() => {
            json!({"type": "auto"})
        }
        None => return None,
    };
    if let (Some(parallel), Some(obj)) = (req.parallel_tool_calls, choice.as_object_mut()) {
        obj.insert("disable_parallel_tool_use".into(), json!(!parallel));
    }
    Some(choice)
}

/// Hoists system and developer messages into `system`, maps roles, merges consecutive
/// messages of the same role.
fn encode_messages(
    req: &ChatRequest,
) -> Result<(Option<WireContent<'_>>, Vec<WireMessage<'_>>), WireError> {
    let mut system = Vec::new();
    for (j, part) in req.system.iter().enumerate() {
        system.push(system_block(part, || index("system", j))?);
    }
    let mut turns: Vec<(&'static str, Vec<WireBlock<'_>>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let content_path = format!("{}.content", index("messages", i));
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                for (j, part) in m.parts.iter().enumerate() {
                    system.push(system_block(part, || index(&content_path, j))?);
                }
                continue;
            }
            Role::Assistant => ("assistant", encode_parts(&m.parts, &content_path, false)?),
            Role::User | Role::Tool => ("user", encode_parts(&m.parts, &content_path, true)?),
        };
        match turns.last_mut() {
            Some((last_role, last)) if *last_role == role => last.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let system = (!system.is_empty()).then(|| WireContent::from_blocks(system));
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| WireMessage {
            role,
            content: WireContent::from_blocks(blocks),
        })
        .collect();
    Ok((system, messages))
}

fn system_block(part: &Part, path: impl Fn() -> String) -> Result<WireBlock<'_>, WireError> {
    match part {
        Part::Text {
            text,
            cache_control,
        } => Ok(WireBlock::Text {
            text,
            cache_control: cache_control.as_ref(),
        }),
        _ => Err(unsupported(path())),
    }
}

fn encode_parts<'a>(
    parts: &'a [Part],
    path: &str,
    user_side: bool,
) -> Result<Vec<WireBlock<'a>>, WireError> {
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_path = || index(path, j);
        match part {
            Part::Text {
                text,
                cache_control,
            } => {
                // Anthropic rejects empty text blocks; an empty part carries nothing.
                if !text.is_empty() {
                    blocks.push(WireBlock::Text {
                        text,
                        cache_control: cache_control.as_ref(),
                    });
                }
            }
            Part::Image { source, .. } => blocks.push(image_block(source, &part_path)?),
            Part::ToolCall(call) if !user_side => blocks.push(WireBlock::ToolUse {
                id: &call.id,
                name: &call.name,
                input: tool_input(&call.arguments).ok_or_else(|| unsupported(part_path()))?,
            }),
            Part::ToolResult {
                tool_call_id,
                content,
                is_error,
            } if user_side => {
                blocks.push(tool_result_block(
                    tool_call_id,
                    content,
                    *is_error,
                    &part_path(),
                )?);
            }
            Part::ToolCall(_) | Part::ToolResult { .. } => return Err(unsupported(part_path())),
        }
    }
    Ok(blocks)
}

fn image_block<'a>(
    source: &'a ImageSource,
    path: &impl Fn() -> String,
) -> Result<WireBlock<'a>, WireError> {
    let source = match source {
        ImageSource::Base64 { media_type, data } => WireImageSource::Base64 { media_type, data },
        ImageSource::Url(url) if url.starts_with("https://") || url.starts_with("http://") => {
            WireImageSource::Url { url }
        }
        ImageSource::Url(_) => return Err(unsupported(path())),
    };
    Ok(WireBlock::Image { source })
}

/// Tool-call arguments as the object Anthropic's `input` requires; `""` counts as `{}`.
fn tool_input(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(json!({}));
    }
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
}

fn tool_result_block<'a>(
    tool_use_id: &'a str,
    content: &'a [Part],
    is_error: bool,
    path: &str,
) -> Result<WireBlock<'a>, WireError> {
    // A marker on the last text part belongs to the block (see decode_tool_result).
    let cache_control = match content.last() {
        Some(Part::Text {
            cache_control: Some(marker),
            ..
        }) => Some(marker),
        _ => None,
    };
    let last = content.len().saturating_sub(1);
    let mut blocks = Vec::new();
    for (k, part) in content.iter().enumerate() {
        let part_path = || format!("{path}.content[{k}]");
        match part {
            Part::Text {
                text,
                cache_control: marker,
            } => blocks.push(WireBlock::Text {
                text,
                cache_control: if k == last { None } else { marker.as_ref() },
            }),
            Part::Image { source, .. } => blocks.push(image_block(source, &part_path)?),
            _ => return Err(unsupported(part_path())),
        }
    }
    Ok(WireBlock::ToolResult {
        tool_use_id,
        content: (!blocks.is_empty()).then(|| WireContent::from_blocks(blocks)),
        is_error,
        cache_control,
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
