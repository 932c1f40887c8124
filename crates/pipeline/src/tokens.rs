//! Token estimates, for when a provider reports no usage (some OpenAI-compatible servers omit
//! it from streams). Figures from here are always marked `estimated` in the record.
//!
//! The estimate is one token per four bytes of text, the rule of thumb OpenAI documents for
//! English with its BPE tokenizers; it is off by tens of percent for code and other languages,
//! which is why it is labelled, never passed off as the provider's count.

use sluice_providers::{Deployment, ProviderError, Upstream};
use sluice_types::{ChatRequest, Part};

use crate::admission::Demand;
use crate::operation::{FirstAnswer, Operation};
use crate::stages::{Dispatched, Served};
use crate::{Exchange, Gateway, PipelineError, Provenance, Unsettled};

/// A prompt's token count, and whether the gateway estimated it.
#[derive(Debug, Clone, Copy)]
pub struct TokenCount {
    pub input_tokens: u32,
    pub estimated: bool,
}

/// `POST /v1/messages/count_tokens`: the request whose prompt is counted. Counting costs
/// nothing, so nothing is reserved; it is routed like any call (a deployment whose circuit is
/// open is skipped, a failing one falls back).
#[derive(Debug, Clone)]
pub struct CountTokens(pub ChatRequest);

impl Operation for CountTokens {
    /// The provider's own count, or `None` where it has no counting endpoint.
    type Answer = Option<u32>;

    fn model(&self) -> &str {
        &self.0.model
    }

    fn reserves(&self) -> bool {
        false
    }

    fn demand(&self) -> Demand {
        Demand {
            input_tokens: 0,
            max_tokens: None,
            generates: false,
        }
    }

    fn prompt_tokens(&self) -> u32 {
        0
    }

    async fn send(
        &self,
        upstream: Upstream,
        deployment: &Deployment,
        _first: FirstAnswer,
    ) -> Result<Option<u32>, ProviderError> {
        upstream.count_tokens(deployment, &self.0).await
    }
}

impl Gateway {
    /// Settles a count: the provider's, or the gateway's estimate (flagged).
    pub fn settle_count(
        &self,
        mut exchange: Exchange,
        dispatched: Dispatched<CountTokens>,
    ) -> Result<(TokenCount, Provenance), Unsettled> {
        let Served::Upstream(won) = dispatched.served else {
            return Err(Box::new((
                exchange,
                PipelineError::Internal("a token count answered by a hook"),
            )));
        };
        let deployment = &won.candidate.health.deployment;
        let count = match won.answer {
            Some(n) => TokenCount {
                input_tokens: n,
                estimated: false,
            },
            None => TokenCount {
                input_tokens: estimate_input(&dispatched.request.0),
                estimated: true,
            },
        };
        exchange.served_by(deployment, &deployment.model);
        exchange.usage(&sluice_types::Usage {
            input_tokens: count.input_tokens,
            estimated: count.estimated,
            ..Default::default()
        });
        let provenance = Provenance::of(
            &exchange,
            dispatched.plan.alias(),
            deployment,
            &deployment.model,
        );
        exchange.finish(200);
        Ok((count, provenance))
    }
}

/// Bytes of text per token in the estimate.
const BYTES_PER_TOKEN: usize = 4;

pub fn estimate_text(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// Estimated prompt tokens of a request: every text, tool definition and tool argument.
pub fn estimate_input(req: &ChatRequest) -> u32 {
    let mut bytes = 0usize;
    let mut add_parts = |parts: &[Part]| {
        for part in parts {
            bytes += part_bytes(part);
        }
    };
    add_parts(&req.system);
    for message in &req.messages {
        add_parts(&message.parts);
    }
    for tool in &req.tools {
        bytes += tool.name.len()
            + tool.description.as_ref().map_or(0, String::len)
            + tool.parameters.to_string().len();
    }
    u32::try_from(bytes.div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// Estimated input tokens of an embeddings request: its `input`, a string or a list of strings
/// (a pre-tokenised input counts one token per number).
pub fn estimate_embeddings_input(req: &sluice_types::EmbeddingsRequest) -> u32 {
    use serde_json::Value;
    fn tokens(value: &Value) -> usize {
        match value {
            Value::String(text) => text.len().div_ceil(BYTES_PER_TOKEN),
            Value::Number(_) => 1,
            Value::Array(items) => items.iter().map(tokens).sum(),
            _ => 0,
        }
    }
    u32::try_from(req.body.get("input").map_or(0, tokens)).unwrap_or(u32::MAX)
}

fn part_bytes(part: &Part) -> usize {
    match part {
        Part::Text { text, .. } => text.len(),
        Part::ToolCall(call) => call.name.len() + call.arguments.len(),
        Part::ToolResult { content, .. } => content.iter().map(part_bytes).sum(),
        // Images are priced by the provider from their pixels; without a reported count the
        // gateway cannot know it, so they add nothing to the estimate.
        Part::Image { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_four_bytes_per_token_rounding_up() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("abc"), 1);
        assert_eq!(estimate_text("abcdefgh"), 2);
        assert_eq!(estimate_text("abcdefghi"), 3);
    }

    #[test]
    fn embeddings_count_every_input() {
        let request = |input: serde_json::Value| sluice_types::EmbeddingsRequest {
            model: "e".into(),
            body: serde_json::json!({"model": "e", "input": input})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        assert_eq!(estimate_embeddings_input(&request("abcdefgh".into())), 2);
        assert_eq!(
            estimate_embeddings_input(&request(serde_json::json!(["abcd", "abcde"]))),
            3
        );
        assert_eq!(
            estimate_embeddings_input(&request(serde_json::json!([[1, 2, 3]]))),
            3
        );
    }
}
