//! Chat Completions request bodies: client body -> [`ChatRequest`] and [`ChatRequest`] ->
//! upstream body. The mapping decisions are listed in the [module docs](super).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sluice_types::{
    ChatRequest, Dialect, Extras, ImageSource, Message, Part, ResponseFormat, Role, Tool, ToolCall,
    ToolChoice,
};

use super::{EncodeOptions, OpenAiFlavor};
use crate::WireError;
use crate::json::{self, Obj, index, one_of};

/// Top-level fields the canonical form models; everything else is an extra.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "metadata",
];

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Which content part types a role may use.
#[derive(Clone, Copy)]
enum PartSet {
    TextOnly,
    User,
    Assistant,
}

impl PartSet {
    fn expected(self) -> &'static [&'static str] {
        match self {
            PartSet::TextOnly => &["text"],
            PartSet::User => &["text", "image_url", "input_audio", "file"],
            PartSet::Assistant => &["text", "refusal"],
        }
    }
}

/// Decodes a client's Chat Completions body.
///
/// Errors: invalid UTF-8 or JSON, wrong types, missing `model` / `messages`, unknown enum values
/// (all `InvalidRequest`, naming the field path), and input Sluice cannot carry such as audio or
/// file parts (`UnsupportedParameter`).
pub fn decode_chat_request(body: &[u8]) -> Result<ChatRequest, WireError> {
    let root = json::parse_body(body)?;
    let obj = Obj::root(&root)?;
    let model = obj.req_str("model")?.to_owned();
    let raw_messages = obj.req_array("messages")?;
    if raw_messages.is_empty() {
        return Err(WireError::InvalidValue {
            path: "messages".into(),
            reason: "must contain at least one message",
        });
    }
    let messages = raw_messages
        .iter()
        .enumerate()
        .map(|(i, m)| decode_message(m, index("messages", i)))
        .collect::<Result<Vec<_>, _>>()?;

    let include_usage = match obj.obj("stream_options")? {
        Some(o) => o.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    let max_completion_tokens = obj.u32("max_completion_tokens")?;
    let legacy_max_tokens = obj.u32("max_tokens")?;

    Ok(ChatRequest {
        model,
        system: Vec::new(),
        messages,
        tools: decode_tools(&obj)?,
        tool_choice: decode_tool_choice(&obj)?,
        parallel_tool_calls: obj.bool("parallel_tool_calls")?,
        response_format: decode_response_format(&obj)?,
        max_tokens: max_completion_tokens.or(legacy_max_tokens),
        temperature: obj.f64("temperature")?,
        top_p: obj.f64("top_p")?,
        top_k: None,
        stop: decode_stop(&obj)?,
        n: obj.u32("n")?,
        seed: obj.i64("seed")?,
        logprobs: obj.bool("logprobs")?,
        top_logprobs: obj.u32("top_logprobs")?,
        presence_penalty: obj.f64("presence_penalty")?,
        frequency_penalty: obj.f64("frequency_penalty")?,
        user: obj.str("user")?.map(str::to_owned),
        metadata: obj.obj("metadata")?.map(|o| o.map.clone()),
        stream: obj.bool("stream")?.unwrap_or(false),
        include_usage,
        extras: Extras {
            dialect: Dialect::OpenAi,
            fields: obj.unknown_fields(KNOWN_FIELDS),
        },
    })
}

fn decode_message(v: &Value, path: String) -> Result<Message, WireError> {
    let o = Obj::at(v, path)?;
    let role = o.req_one_of("role", ROLES)?;
    let name = o.str("name")?.map(str::to_owned);
    let (role, parts) = match role {
        "system" | "developer" => {
            let parts = decode_content(&o, "content", PartSet::TextOnly)?;
            (
                if role == "system" {
                    Role::System
                } else {
                    Role::Developer
                },
                parts,
            )
        }
        "user" => (Role::User, decode_content(&o, "content", PartSet::User)?),
        "assistant" => (Role::Assistant, decode_assistant(&o)?),
        "tool" => {
            let tool_call_id = o.req_str("tool_call_id")?.to_owned();
            let content = decode_content(&o, "content", PartSet::TextOnly)?;
            (
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id,
                    content,
                    is_error: false,
                }],
            )
        }
        other => {
            return Err(WireError::UnsupportedInput {
                path: o.path("role"),
                value: other.to_owned(),
            });
        }
    };
    Ok(Message { role, parts, name })
}

fn decode_assistant(o: &Obj<'_>) -> Result<Vec<Part>, WireError> {
    for unsupported in ["audio", "function_call"] {
        if o.get(unsupported).is_some() {
            return Err(WireError::UnsupportedInput {
                path: o.path(unsupported),
                value: unsupported.to_owned(),
            });
        }
    }
    let mut parts = match o.get("content") {
        Some(_) => decode_content(o, "content", PartSet::Assistant)?,
        None => Vec::new(),
    };
    let refusal = o.str("refusal")?;
    if let Some(refusal) = refusal {
        parts.push(Part::text(refusal));
    }
    let calls = o.array("tool_calls")?;
    if let Some(calls) = calls.filter(|c| !c.is_empty()) {
        // `content: ""` beside tool calls (what strict servers want, and what Sluice sends)
        // means no text, like `null`.
        parts.retain(|p| !matches!(p, Part::Text { text, .. } if text.is_empty()));
        let calls_path = o.path("tool_calls");
        for (j, call) in calls.iter().enumerate() {
            parts.push(Part::ToolCall(decode_tool_call(
                call,
                index(&calls_path, j),
            )?));
        }
    }
    if o.get("content").is_none() && refusal.is_none() && calls.is_none_or(|c| c.is_empty()) {
        return Err(WireError::MissingField {
            path: o.path("content"),
        });
    }
    Ok(parts)
}

fn decode_tool_call(v: &Value, path: String) -> Result<ToolCall, WireError> {
    let o = Obj::at(v, path)?;
    if let Some(kind) = o.str("type")? {
        check_function_type(kind, &o.path("type"))?;
    }
    let function = o.req_obj("function")?;
    Ok(ToolCall {
        id: o.req_str("id")?.to_owned(),
        name: function.req_str("name")?.to_owned(),
        arguments: function.req_str("arguments")?.to_owned(),
    })
}

/// Tool and tool-call `type`: only `function` is carried; `custom` (free-form tools) is not.
fn check_function_type(kind: &str, path: &str) -> Result<(), WireError> {
    match one_of(kind, path, &["function", "custom"])? {
        "function" => Ok(()),
        other => Err(WireError::UnsupportedInput {
            path: path.to_owned(),
            value: other.to_owned(),
        }),
    }
}

/// A message's `content` under `key`: a string or an array of parts.
fn decode_content(o: &Obj<'_>, key: &str, set: PartSet) -> Result<Vec<Part>, WireError> {
    match o.required(key)? {
        Value::String(s) => Ok(vec![Part::text(s.as_str())]),
        Value::Array(items) => {
            let path = o.path(key);
            items
                .iter()
                .enumerate()
                .map(|(j, item)| decode_part(item, index(&path, j), set))
                .collect()
        }
        other => Err(WireError::InvalidType {
            path: o.path(key),
            expected: "string or array",
            found: json::type_name(other),
        }),
    }
}

fn decode_part(v: &Value, path: String, set: PartSet) -> Result<Part, WireError> {
    let o = Obj::at(v, path)?;
    match o.req_one_of("type", set.expected())? {
        "text" => Ok(Part::text(o.req_str("text")?)),
        "refusal" => Ok(Part::text(o.req_str("refusal")?)),
        "image_url" => {
            // Some clients send the URL as a bare string; the spec's shape is an object.
            if let Some(url) = o.get("image_url").and_then(Value::as_str) {
                return Ok(Part::Image {
                    source: parse_image_url(url),
                    detail: None,
                });
            }
            let image = o.req_obj("image_url")?;
            Ok(Part::Image {
                source: parse_image_url(image.req_str("url")?),
                detail: image.str("detail")?.map(str::to_owned),
            })
        }
        other => Err(WireError::UnsupportedInput {
            path: o.path("type"),
            value: other.to_owned(),
        }),
    }
}

/// `data:<media type>;base64,<data>` becomes inline data; anything else stays a URL.
fn parse_image_url(url: &str) -> ImageSource {
    let inline = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
        .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)));
    match inline {
        Some((media_type, data)) => ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        },
        None => ImageSource::Url(url.to_owned()),
    }
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
            check_function_type(o.req_str("type")?, &o.path("type"))?;
            let f = o.req_obj("function")?;
            let parameters = match f.get("parameters") {
                None => Value::Null,
                Some(p @ Value::Object(_)) => p.clone(),
                Some(other) => {
                    return Err(WireError::InvalidType {
                        path: f.path("parameters"),
                        expected: "object",
                        found: json::type_name(other),
                    });
                }
            };
            Ok(Tool {
                name: f.req_str("name")?.to_owned(),
                description: f.str("description")?.map(str::to_owned),
                parameters,
                strict: f.bool("strict")?,
                cache_control: None,
            })
        })
        .collect()
}

fn decode_tool_choice(obj: &Obj<'_>) -> Result<Option<ToolChoice>, WireError> {
    let path = obj.path("tool_choice");
    match obj.get("tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            match one_of(s, &path, &["none", "auto", "required"])? {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                _ => ToolChoice::Required,
            },
        )),
        Some(v @ Value::Object(_)) => {
            let o = Obj::at(v, path)?;
            let type_path = o.path("type");
            match one_of(
                o.req_str("type")?,
                &type_path,
                &["function", "allowed_tools", "custom"],
            )? {
                "function" => Ok(Some(ToolChoice::Named(
                    o.req_obj("function")?.req_str("name")?.to_owned(),
                ))),
                other => Err(WireError::UnsupportedInput {
                    path: type_path,
                    value: other.into(),
                }),
            }
        }
        Some(other) => Err(WireError::InvalidType {
            path,
            expected: "string or object",
            found: json::type_name(other),
        }),
    }
}

fn decode_response_format(obj: &Obj<'_>) -> Result<Option<ResponseFormat>, WireError> {
    let Some(o) = obj.obj("response_format")? else {
        return Ok(None);
    };
    let kinds = &["text", "json_object", "json_schema"];
    Ok(Some(
        match one_of(o.req_str("type")?, &o.path("type"), kinds)? {
            "text" => ResponseFormat::Text,
            "json_object" => ResponseFormat::JsonObject,
            _ => {
                let s = o.req_obj("json_schema")?;
                ResponseFormat::JsonSchema {
                    name: s.req_str("name")?.to_owned(),
                    description: s.str("description")?.map(str::to_owned),
                    schema: s.get("schema").cloned().unwrap_or(Value::Null),
                    strict: s.bool("strict")?,
                }
            }
        },
    ))
}

fn decode_stop(obj: &Obj<'_>) -> Result<Vec<String>, WireError> {
    let path = obj.path("stop");
    match obj.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| json::as_str(s, &index(&path, i)).map(str::to_owned))
            .collect(),
        Some(other) => Err(WireError::InvalidType {
            path,
            expected: "string or array",
            found: json::type_name(other),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "no_stop")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    fn new(role: &'static str, content: WireContent<'a>, name: Option<&'a str>) -> Self {
        WireMessage {
            role,
            content,
            name,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<WirePart<'a>>),
}

impl<'a> WireContent<'a> {
    /// A single text part goes out as a plain string, like most clients send it.
    fn from_parts(parts: Vec<WirePart<'a>>) -> Self {
        if parts.is_empty() {
            return WireContent::Text("");
        }
        if let [WirePart::Text { text }] = parts.as_slice() {
            return WireContent::Text(text);
        }
        WireContent::Parts(parts)
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: WireImageUrl<'a> },
}

#[derive(Serialize)]
struct WireImageUrl<'a> {
    url: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// A tool call in a message (requests and non-streamed responses).
#[derive(Serialize)]
pub(super) struct WireToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
pub(super) struct WireFunctionCall<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}

impl<'a> WireToolCall<'a> {
    pub(super) fn new(call: &'a ToolCall) -> Self {
        WireToolCall {
            id: &call.id,
            kind: "function",
            function: WireFunctionCall {
                name: &call.name,
                arguments: &call.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

fn unsupported(param: impl Into<String>) -> WireError {
    WireError::Unsupported {
        param: param.into(),
        target: Dialect::OpenAi,
    }
}

/// Encodes a canonical request for an OpenAI-compatible upstream.
///
/// Errors: [`WireError::Unsupported`] for parameters OpenAI cannot honour (`top_k`, Anthropic
/// extras, images in system or tool messages, parts in the wrong role).
pub fn encode_chat_request(req: &ChatRequest, opts: &EncodeOptions) -> Result<Vec<u8>, WireError> {
    if req.top_k.is_some() {
        return Err(unsupported("top_k"));
    }
    let extras = match req.extras.dialect {
        Dialect::OpenAi => req
            .extras
            .fields
            .iter()
            .filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Dialect::Anthropic => match req.extras.fields.keys().next() {
            Some(key) => return Err(unsupported(key.as_str())),
            None => Map::new(),
        },
    };

    let mut messages = Vec::new();
    if !req.system.is_empty() {
        let content = text_content(&req.system, || "system".to_owned())?;
        messages.push(WireMessage::new("system", content, None));
    }
    for (i, m) in req.messages.iter().enumerate() {
        encode_message(m, i, opts.flavor, &mut messages)?;
    }

    let (max_completion_tokens, max_tokens) = match opts.flavor {
        OpenAiFlavor::OpenAi => (req.max_tokens, None),
        OpenAiFlavor::Compatible => (None, req.max_tokens),
    };
    let wire = WireRequest {
        model: opts.model,
        messages,
        tools: req.tools.iter().map(encode_tool).collect(),
        tool_choice: req.tool_choice.as_ref().map(encode_tool_choice),
        // OpenAI rejects `parallel_tool_calls` without tools, where it has no effect anyway.
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| !req.tools.is_empty()),
        response_format: req.response_format.as_ref().map(encode_response_format),
        max_completion_tokens,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        n: req.n,
        seed: req.seed,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        user: req.user.as_deref(),
        metadata: req.metadata.as_ref(),
        stream: req.stream,
        // The gateway settles on usage, so a stream always asks for it.
        stream_options: req.stream.then(|| json!({"include_usage": true})),
        extras,
    };
    Ok(json::to_vec(&wire))
}

/// Encodes `messages[i]` (its path is built only for an error).
fn encode_message<'a>(
    m: &'a Message,
    i: usize,
    flavor: OpenAiFlavor,
    out: &mut Vec<WireMessage<'a>>,
) -> Result<(), WireError> {
    let name = m.name.as_deref();
    let path = || index("messages", i);
    let part_path = |j: usize| index(&format!("{}.content", path()), j);
    match m.role {
        Role::System | Role::Developer => {
            let role = match (m.role, flavor) {
                (Role::Developer, OpenAiFlavor::OpenAi) => "developer",
                _ => "system",
            };
            out.push(WireMessage::new(role, text_content(&m.parts, path)?, name));
        }
        Role::Assistant => {
            let mut texts = Vec::new();
            let mut tool_calls = Vec::new();
            for (j, part) in m.parts.iter().enumerate() {
                match part {
                    Part::Text { text, .. } => texts.push(WirePart::Text { text }),
                    Part::ToolCall(call) => tool_calls.push(WireToolCall::new(call)),
                    _ => return Err(unsupported(part_path(j))),
                }
            }
            // An assistant turn that only calls tools goes out with `content: ""`, not `null`:
            // OpenAI takes either, but llama.cpp-based servers (and other strict ones) reject
            // `null`, and chat templates that concatenate `content` fail on a missing one.
            out.push(WireMessage {
                role: "assistant",
                content: WireContent::from_parts(texts),
                name,
                tool_calls,
                tool_call_id: None,
            });
        }
        Role::User | Role::Tool => {
            // Tool results become their own `tool` messages; the other parts keep their order
            // in `user` messages around them.
            let mut pending = Vec::new();
            let mut emitted = false;
            for (j, part) in m.parts.iter().enumerate() {
                match part {
                    Part::Text { text, .. } => pending.push(WirePart::Text { text }),
                    Part::Image { source, detail } => pending.push(WirePart::ImageUrl {
                        image_url: WireImageUrl {
                            url: image_url(source),
                            detail: detail.as_deref(),
                        },
                    }),
                    Part::ToolResult {
                        tool_call_id,
                        content,
                        ..
                    } => {
                        if !pending.is_empty() {
                            let parts = std::mem::take(&mut pending);
                            out.push(WireMessage::new(
                                "user",
                                WireContent::from_parts(parts),
                                name,
                            ));
                        }
                        out.push(WireMessage {
                            role: "tool",
                            content: text_content(content, || part_path(j))?,
                            name: None,
                            tool_calls: Vec::new(),
                            tool_call_id: Some(tool_call_id),
                        });
                        emitted = true;
                    }
                    Part::ToolCall(_) => return Err(unsupported(part_path(j))),
                }
            }
            if !pending.is_empty() || !emitted {
                out.push(WireMessage::new(
                    "user",
                    WireContent::from_parts(pending),
                    name,
                ));
            }
        }
    }
    Ok(())
}

/// Content that may only hold text (system, developer and tool messages); `path` names the
/// message, for an error.
fn text_content<'a>(
    parts: &'a [Part],
    path: impl Fn() -> String,
) -> Result<WireContent<'a>, WireError> {
    let texts = parts
        .iter()
        .enumerate()
        .map(|(j, part)| match part {
            Part::Text { text, .. } => Ok(WirePart::Text { text }),
            _ => Err(unsupported(index(&format!("{}.content", path()), j))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WireContent::from_parts(texts))
}

fn image_url(source: &ImageSource) -> Cow<'_, str> {
    match source {
        ImageSource::Url(url) => Cow::Borrowed(url),
        ImageSource::Base64 { media_type, data } => {
            Cow::Owned(format!("data:{media_type};base64,{data}"))
        }
    }
}

fn encode_tool(tool: &Tool) -> WireTool<'_> {
    WireTool {
        kind: "function",
        function: WireFunction {
            name: &tool.name,
            description: tool.description.as_deref(),
            parameters: (!tool.parameters.is_null()).then_some(&tool.parameters),
            strict: tool.strict,
        },
    }
}

fn encode_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

fn encode_response_format(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut spec = Map::new();
            spec.insert("name".into(), json!(name));
            if let Some(d) = description {
                spec.insert("description".into(), json!(d));
            }
            if !schema.is_null() {
                spec.insert("schema".into(), schema.clone());
            }
            if let Some(s) = strict {
                spec.insert("strict".into(), json!(s));
            }
            json!({"type": "json_schema", "json_schema": spec})
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
