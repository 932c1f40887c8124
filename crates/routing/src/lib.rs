//! Routing: which deployments may serve an alias, in the order they are tried.
//!
//! A [`Router`] is built once from configuration and swapped whole on reload. [`Router::plan`]
//! turns the model a client asked for into a [`RoutePlan`]; the pipeline walks the plan,
//! moving to the next deployment only on a retryable failure before the first byte reached the
//! client. Selection strategies, retry budgets, breakers and hedging build on this type.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_providers::Deployment;
use sluice_types::{Classify, ErrorKind, Origin};

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("the model `{0}` does not exist or is not served by this gateway")]
    UnknownAlias(String),
}

impl Classify for RoutingError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::NotFound
    }
    fn origin(&self) -> Origin {
        Origin::Client
    }
    fn retryable(&self) -> bool {
        false
    }
}

/// The deployments of one alias, in fallback order.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub alias: Arc<str>,
    pub deployments: Arc<[Arc<Deployment>]>,
}

/// Alias name -> deployments.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, RoutePlan>,
}

impl Router {
    /// `aliases` maps each alias to the deployments it routes to, in order.
    pub fn new(aliases: impl IntoIterator<Item = (String, Vec<Arc<Deployment>>)>) -> Router {
        let routes = aliases
            .into_iter()
            .map(|(alias, deployments)| {
                let plan = RoutePlan {
                    alias: Arc::from(alias.as_str()),
                    deployments: deployments.into(),
                };
                (alias, plan)
            })
            .collect();
        Router { routes }
    }

    pub fn plan(&self, model: &str) -> Result<RoutePlan, RoutingError> {
        self.routes
            .get(model)
            .cloned()
            .ok_or_else(|| RoutingError::UnknownAlias(model.to_owned()))
    }

    /// Every alias, sorted.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_providers::ProviderKind;

    fn deployment(name: &str) -> Arc<Deployment> {
        Arc::new(Deployment {
            name: name.into(),
            provider: "p".into(),
            kind: ProviderKind::OpenAiCompatible,
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api_key: None,
            default_max_tokens: 16,
        })
    }

    #[test]
    fn plans_deployments_in_configured_order() {
        let router = Router::new([("fast".to_owned(), vec![deployment("a"), deployment("b")])]);
        let plan = router.plan("fast").unwrap();
        assert_eq!(&*plan.alias, "fast");
        assert_eq!(
            plan.deployments
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(matches!(router.plan("slow"), Err(RoutingError::UnknownAlias(m)) if m == "slow"));
        assert_eq!(router.aliases().collect::<Vec<_>>(), ["fast"]);
    }
}
