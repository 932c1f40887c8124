//! Embeddings dispatch: same planning and fallback rules as chat, no streaming.

use std::time::Instant;

use sluice_providers::Embeddings;
use sluice_types::{Classify, EmbeddingsRequest};

use crate::{Caller, Exchange, Gateway, PipelineError, Provenance};

impl Gateway {
    pub async fn embeddings(
        &self,
        mut exchange: Exchange,
        caller: &Caller,
        req: EmbeddingsRequest,
    ) -> Result<(Embeddings, Provenance), (Exchange, PipelineError)> {
        exchange.set_alias(&req.model, false);
        exchange.set_end_user(req.body.get("user").and_then(|u| u.as_str()));
        let plan = match self.plan(caller, &req.model) {
            Ok(plan) => plan,
            Err(e) => return Err((exchange, e)),
        };
        for (index, deployment) in plan.deployments.iter().enumerate() {
            let started = Instant::now();
            match self.inner.upstream.embeddings(deployment, &req).await {
                Ok(embeddings) => {
                    exchange.attempt(deployment, started, Ok(()));
                    let served_model = embeddings
                        .model
                        .clone()
                        .unwrap_or_else(|| deployment.model.clone());
                    exchange.served_by(deployment, &served_model);
                    if let Some(usage) = &embeddings.usage {
                        exchange.usage(usage);
                    }
                    let provenance = Provenance::of(&exchange, &plan, deployment, &served_model);
                    exchange.finish(200);
                    return Ok((embeddings, provenance));
                }
                Err(e) => {
                    exchange.attempt(deployment, started, Err(&e));
                    if !(index + 1 < plan.deployments.len() && e.retryable()) {
                        return Err((exchange, e.into()));
                    }
                }
            }
        }
        Err((
            exchange,
            PipelineError::Routing(sluice_routing::RoutingError::UnknownAlias(
                req.model.clone(),
            )),
        ))
    }
}
