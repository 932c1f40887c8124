//! Embeddings as an [`Operation`]: the same plan, admission, breakers, conditions and retry
//! budget as chat; no hedging (an embedding has no first token to wait for) and no output
//! tokens to reserve.

use sluice_providers::{Deployment, Embeddings, ProviderError, Upstream};
use sluice_types::EmbeddingsRequest;

use serde_json::Value;
use sluice_types::record::Audit;

use crate::admission::Demand;
use crate::hooks::{HookContext, HookError, Hooks};
use crate::operation::{FirstAnswer, Hooked, Operation};
use crate::stages::{Dispatched, Served};
use crate::tokens::estimate_embeddings_input;
use crate::{Exchange, Gateway, PipelineError, Provenance, Unsettled};

impl Operation for EmbeddingsRequest {
    type Answer = Embeddings;

    fn model(&self) -> &str {
        &self.model
    }

    fn end_user(&self) -> Option<&str> {
        self.body.get("user").and_then(|u| u.as_str())
    }

    fn demand(&self) -> Demand {
        Demand {
            input_tokens: estimate_embeddings_input(self),
            max_tokens: None,
            generates: false,
        }
    }

    fn prompt_tokens(&self) -> u32 {
        estimate_embeddings_input(self)
    }

    /// The texts of `input` (a string or a list of strings; token arrays carry no text)
    /// through the route's embeddings hooks.
    fn run_hooks(
        &mut self,
        hooks: &Hooks,
        context: HookContext<'_>,
        audit: &mut Audit,
    ) -> Result<Hooked<Embeddings>, HookError> {
        let mut inputs: Vec<&mut String> = match self.body.get_mut("input") {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => items
                .iter_mut()
                .filter_map(|item| match item {
                    Value::String(text) => Some(text),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if !inputs.is_empty() {
            hooks.on_embeddings(context, &mut inputs, audit)?;
        }
        Ok(Hooked::default())
    }

    async fn send(
        &self,
        upstream: Upstream,
        deployment: &Deployment,
        _first: FirstAnswer,
    ) -> Result<Embeddings, ProviderError> {
        upstream.embeddings(deployment, self).await
    }
}

impl Gateway {
    /// Settles an embeddings answer: served model and usage on the record, which is submitted.
    pub fn settle_embeddings(
        &self,
        mut exchange: Exchange,
        dispatched: Dispatched<EmbeddingsRequest>,
    ) -> Result<(Embeddings, Provenance), Unsettled> {
        let Served::Upstream(won) = dispatched.served else {
            return Err(Box::new((
                exchange,
                PipelineError::Internal("embeddings answered by a hook"),
            )));
        };
        let deployment = &won.candidate.health.deployment;
        let embeddings = won.answer;
        let served_model = embeddings
            .model
            .clone()
            .unwrap_or_else(|| deployment.model.clone());
        exchange.served_by(deployment, &served_model);
        exchange.capture_response(&embeddings.raw);
        if let Some(usage) = &embeddings.usage {
            exchange.usage(usage);
        }
        let provenance = Provenance::of(
            &exchange,
            dispatched.plan.alias(),
            deployment,
            &served_model,
        );
        exchange.finish(200);
        Ok((embeddings, provenance))
    }
}
