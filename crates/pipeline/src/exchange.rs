//! [`Exchange`]: one request's record, from the first byte received to the last byte sent.
//!
//! It is created before anything can fail and submits its record exactly once: explicitly
//! through [`Exchange::finish`], or on drop (a client that disconnects mid-request still leaves
//! a record, with status 499 and `client_disconnected`).

use std::time::Instant;

use sluice_providers::Deployment;
use sluice_store::RecordSender;
use sluice_telemetry::{Metrics, Tracer};
use sluice_types::record::{
    AttemptOutcome, AttemptRecord, Audit, Endpoint, ErrorCode, Next, RequestRecord, SchemaCheck,
};

use std::sync::Arc;

use crate::admission::{PolicyEngine, QuotaState};
use crate::bodies::{Capture, Redact};
use crate::trace::{TraceContext, new_span_id};
use sluice_types::{Dialect, ErrorKind, RequestId, Usage};

use crate::{Caller, Gateway};

/// Status recorded for a request whose client went away before the answer was complete
/// (nginx's convention).
const CLIENT_CLOSED: u16 = 499;

#[derive(Debug)]
pub struct Exchange {
    pub id: RequestId,
    started: Instant,
    record: RequestRecord,
    sender: RecordSender,
    metrics: Metrics,
    tracer: Tracer,
    /// The request body as received, offered in case the route or key keeps bodies.
    offered_body: Option<bytes::Bytes>,
    capture: Option<Capture>,
    /// Prices the record and settles the hold when the exchange is submitted.
    policy: Arc<PolicyEngine>,
    /// The budget reservation made at admission, settled to actual use at submit.
    hold: Option<sluice_policy::HoldGuard>,
    quota: Arc<QuotaState>,
    submitted: bool,
}

impl Gateway {
    /// Starts the record of a new request.
    pub fn begin(&self, endpoint: Endpoint, dialect: Dialect) -> Exchange {
        Exchange::new(
            self.inner.records.clone(),
            self.inner.metrics.clone(),
            self.inner.tracer.clone(),
            self.config.policy.clone(),
            endpoint,
            dialect,
        )
    }
}

impl Exchange {
    pub(crate) fn new(
        sender: RecordSender,
        metrics: Metrics,
        tracer: Tracer,
        policy: Arc<PolicyEngine>,
        endpoint: Endpoint,
        dialect: Dialect,
    ) -> Exchange {
        let id = RequestId::new();
        Exchange {
            id,
            started: Instant::now(),
            record: RequestRecord {
                id: id.to_string(),
                started_at: sluice_store::now_ms(),
                endpoint,
                dialect,
                status: CLIENT_CLOSED,
                error_code: Some(ErrorCode::ClientDisconnected),
                ..RequestRecord::default()
            },
            sender,
            metrics,
            tracer,
            offered_body: None,
            capture: None,
            policy,
            hold: None,
            quota: Arc::default(),
            submitted: false,
        }
        .traced(TraceContext::from_traceparent(None))
    }

    fn traced(mut self, trace: TraceContext) -> Exchange {
        self.record.trace_id = Some(trace.trace_id);
        self.record.parent_span_id = trace.parent_span_id;
        self.record.span_id = Some(new_span_id());
        self
    }

    /// Continues the client's trace (its `traceparent` header); without one the request
    /// keeps the new trace it started with.
    pub fn set_traceparent(&mut self, header: Option<&str>) {
        if header.is_some() {
            let trace = TraceContext::from_traceparent(header);
            self.record.trace_id = Some(trace.trace_id);
            self.record.parent_span_id = trace.parent_span_id;
        }
    }

    /// The client's body, kept only if the route or key turns out to keep bodies (cheap: the
    /// bytes are shared, not copied, until [`Gateway::keep_bodies`] decides).
    pub fn offer_request_body(&mut self, body: bytes::Bytes) {
        self.offered_body = Some(body);
    }

    /// Starts keeping this request's bodies.
    pub(crate) fn capture_bodies(&mut self, max_bytes: usize, redact: Arc<dyn Redact>) {
        let request = self.offered_body.take();
        self.capture = Some(Capture::new(max_bytes, redact, request));
    }

    /// This request's bodies are not kept: the offered one is let go now. It shares the buffer
    /// the client connection read it into, which it would otherwise hold to the end of the
    /// exchange (a whole stream).
    pub(crate) fn decline_bodies(&mut self) {
        self.offered_body = None;
    }

    /// Adds to the kept response body, when bodies are kept.
    pub(crate) fn capture_response(&mut self, bytes: &[u8]) {
        if let Some(capture) = &mut self.capture {
            capture.response(bytes);
        }
    }

    /// The trace id (for the upstream `traceparent` of each attempt).
    pub(crate) fn trace_id(&self) -> &str {
        self.record.trace_id.as_deref().unwrap_or_default()
    }

    /// When the request started, for the attempts' offsets.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// A drill of a live request: its own record, owned by nobody (its cost is the drill's).
    pub(crate) fn drill_of(&self, alias: &str) -> Exchange {
        let mut drill = Exchange::new(
            self.sender.clone(),
            self.metrics.clone(),
            self.tracer.clone(),
            self.policy.clone(),
            self.record.endpoint,
            self.record.dialect,
        );
        // A drill is part of the live request's trace: a sibling of its attempts.
        drill.record.trace_id = self.record.trace_id.clone();
        drill.record.parent_span_id = self.record.span_id.clone();
        drill.record.drill_of = Some(self.record.id.clone());
        drill.record.alias = Some(alias.to_owned());
        drill.record.stream = self.record.stream;
        drill
    }

    pub fn id(&self) -> &RequestId {
        &self.id
    }

    pub fn set_caller(&mut self, caller: &Caller) {
        self.record.tenant = Some(caller.key.tenant.clone());
        self.record.key_id = Some(caller.key.id.clone());
        self.record.organisation = caller.key.organisation.clone();
        self.record.team = caller.key.team.clone();
        self.record.project = caller.key.project.clone();
        if self.record.user.is_none() {
            self.record.user = caller.key.user.clone();
        }
    }

    /// The end user named by the request itself (`user`, `metadata.user_id`); it wins over the
    /// key's bound user.
    pub fn set_end_user(&mut self, user: Option<&str>) {
        if let Some(user) = user {
            self.record.user = Some(user.to_owned());
        }
    }

    /// The body field a request of this dialect names its end user in.
    pub(crate) fn end_user_field(&self) -> &'static str {
        match self.record.dialect {
            Dialect::OpenAi => "user",
            Dialect::Anthropic => "metadata.user_id",
        }
    }

    /// The feature the client tagged the request with (`x-sluice-feature`), for usage reports.
    pub fn set_feature(&mut self, feature: Option<&str>) {
        self.record.feature = feature.map(str::to_owned);
    }

    /// What admission reserved and reported; settled when the exchange is submitted.
    pub(crate) fn admitted(
        &mut self,
        hold: Option<sluice_policy::HoldGuard>,
        quota: QuotaState,
        degraded_from: Option<String>,
    ) -> Arc<QuotaState> {
        self.hold = hold;
        self.quota = Arc::new(quota);
        if let Some(requested) = degraded_from {
            self.record.degraded_from = Some(requested);
        }
        self.quota.clone()
    }

    /// The record so far (for tests of the stages).
    #[cfg(test)]
    pub(crate) fn record(&self) -> &RequestRecord {
        &self.record
    }

    /// The dialect the client speaks.
    pub fn dialect(&self) -> Dialect {
        self.record.dialect
    }

    /// The caller's budgets and rate limits as admission left them, for response headers.
    pub fn quota(&self) -> &Arc<QuotaState> {
        &self.quota
    }

    /// The end user the request is for, as far as known (request, header, key).
    pub(crate) fn end_user(&self) -> Option<&str> {
        self.record.user.as_deref()
    }

    pub fn set_alias(&mut self, alias: &str, stream: bool) {
        self.record.alias = Some(alias.to_owned());
        self.record.stream = stream;
    }

    pub(crate) fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Appends an attempt (or a skipped deployment) to the record.
    pub(crate) fn attempt(&mut self, attempt: AttemptRecord) {
        self.record.attempts.push(attempt);
    }

    /// Says what happened after the latest attempt of `deployment` (a retry, a fallback, a
    /// hedge, or why the request stopped there).
    pub(crate) fn then(&mut self, deployment: &str, next: Next) {
        if let Some(attempt) = self
            .record
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.deployment == deployment && a.outcome.was_sent())
        {
            attempt.next = Some(next);
        }
    }

    /// Says why the request stopped after its latest attempt sent, whichever deployment that
    /// was (the deadline ran out before the next one could be tried).
    pub(crate) fn then_stop(&mut self, next: Next) {
        if let Some(attempt) = self
            .record
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.outcome.was_sent())
        {
            attempt.next = Some(next);
        }
    }

    /// The attempt that served a stream failed after its first event (the upstream cut the
    /// stream, sent an error event, or ran out of time): its outcome says so.
    pub(crate) fn attempt_failed_late(&mut self, deployment: &str, kind: ErrorKind) {
        if let Some(attempt) = self.serving_attempt(deployment) {
            attempt.outcome = AttemptOutcome::Failed(kind);
        }
    }

    /// The latest attempt of `deployment` that answered.
    fn serving_attempt(&mut self, deployment: &str) -> Option<&mut AttemptRecord> {
        self.record
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.deployment == deployment && a.outcome == AttemptOutcome::Ok)
    }

    /// Usage of the attempt that served the answer.
    pub(crate) fn attempt_usage(&mut self, deployment: &str, usage: &Usage) {
        if let Some(attempt) = self.serving_attempt(deployment) {
            attempt.input_tokens = Some(usage.input_tokens);
            attempt.output_tokens = Some(usage.output_tokens);
        }
    }

    /// How the answer of the attempt that served it fared against the requested schema.
    pub(crate) fn attempt_schema(&mut self, deployment: &str, check: SchemaCheck) {
        if let Some(attempt) = self.serving_attempt(deployment) {
            attempt.schema = Some(check);
        }
    }

    /// What the route's policies found and did, as the record will hold it.
    pub(crate) fn audit(&mut self) -> &mut Audit {
        &mut self.record.policy
    }

    /// The policy decisions so far (a response header names them).
    pub fn policy(&self) -> &Audit {
        &self.record.policy
    }

    pub(crate) fn set_schema_valid(&mut self, valid: Option<bool>) {
        self.record.schema_valid = valid;
    }

    pub(crate) fn served_by(&mut self, deployment: &Deployment, served_model: &str) {
        // (An empty model: the deployment answered nothing, as for a failed drill.)
        self.record.deployment = Some(deployment.name.clone());
        self.record.provider = Some(deployment.provider.clone());
        if !served_model.is_empty() {
            self.record.served_model = Some(served_model.to_owned());
        }
    }

    pub(crate) fn first_token(&mut self) {
        if self.record.ttft_us.is_none() {
            self.record.ttft_us = Some(self.elapsed_us());
        }
    }

    pub(crate) fn usage(&mut self, usage: &Usage) {
        self.record.input_tokens = Some(usage.input_tokens);
        self.record.output_tokens = Some(usage.output_tokens);
        self.record.cached_tokens = Some(usage.cached_input_tokens);
        self.record.usage_estimated = usage.estimated;
    }

    /// The alias the request asked for (the one that served, after a soft-limit move), once
    /// known.
    pub fn alias(&self) -> Option<&str> {
        self.record.alias.as_deref()
    }

    /// The last attempt sent upstream: its deployment and provider.
    pub fn last_tried(&self) -> Option<(&str, &str)> {
        self.record
            .attempts
            .iter()
            .rev()
            .find(|a| a.outcome.was_sent())
            .map(|a| (a.deployment.as_str(), a.provider.as_str()))
    }

    /// Attempts sent upstream (skipped deployments not counted).
    pub fn attempts(&self) -> usize {
        self.record.attempts_sent()
    }

    /// Ends the exchange successfully with the status sent to the client.
    pub fn finish(mut self, status: u16) {
        self.record.status = status;
        self.record.error_code = None;
        self.submit();
    }

    /// Ends the exchange with a failure of `kind`, answered with `status`.
    pub fn fail(mut self, status: u16, kind: ErrorKind) {
        self.record.status = status;
        self.record.error_code = Some(ErrorCode::Kind(kind));
        self.submit();
    }

    /// A drill that failed. Drills have no client: the status is the upstream's, 0 when it
    /// never answered.
    pub(crate) fn fail_drill(mut self, kind: ErrorKind, upstream_status: Option<u16>) {
        self.record.status = upstream_status.unwrap_or(0);
        self.record.error_code = Some(ErrorCode::Kind(kind));
        self.submit();
    }

    /// A stream that began (status 200 sent) and then failed.
    pub(crate) fn fail_in_stream(&mut self, kind: ErrorKind) {
        self.record.status = 200;
        self.record.error_code = Some(ErrorCode::Kind(kind));
        self.submit();
    }

    pub(crate) fn finish_stream(&mut self) {
        self.record.status = 200;
        self.record.error_code = None;
        self.submit();
    }

    fn submit(&mut self) {
        if self.submitted {
            return;
        }
        self.submitted = true;
        self.record.latency_us = self.elapsed_us();
        if let Some(capture) = self.capture.take() {
            self.record.bodies = Some(capture.finish());
        }
        let used = self.policy.price(&mut self.record);
        if let Some(hold) = self.hold.take() {
            self.policy.settle(hold, used);
        }
        let record = std::mem::take(&mut self.record);
        tracing::debug!(
            request_id = %record.id,
            endpoint = record.endpoint.as_str(),
            alias = record.alias.as_deref().unwrap_or(""),
            deployment = record.deployment.as_deref().unwrap_or(""),
            status = record.status,
            error = record.error_code.map_or("", |code| code.as_str()),
            latency_us = record.latency_us,
            cost_micros = record.cost_micros.unwrap_or(0),
            "request"
        );
        // Drills are not requests anyone made: they are in the records, not in the request
        // metrics.
        if record.drill_of.is_none() {
            self.metrics.observe(&record);
        }
        self.tracer.export(&record);
        self.sender.submit(record);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Still holding the defaults set in `begin`: the client went away mid-request.
        self.submit();
    }
}
