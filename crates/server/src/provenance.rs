//! Provenance headers: where every answer came from (PRODUCT §13).
//!
//! `x-request-id` is on every response; the rest on answers that reached a provider, and on
//! errors as far as the request got (the alias it asked for, the attempts sent, the last
//! deployment tried).

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_pipeline::Provenance;

pub(crate) const SERVED_MODEL: HeaderName = HeaderName::from_static("x-sluice-served-model");
pub(crate) const PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
pub(crate) const DEPLOYMENT: HeaderName = HeaderName::from_static("x-sluice-deployment");
pub(crate) const ALIAS: HeaderName = HeaderName::from_static("x-sluice-alias");
pub(crate) const ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
/// What the route's policies found and did: `POLICY:RULE:ACTION:PLACE=COUNT`, comma separated.
pub(crate) const POLICY: HeaderName = HeaderName::from_static("x-sluice-policy");
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn request_id(headers: &mut HeaderMap, id: &str) {
    insert(headers, REQUEST_ID, id);
}

pub(crate) fn insert_all(headers: &mut HeaderMap, provenance: &Provenance) {
    // Room for every header below at once: the map grows once, not at each power of two.
    headers.reserve(7 + crate::quota::most_headers(&provenance.quota));
    insert(headers, REQUEST_ID, &provenance.request_id);
    insert(headers, SERVED_MODEL, &provenance.served_model);
    insert(headers, PROVIDER, &provenance.provider);
    insert(headers, DEPLOYMENT, &provenance.deployment);
    insert(headers, ALIAS, &provenance.alias);
    headers.insert(ATTEMPTS, HeaderValue::from(provenance.attempts));
    if let Some(policy) = &provenance.policy {
        insert(headers, POLICY, policy);
    }
    crate::quota::insert(headers, &provenance.quota);
}

/// What an error answer can say of where the request went.
pub(crate) fn insert_failure(headers: &mut HeaderMap, exchange: &sluice_pipeline::Exchange) {
    if let Some(alias) = exchange.alias() {
        insert(headers, ALIAS, alias);
    }
    if let Some((deployment, provider)) = exchange.last_tried() {
        insert(headers, DEPLOYMENT, deployment);
        insert(headers, PROVIDER, provider);
        headers.insert(ATTEMPTS, HeaderValue::from(exchange.attempts()));
    }
    if let Some(policy) = exchange.policy().summary() {
        insert(headers, POLICY, &policy);
    }
}

/// Values come from configuration and provider answers; one that is not a valid header value
/// is left out rather than failing the response.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
