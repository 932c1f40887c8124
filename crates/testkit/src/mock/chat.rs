//! Dialect-neutral core of a chat request: what was asked ([`ChatView`]),
//! what the mock answers ([`Answer`]) and how much it "cost" ([`Usage`]).
//!
//! `openai.rs` and `anthropic.rs` parse their wire format into a [`ChatView`]
//! and render an [`Answer`] back; the default behaviour lives here so both
//! dialects behave alike.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use super::schema;
use super::{Fault, Reply};

/// Longest slice of user text echoed back, in characters.
const ECHO_LIMIT: usize = 200;

/// Version suffix appended to the requested model name in responses.
const MODEL_SUFFIX: &str = "-mock-2026-01-01";

/// What a chat request asks for, independent of its dialect.
#[derive(Debug, Clone, Default)]
pub(super) struct ChatView {
    pub model: String,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    /// Characters of all input text: system prompt, messages, tool calls and results.
    pub input_chars: usize,
    /// Text of the last user message (tool results excluded).
    pub last_user_text: String,
    /// Whether the final message has the user role (tool results count as user
    /// in Anthropic, as `tool` in OpenAI).
    pub last_is_user: bool,
    /// Text of the tool results when the final message carries them.
    pub tool_result: Option<String>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: ToolChoice,
    pub output: OutputMode,
}

#[derive(Debug, Clone)]
pub(super) struct ToolDef {
    pub name: String,
    pub schema: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum ToolChoice {
    #[default]
    Auto,
    None,
    /// OpenAI `required`, Anthropic `any`.
    Any,
    Named(String),
}

#[derive(Debug, Clone, Default)]
pub(super) enum OutputMode {
    #[default]
    Free,
    /// OpenAI `response_format: {"type": "json_object"}`.
    JsonObject,
    /// A JSON Schema the answer text must validate against.
    Schema(Value),
}

/// Why a text answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    Stop,
    /// Cut at `max_tokens`.
    Length,
}

/// The assistant's answer, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Answer {
    Text { text: String, finish: Finish },
    Tools(Vec<(String, Value)>),
}

/// What the mock does with one request after scripting is resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Base {
    Answer(Answer),
    Status {
        status: u16,
        body: Option<String>,
        retry_after: Option<u64>,
    },
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Answer {
    pub fn text(text: impl Into<String>) -> Self {
        Answer::Text {
            text: text.into(),
            finish: Finish::Stop,
        }
    }
}

/// Splits a reply into its base and the fault to apply; the outermost
/// `WithFault` wins when they nest.
pub(super) fn flatten(reply: &Reply) -> (Base, Fault) {
    match reply {
        Reply::Text(text) => (Base::Answer(Answer::text(text.clone())), Fault::default()),
        Reply::ToolCalls(calls) => (Base::Answer(Answer::Tools(calls.clone())), Fault::default()),
        Reply::Status {
            status,
            body,
            retry_after,
        } => (
            Base::Status {
                status: *status,
                body: body.clone(),
                retry_after: *retry_after,
            },
            Fault::default(),
        ),
        Reply::Malformed => (Base::Malformed, Fault::default()),
        Reply::WithFault(inner, fault) => (flatten(inner).0, *fault),
    }
}

/// The unscripted answer; see the module docs of `mock` for the rules.
pub(super) fn default_answer(view: &ChatView) -> Answer {
    let forced = match &view.tool_choice {
        ToolChoice::Named(name) => Some(name.clone()),
        ToolChoice::Any => view.tools.first().map(|t| t.name.clone()),
        ToolChoice::Auto | ToolChoice::None => None,
    };
    if let Some(name) = forced {
        return call_tool(view, &name);
    }
    match &view.output {
        OutputMode::Schema(schema) => return Answer::text(schema::instance(schema).to_string()),
        OutputMode::JsonObject => return Answer::text(json!({ "reply": echo(view) }).to_string()),
        OutputMode::Free => {}
    }
    if view.tool_choice == ToolChoice::Auto
        && view.last_is_user
        && view.tool_result.is_none()
        && let Some(tool) = view.tools.first()
    {
        return call_tool(view, &tool.name);
    }
    Answer::text(echo(view))
}

/// Calls `name` with arguments generated from its declared schema (`{}` when
/// the tool was not declared).
pub(super) fn call_tool(view: &ChatView, name: &str) -> Answer {
    let arguments = view
        .tools
        .iter()
        .find(|t| t.name == name)
        .map(|t| schema::instance(&t.schema))
        .unwrap_or_else(|| json!({}));
    Answer::Tools(vec![(name.to_owned(), arguments)])
}

fn echo(view: &ChatView) -> String {
    match &view.tool_result {
        Some(result) => format!("Tool result received: {}", truncate(result, ECHO_LIMIT)),
        None => format!(
            "Hello from the Sluice mock. You said: {}",
            truncate(&view.last_user_text, ECHO_LIMIT)
        ),
    }
}

/// Cuts a text answer at `max_tokens` (at [`CHARS_PER_TOKEN`] characters per token).
pub(super) fn limit(answer: Answer, max_tokens: Option<u64>) -> Answer {
    match (answer, max_tokens) {
        (Answer::Text { text, .. }, Some(max)) if tokens(text.chars().count()) > max => {
            let keep = usize::try_from(max.saturating_mul(CHARS_PER_TOKEN)).unwrap_or(usize::MAX);
            Answer::Text {
                text: text.chars().take(keep).collect(),
                finish: Finish::Length,
            }
        }
        (answer, _) => answer,
    }
}

/// Rough tokenizer ratio used for all usage numbers (input and output).
pub(super) const CHARS_PER_TOKEN: u64 = 4;

/// `ceil(chars / 4)`, at least 1.
pub(super) fn tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(CHARS_PER_TOKEN).max(1)
}

pub(super) fn usage(view: &ChatView, answer: &Answer) -> Usage {
    let output_chars = match answer {
        Answer::Text { text, .. } => text.chars().count(),
        Answer::Tools(calls) => calls
            .iter()
            .map(|(name, args)| name.chars().count() + args.to_string().chars().count())
            .sum(),
    };
    Usage {
        input: tokens(view.input_chars),
        output: tokens(output_chars),
    }
}

/// The model name reported back: the requested one with `-mock-2026-01-01`
/// appended unless it already ends in a date version.
pub(super) fn served_model(requested: &str) -> String {
    if has_version_suffix(requested) {
        requested.to_owned()
    } else {
        format!("{requested}{MODEL_SUFFIX}")
    }
}

/// `...-20250929` (Anthropic) or `...-2024-08-06` (OpenAI).
fn has_version_suffix(model: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = model.rsplitn(4, '-').collect();
    match parts.as_slice() {
        [day, month, year, _] if digits(year, 4) && digits(month, 2) && digits(day, 2) => true,
        [last, ..] => digits(last, 8),
        [] => false,
    }
}

pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// `prefix` followed by `len` random ASCII letters and digits.
pub(super) fn random_id(prefix: &str, len: usize) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect();
    format!("{prefix}{tail}")
}

/// `prefix` followed by `len` random lower-case hex digits.
pub(super) fn random_hex(prefix: &str, len: usize) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect();
    format!("{prefix}{tail}")
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Splits text into token-sized pieces the way streamed deltas look: a word
/// keeps its leading space, and long words are cut every few characters.
pub(super) fn text_pieces(text: &str) -> Vec<String> {
    // Real deltas average about 4 characters; 5 keeps words mostly whole.
    const MAX_PIECE: usize = 5;
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut len = 0;
    for ch in text.chars() {
        let word_start = ch.is_whitespace() && current.chars().any(|c| !c.is_whitespace());
        if word_start || len >= MAX_PIECE {
            pieces.push(std::mem::take(&mut current));
            len = 0;
        }
        current.push(ch);
        len += 1;
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Splits serialized tool arguments into fragments of a few characters.
pub(super) fn json_fragments(json: &str) -> Vec<String> {
    const FRAGMENT: usize = 8;
    let chars: Vec<char> = json.chars().collect();
    chars.chunks(FRAGMENT).map(|c| c.iter().collect()).collect()
}

/// Text of an OpenAI or Anthropic `content` value: a string, or an array of
/// parts/blocks whose `text` fields are joined. Other parts are skipped.
pub(super) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_model_appends_suffix_once() {
        assert_eq!(served_model("gpt-4o"), "gpt-4o-mock-2026-01-01");
        assert_eq!(served_model("gpt-4o-2024-08-06"), "gpt-4o-2024-08-06");
        assert_eq!(
            served_model("claude-sonnet-4-5-20250929"),
            "claude-sonnet-4-5-20250929"
        );
        assert_eq!(
            served_model("claude-sonnet-4-5"),
            "claude-sonnet-4-5-mock-2026-01-01"
        );
        assert_eq!(served_model("x-mock-2026-01-01"), "x-mock-2026-01-01");
    }

    #[test]
    fn text_pieces_reassemble_and_stay_small() {
        let text = "Hello from the Sluice mock. Supercalifragilistic!";
        let pieces = text_pieces(text);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.len() > 5);
        assert!(pieces.iter().all(|p| p.chars().count() <= 5));
        assert_eq!(pieces[1], " from");
    }

    #[test]
    fn tokens_round_up_with_minimum_one() {
        assert_eq!(tokens(0), 1);
        assert_eq!(tokens(4), 1);
        assert_eq!(tokens(5), 2);
    }

    #[test]
    fn limit_cuts_long_text() {
        let answer = limit(Answer::text("a".repeat(100)), Some(3));
        assert_eq!(
            answer,
            Answer::Text {
                text: "a".repeat(12),
                finish: Finish::Length
            }
        );
        let short = limit(Answer::text("hi"), Some(3));
        assert_eq!(short, Answer::text("hi"));
    }

    #[test]
    fn default_calls_tool_then_acknowledges_result() {
        let mut view = ChatView {
            last_user_text: "weather?".into(),
            last_is_user: true,
            tools: vec![ToolDef {
                name: "get_weather".into(),
                schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            ..ChatView::default()
        };
        assert_eq!(
            default_answer(&view),
            Answer::Tools(vec![("get_weather".into(), json!({"city": "demo"}))])
        );
        view.tool_result = Some("sunny".into());
        assert_eq!(
            default_answer(&view),
            Answer::text("Tool result received: sunny")
        );
        view.tool_choice = ToolChoice::None;
        view.tool_result = None;
        assert_eq!(
            default_answer(&view),
            Answer::text("Hello from the Sluice mock. You said: weather?")
        );
    }
}
