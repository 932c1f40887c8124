//! Structured output as each target can take it: the request's `response_format` becomes the
//! provider's native JSON schema, its forced tool (Anthropic, in `sluice_wire::anthropic`), JSON
//! mode plus an instruction, or an instruction alone, as the provider's
//! [`StructuredSupport`] declares (`[providers.X] structured_output`).
//!
//! Only the request is adapted here; the answer is checked against the schema by the pipeline
//! (`sluice_pipeline::structured`), whatever the target did with it.

use std::borrow::Cow;

use sluice_types::{ChatRequest, Part, ResponseFormat};

use crate::{Deployment, ProviderKind};

/// What a provider supports of structured output, as its configuration declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StructuredSupport {
    /// A JSON schema: OpenAI's `response_format: json_schema`; for Anthropic, a forced tool.
    #[default]
    JsonSchema,
    /// JSON mode only (`response_format: json_object`): a schema is sent as an instruction,
    /// with JSON mode on.
    JsonObject,
    /// Neither: an instruction (with the schema) in the system prompt, no `response_format`.
    None,
}

impl StructuredSupport {
    pub const ALL: [StructuredSupport; 3] = [
        StructuredSupport::JsonSchema,
        StructuredSupport::JsonObject,
        StructuredSupport::None,
    ];

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            StructuredSupport::JsonSchema => "json_schema",
            StructuredSupport::JsonObject => "json_object",
            StructuredSupport::None => "none",
        }
    }

    pub fn parse(value: &str) -> Option<StructuredSupport> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether a provider of this kind can declare it: Anthropic has no JSON mode.
    pub fn available_for(self, kind: ProviderKind) -> bool {
        !(kind == ProviderKind::Anthropic && self == StructuredSupport::JsonObject)
    }
}

/// How a request's structured output goes to one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    /// As the client asked, translated by the wire encoder (native schema, JSON mode, or
    /// Anthropic's forced tool).
    Native,
    /// JSON mode on, the schema as an instruction.
    JsonModeAndInstruction,
    /// No `response_format`: an instruction only.
    Instruction,
}

/// How `req`'s structured output is carried to `deployment`; `None` when it asks for none.
pub fn carriage(req: &ChatRequest, deployment: &Deployment) -> Option<Carriage> {
    let support = deployment.structured_output;
    let anthropic = deployment.kind == ProviderKind::Anthropic;
    Some(match req.response_format.as_ref()? {
        ResponseFormat::Text => return None,
        ResponseFormat::JsonSchema { .. } => match support {
            // Anthropic's forced tool cannot sit beside the request's own tools.
            StructuredSupport::JsonSchema if anthropic && !req.tools.is_empty() => {
                Carriage::Instruction
            }
            StructuredSupport::JsonSchema => Carriage::Native,
            StructuredSupport::JsonObject if !anthropic => Carriage::JsonModeAndInstruction,
            StructuredSupport::JsonObject | StructuredSupport::None => Carriage::Instruction,
        },
        ResponseFormat::JsonObject => match support {
            _ if anthropic => Carriage::Instruction,
            StructuredSupport::JsonSchema | StructuredSupport::JsonObject => Carriage::Native,
            StructuredSupport::None => Carriage::Instruction,
        },
    })
}

/// The request as `deployment` can take it (unchanged unless an instruction is needed).
pub fn adapt<'a>(req: &'a ChatRequest, deployment: &Deployment) -> Cow<'a, ChatRequest> {
    let carriage = carriage(req, deployment);
    let (Some(carriage), Some(format)) = (carriage, req.response_format.as_ref()) else {
        return Cow::Borrowed(req);
    };
    if carriage == Carriage::Native {
        return Cow::Borrowed(req);
    }
    let mut adapted = req.clone();
    adapted.system.push(Part::text(instruction(format)));
    adapted.response_format = match carriage {
        Carriage::JsonModeAndInstruction => Some(ResponseFormat::JsonObject),
        Carriage::Native | Carriage::Instruction => None,
    };
    Cow::Owned(adapted)
}

/// The instruction standing in for a response format the target cannot take.
pub fn instruction(format: &ResponseFormat) -> String {
    const ONLY_JSON: &str =
        "Do not add any other text: no explanation, no Markdown, no code fences.";
    match format {
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            ..
        } => {
            let about = description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!(
                "Answer with a single JSON value `{name}`{about} that conforms to this JSON Schema. \
                 {ONLY_JSON}\nJSON Schema: {schema}"
            )
        }
        ResponseFormat::JsonObject | ResponseFormat::Text => {
            format!("Answer with a single JSON object. {ONLY_JSON}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(kind: ProviderKind, support: StructuredSupport) -> Deployment {
        Deployment {
            name: "d".into(),
            provider: "p".into(),
            kind,
            base_url: "http://h/v1".parse().unwrap(),
            model: "m".into(),
            api_key: None,
            default_max_tokens: 16,
            structured_output: support,
            http_version: Default::default(),
        }
    }

    fn request(format: Option<ResponseFormat>) -> ChatRequest {
        let mut req = sluice_wire::openai::decode_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        req.response_format = format;
        req
    }

    fn schema() -> ResponseFormat {
        ResponseFormat::JsonSchema {
            name: "city".into(),
            description: None,
            schema: json!({"type": "object", "required": ["name"]}),
            strict: Some(true),
        }
    }

    #[test]
    fn each_declared_support_gets_the_format_it_can_take() {
        use Carriage::*;
        use ProviderKind::*;
        use StructuredSupport as S;
        let with_tools = {
            let mut req = request(Some(schema()));
            req.tools.push(sluice_types::Tool {
                name: "t".into(),
                description: None,
                parameters: json!({"type": "object"}),
                strict: None,
                cache_control: None,
            });
            req
        };
        let cases = [
            (request(Some(schema())), OpenAi, S::JsonSchema, Some(Native)),
            (
                request(Some(schema())),
                OpenAiCompatible,
                S::JsonObject,
                Some(JsonModeAndInstruction),
            ),
            (
                request(Some(schema())),
                OpenAiCompatible,
                S::None,
                Some(Instruction),
            ),
            (
                request(Some(schema())),
                Anthropic,
                S::JsonSchema,
                Some(Native),
            ),
            (
                request(Some(schema())),
                Anthropic,
                S::None,
                Some(Instruction),
            ),
            (with_tools, Anthropic, S::JsonSchema, Some(Instruction)),
            (
                request(Some(ResponseFormat::JsonObject)),
                OpenAi,
                S::JsonSchema,
                Some(Native),
            ),
            (
                request(Some(ResponseFormat::JsonObject)),
                OpenAiCompatible,
                S::None,
                Some(Instruction),
            ),
            (
                request(Some(ResponseFormat::JsonObject)),
                Anthropic,
                S::JsonSchema,
                Some(Instruction),
            ),
            (
                request(Some(ResponseFormat::Text)),
                OpenAiCompatible,
                S::None,
                None,
            ),
            (request(None), Anthropic, S::None, None),
        ];
        for (req, kind, support, expected) in cases {
            assert_eq!(
                carriage(&req, &deployment(kind, support)),
                expected,
                "{kind:?} {support:?}"
            );
        }
    }

    #[test]
    fn an_instruction_carries_the_schema_and_drops_or_lowers_the_format() {
        let req = request(Some(schema()));
        let none = adapt(
            &req,
            &deployment(ProviderKind::OpenAiCompatible, StructuredSupport::None),
        );
        assert_eq!(none.response_format, None);
        let Some(Part::Text { text, .. }) = none.system.last() else {
            panic!("no instruction: {:?}", none.system);
        };
        assert!(text.contains(r#""required":["name"]"#), "{text}");
        assert!(text.contains("no code fences"), "{text}");

        let object = adapt(
            &req,
            &deployment(
                ProviderKind::OpenAiCompatible,
                StructuredSupport::JsonObject,
            ),
        );
        assert_eq!(object.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(object.system.len(), 1);

        let native = adapt(
            &req,
            &deployment(ProviderKind::OpenAi, StructuredSupport::JsonSchema),
        );
        assert!(matches!(native, Cow::Borrowed(_)));
    }

    #[test]
    fn declared_support_parses_and_anthropic_has_no_json_mode() {
        for s in StructuredSupport::ALL {
            assert_eq!(StructuredSupport::parse(s.as_str()), Some(s));
        }
        assert_eq!(StructuredSupport::parse("yes"), None);
        assert!(!StructuredSupport::JsonObject.available_for(ProviderKind::Anthropic));
        assert!(StructuredSupport::None.available_for(ProviderKind::Anthropic));
        assert!(StructuredSupport::JsonObject.available_for(ProviderKind::OpenAiCompatible));
    }
}
