//! Checks the fuzz targets share. A target fails by panicking; the checks here are properties
//! the wire crate promises, not just "does not panic".

use serde_json::Value;
use sluice_types::ChatRequest;
use sluice_wire::{anthropic, openai};

const MODEL: &str = "fuzz-model";

/// Encodes a decoded client request for every upstream the gateway has. Each encoder may refuse
/// (a parameter the target cannot honour), but what it produces must be a JSON object that the
/// same dialect's decoder accepts again: the gateway should never send an upstream a body it
/// would itself reject from a client.
pub fn encode_everywhere(req: &ChatRequest) {
    for flavor in [
        openai::OpenAiFlavor::OpenAi,
        openai::OpenAiFlavor::Compatible,
    ] {
        let options = openai::EncodeOptions {
            model: MODEL,
            flavor,
        };
        if let Ok(body) = openai::encode_chat_request(req, &options) {
            json_object(&body, "openai::encode_chat_request");
            if let Err(e) = openai::decode_chat_request(&body) {
                panic!(
                    "{flavor:?} encoding does not decode again ({e}): {}",
                    text(&body)
                );
            }
        }
    }

    if let Ok(body) = anthropic::encode_count_tokens_request(req, MODEL) {
        json_object(&body, "anthropic::encode_count_tokens_request");
    }

    let options = anthropic::EncodeOptions {
        model: MODEL,
        default_max_tokens: 1024,
    };
    if let Ok(encoded) = anthropic::encode_chat_request(req, &options) {
        json_object(&encoded.body, "anthropic::encode_chat_request");
        if let Err(e) = anthropic::decode_chat_request(&encoded.body) {
            panic!(
                "Anthropic encoding does not decode again ({e}): {}",
                text(&encoded.body)
            );
        }
    }
}

fn json_object(body: &[u8], what: &str) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => value,
        other => panic!("{what} produced {other:?}: {}", text(body)),
    }
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}
