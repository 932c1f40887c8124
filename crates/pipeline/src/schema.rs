//! Whether an answer holds the JSON the request asked for (`response_format: json_schema`):
//! recorded as `schema_valid` on live requests and drills, so a deployment whose structured
//! output drifts is visible before it has to carry the traffic.

use sluice_types::{ChatRequest, ChatResponse, Part, ResponseFormat};

/// `None` when the request asked for no schema.
pub(crate) fn check_response(req: &ChatRequest, response: &ChatResponse) -> Option<bool> {
    let text: String = response
        .choices
        .first()?
        .parts
        .iter()
        .filter_map(|part| match part {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    check_text(req, &text)
}

/// `None` when the request asked for no schema.
pub(crate) fn check_text(req: &ChatRequest, text: &str) -> Option<bool> {
    let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format else {
        return None;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Some(false);
    };
    // A schema the validator cannot compile says nothing about the answer.
    let validator = jsonschema::validator_for(schema).ok()?;
    Some(validator.is_valid(&value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(format: Option<ResponseFormat>) -> ChatRequest {
        let mut req = sluice_wire::openai::decode_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        req.response_format = format;
        req
    }

    #[test]
    fn checks_answers_against_the_requested_schema() {
        let req = request(Some(ResponseFormat::JsonSchema {
            name: "city".into(),
            description: None,
            schema: json!({
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            }),
            strict: Some(true),
        }));
        assert_eq!(check_text(&req, r#"{"name":"Lyon"}"#), Some(true));
        assert_eq!(check_text(&req, r#"{"city":"Lyon"}"#), Some(false));
        assert_eq!(check_text(&req, "Sure! Here is the JSON"), Some(false));
        assert_eq!(check_text(&request(None), "anything"), None);
        assert_eq!(
            check_text(&request(Some(ResponseFormat::JsonObject)), "{}"),
            None
        );
    }
}
