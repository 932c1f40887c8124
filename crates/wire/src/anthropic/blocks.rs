//! Content-block wire shapes shared by the request, response and stream encoders.
//!
//! Content goes out as a plain string when it is a single text block without a cache marker
//! (as most clients send it), else as an array of blocks.

use serde::Serialize;
use serde_json::Value;

/// A string, or blocks. Also used for `system` and `tool_result.content`.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlock<'a>>),
}

impl<'a> WireContent<'a> {
    /// A single unmarked text block goes out as a plain string, like most clients send it.
    pub(crate) fn from_blocks(blocks: Vec<WireBlock<'a>>) -> Self {
        if let [
            WireBlock::Text {
                text,
                cache_control: None,
            },
        ] = blocks.as_slice()
        {
            return WireContent::Text(text);
        }
        if blocks.is_empty() {
            return WireContent::Text("");
        }
        WireContent::Blocks(blocks)
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WireBlock<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: WireImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<WireContent<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WireImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}
