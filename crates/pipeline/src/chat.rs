//! Chat as an [`Operation`]: how one attempt is sent (a stream's first content event is awaited
//! before it counts as an answer), and how the answer settles into the record.
//!
//! A request moves on to another attempt only while nothing has reached the client: for
//! streams, the first upstream event is awaited before the stream is handed back, so a failure
//! before it still falls back. After that, a failure (or the route's total timeout) ends the
//! stream with an error event and a record that says so ([`crate::stream`]).

use std::sync::Arc;

use futures_util::StreamExt;
use sluice_providers::{
    Completion, CompletionStream, Deployment, ProviderError, Reply, StreamChunk, Upstream,
};
use sluice_routing::RoutePlan;
use sluice_types::record::{Audit, SchemaCheck};
use sluice_types::{ChatRequest, ChatResponse, FinishReason, StreamEvent, Usage};

use crate::admission::Demand;
use crate::hooks::{HookContext, HookError, Hooks};
use crate::operation::{FirstAnswer, Hooked, Operation};
use crate::stages::{Dispatched, Served};
use crate::stream::GuardedStream;
use crate::structured::{SchemaError, Structured};
use crate::tokens::{estimate_input, estimate_text};
use crate::{Exchange, Gateway, PipelineError, Unsettled};

/// What a chat attempt got back before anything reached the client.
pub enum ChatAnswer {
    Complete(Completion),
    /// The chunks up to the first content event, and the rest of the stream.
    Stream(Vec<StreamChunk>, CompletionStream),
}

/// Where an answer came from; the server turns it into response headers.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub request_id: String,
    pub alias: Arc<str>,
    pub deployment: String,
    pub provider: String,
    /// The upstream's bytes may go to the client unchanged: the provider spoke the client's
    /// dialect and no hook of the route reads the answer.
    pub passthrough: bool,
    /// The model as the provider reported it.
    pub served_model: String,
    pub attempts: usize,
    /// The caller's budgets and rate limits after admission.
    pub quota: Arc<crate::QuotaState>,
    /// What the route's policies found and did so far ([`Audit::summary`]).
    pub policy: Option<String>,
}

/// The provider and deployment named on answers a hook gave.
const GATEWAY: &str = "sluice";

impl Provenance {
    pub(crate) fn of(
        exchange: &Exchange,
        alias: &Arc<str>,
        deployment: &Deployment,
        served_model: &str,
    ) -> Self {
        Provenance {
            request_id: exchange.id.to_string(),
            alias: alias.clone(),
            deployment: deployment.name.clone(),
            provider: deployment.provider.clone(),
            passthrough: deployment.kind.dialect() == exchange.dialect(),
            served_model: served_model.to_owned(),
            attempts: exchange.attempts(),
            quota: exchange.quota().clone(),
            policy: exchange.policy().summary(),
        }
    }

    /// An answer a hook gave: the gateway is its provider.
    fn of_gateway(exchange: &Exchange, alias: &Arc<str>, served_model: &str) -> Self {
        Provenance {
            request_id: exchange.id.to_string(),
            alias: alias.clone(),
            deployment: GATEWAY.to_owned(),
            provider: GATEWAY.to_owned(),
            passthrough: false,
            served_model: served_model.to_owned(),
            attempts: 0,
            quota: exchange.quota().clone(),
            policy: exchange.policy().summary(),
        }
    }
}

/// A settled chat request, ready to encode.
pub enum Settled {
    /// A whole answer. The record is already submitted.
    Complete {
        completion: Completion,
        provenance: Provenance,
    },
    /// A stream whose first upstream event has arrived. It settles the record when it ends or
    /// is dropped.
    Stream {
        stream: Box<GuardedStream>,
        provenance: Provenance,
    },
}

impl Operation for ChatRequest {
    type Answer = ChatAnswer;

    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self) -> bool {
        self.stream
    }

    fn end_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn demand(&self) -> Demand {
        Demand {
            input_tokens: estimate_input(self),
            max_tokens: self.max_tokens,
            generates: true,
        }
    }

    fn bound_output(&mut self, max_tokens: Option<u32>) {
        self.max_tokens = max_tokens;
    }

    fn prompt_tokens(&self) -> u32 {
        estimate_input(self)
    }

    fn hedges(&self) -> bool {
        true
    }

    fn run_hooks(
        &mut self,
        hooks: &Hooks,
        context: HookContext<'_>,
        audit: &mut Audit,
    ) -> Result<Hooked<ChatAnswer>, HookError> {
        let started = hooks.on_request(context, self, audit)?;
        Ok(Hooked {
            watchers: started.watchers,
            answer: started.answer.map(|response| {
                ChatAnswer::Complete(Completion {
                    response: *response,
                    raw: bytes::Bytes::new(),
                })
            }),
        })
    }

    async fn send(
        &self,
        upstream: Upstream,
        deployment: &Deployment,
        first: FirstAnswer,
    ) -> Result<ChatAnswer, ProviderError> {
        let call = async {
            match upstream.chat(deployment, self).await? {
                Reply::Complete(completion) => Ok(ChatAnswer::Complete(completion)),
                Reply::Stream(stream) => {
                    let (first, rest) = first_event(&deployment.provider, stream).await?;
                    Ok(ChatAnswer::Stream(first, rest))
                }
            }
        };
        if !self.stream {
            return call.await;
        }
        tokio::time::timeout(first.within, call)
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Timeout {
                    provider: deployment.provider.clone(),
                    phase: first.phase,
                })
            })
    }

    fn structured(&self) -> Result<Option<Structured>, SchemaError> {
        Structured::of(self)
    }

    fn vet(
        structured: &Structured,
        answer: &mut ChatAnswer,
        deployment: &Deployment,
    ) -> Result<Option<SchemaCheck>, ProviderError> {
        match answer {
            ChatAnswer::Complete(completion) => structured
                .vet(&mut completion.response)
                .map(Some)
                .map_err(|violation| ProviderError::SchemaViolation {
                    provider: deployment.provider.clone(),
                    detail: violation.0,
                }),
            ChatAnswer::Stream(..) => Ok(None),
        }
    }

    fn filtered(answer: &ChatAnswer) -> bool {
        match answer {
            ChatAnswer::Complete(completion) => completion
                .response
                .choices
                .iter()
                .any(|c| c.finish_reason == Some(FinishReason::ContentFilter)),
            ChatAnswer::Stream(..) => false,
        }
    }

    fn drill(&self, gateway: &Gateway, live: &Exchange, plan: &RoutePlan) {
        gateway.drill(live, plan, self);
    }
}

impl Gateway {
    /// Settles a chat answer: the response hooks of the route, usage (estimated and flagged
    /// when the provider reported none), schema validity, provenance. A whole answer submits
    /// the record now; a stream settles it when it ends or is dropped.
    pub fn settle(
        &self,
        mut exchange: Exchange,
        dispatched: Dispatched<ChatRequest>,
    ) -> Result<Settled, Unsettled> {
        let Dispatched {
            request,
            plan,
            mut watchers,
            deadline,
            served,
            structured,
        } = dispatched;
        // A structured answer is re-encoded from the checked (maybe repaired) canonical one.
        let raw_ok = !watchers.read_output() && structured.is_none();
        let alias = plan.alias();
        let (won, answer) = match served {
            Served::Upstream(won) => (Some((won.candidate, won.slot)), won.answer),
            Served::Gateway(answer) => (None, answer),
        };
        match answer {
            ChatAnswer::Complete(mut completion) => {
                // Anthropic answers carry no timestamp; OpenAI clients expect one.
                if completion.response.created == 0 {
                    completion.response.created = unix_now();
                }
                if let Err(e) = watchers.on_response(&mut completion.response, exchange.audit()) {
                    return Err(Box::new((exchange, e.into())));
                }
                let response = &completion.response;
                let mut provenance = match &won {
                    Some((candidate, _)) => {
                        let deployment = &candidate.health.deployment;
                        exchange.served_by(deployment, &response.model);
                        Provenance::of(&exchange, alias, deployment, &response.model)
                    }
                    None => Provenance::of_gateway(&exchange, alias, &response.model),
                };
                provenance.passthrough &= raw_ok;
                exchange.first_token();
                let usage = response
                    .usage
                    .unwrap_or_else(|| estimate_usage(&request, response));
                exchange.usage(&usage);
                if let Some((candidate, _)) = &won {
                    exchange.attempt_usage(candidate.health.name(), &usage);
                }
                exchange.set_schema_valid(structured.as_ref().map(|s| s.holds(response)));
                exchange.capture_response(&completion.raw);
                // Many compatible servers ignore `n` and answer one choice: that is a parameter
                // dropped, said as an error rather than passed off as the answer asked for.
                let asked = request.n.unwrap_or(1);
                let got = u32::try_from(response.choices.len()).unwrap_or(u32::MAX);
                if got < asked {
                    let error = PipelineError::ChoicesMissing {
                        deployment: provenance.deployment.clone(),
                        asked,
                        got,
                    };
                    return Err(Box::new((exchange, error)));
                }
                exchange.finish(200);
                Ok(Settled::Complete {
                    completion,
                    provenance,
                })
            }
            ChatAnswer::Stream(held, rest) => {
                // Only an upstream answers with a stream.
                let Some((candidate, slot)) = won else {
                    return Err(Box::new((
                        exchange,
                        PipelineError::Internal("a stream without an upstream"),
                    )));
                };
                let deployment = candidate.health.deployment.clone();
                let served_model = held
                    .iter()
                    .flat_map(|chunk| chunk.events.iter())
                    .find_map(|e| match e {
                        StreamEvent::Start { model, .. } => Some(model.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| deployment.model.clone());
                exchange.served_by(&deployment, &served_model);
                exchange.first_token();
                let mut provenance = Provenance::of(&exchange, alias, &deployment, &served_model);
                provenance.passthrough &= raw_ok;
                let stream =
                    GuardedStream::new(held, rest, exchange, slot, deadline, request, watchers)
                        .checking(structured);
                Ok(Settled::Stream {
                    stream: Box::new(stream),
                    provenance,
                })
            }
        }
    }
}

/// Usage of an answer the provider reported none for: the gateway's estimate, flagged.
fn estimate_usage(request: &ChatRequest, response: &ChatResponse) -> Usage {
    let output: String = response
        .choices
        .iter()
        .flat_map(|c| c.parts.iter())
        .filter_map(text_of)
        .collect();
    Usage {
        input_tokens: estimate_input(request),
        output_tokens: estimate_text(&output),
        estimated: true,
        ..Usage::default()
    }
}

pub(crate) fn unix_now() -> i64 {
    sluice_store::now_ms() / 1000
}

fn text_of(part: &sluice_types::Part) -> Option<&str> {
    match part {
        sluice_types::Part::Text { text, .. } => Some(text),
        sluice_types::Part::ToolCall(call) => Some(&call.arguments),
        _ => None,
    }
}

/// Chunks held back at most while waiting for the first content event (pings and other
/// empty events beyond it are passed on rather than buffered without bound).
const MAX_HELD_CHUNKS: usize = 256;

/// Waits for the first content event (text, a tool call, a finish — not the opening
/// `Start`/usage or a ping, which providers send before the model has produced anything), so
/// a failure or a stall before it can still fall back or be hedged. Returns the chunks up to
/// and including it.
pub(crate) async fn first_event(
    provider: &str,
    mut stream: CompletionStream,
) -> Result<(Vec<StreamChunk>, CompletionStream), ProviderError> {
    let mut held = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                let content = chunk
                    .events
                    .iter()
                    .any(|e| !matches!(e, StreamEvent::Start { .. } | StreamEvent::Usage(_)));
                held.push(chunk);
                if content || held.len() >= MAX_HELD_CHUNKS {
                    return Ok((held, stream));
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ProviderError::Truncated {
                    provider: provider.to_owned(),
                });
            }
        }
    }
}
