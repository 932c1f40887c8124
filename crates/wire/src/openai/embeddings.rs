//! `/v1/embeddings` helpers. Embeddings are OpenAI-dialect only and passed through: the
//! client body is kept whole and only `model` is rewritten to the deployment's model.

use serde_json::{Value, json};
use sluice_types::{EmbeddingsRequest, Usage};

use crate::WireError;
use crate::json::{self, Obj};

/// Decodes a client embeddings body. Errors: invalid UTF-8 or JSON, a missing or non-string
/// `model`, a missing `input`.
pub fn decode_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, WireError> {
    let root = json::parse_body(body)?;
    let obj = Obj::root(&root)?;
    let model = obj.req_str("model")?.to_owned();
    obj.required("input")?;
    Ok(EmbeddingsRequest {
        model,
        body: obj.map.clone(),
    })
}

/// The client body with `model` replaced.
pub fn encode_embeddings_request(req: &EmbeddingsRequest, model: &str) -> Vec<u8> {
    let mut body = req.body.clone();
    body.insert("model".into(), json!(model));
    json::to_vec(&Value::Object(body))
}

/// `usage.prompt_tokens` of an upstream embeddings response, as input tokens.
pub fn embeddings_usage(body: &[u8]) -> Option<Usage> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let prompt_tokens = root.get("usage")?.get("prompt_tokens")?.as_u64()?;
    Some(Usage {
        input_tokens: u32::try_from(prompt_tokens).ok()?,
        ..Usage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_model() {
        let req = decode_embeddings_request(
            br#"{"model":"embed","input":["a","b"],"encoding_format":"float","dimensions":256}"#,
        )
        .unwrap();
        assert_eq!(req.model, "embed");
        let out: Value =
            serde_json::from_slice(&encode_embeddings_request(&req, "text-embedding-3-small"))
                .unwrap();
        assert_eq!(
            out,
            json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float", "dimensions": 256})
        );
    }

    #[test]
    fn validates_model_and_input() {
        let err = decode_embeddings_request(br#"{"input":"x"}"#).unwrap_err();
        assert_eq!(err.to_string(), "`model` is required");
        let err = decode_embeddings_request(br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(err.to_string(), "`input` is required");
    }

    #[test]
    fn reads_prompt_tokens() {
        let body = br#"{"object":"list","data":[],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(embeddings_usage(body).map(|u| u.input_tokens), Some(8));
        assert_eq!(embeddings_usage(b"{}"), None);
    }
}
