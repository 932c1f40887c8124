//! Embeddings as an [`Operation`]: the same plan, admission, breakers, conditions and retry
//! budget as chat; no hedging (an embedding has no first token to wait for) and no output
//! tokens to reserve.

use sluice_providers::{Deployment, Embeddings, ProviderError, Upstream};
use sluice_types::EmbeddingsRequest;

use crate::admission::Demand;
use crate::operation::{FirstAnswer, Operation};
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
