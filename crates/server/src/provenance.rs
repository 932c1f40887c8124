//! Provenance headers: where every answer came from (PRODUCT §13).
//!
//! `x-request-id` is on every response, errors included; the rest on answers that reached a
//! provider.

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_pipeline::Provenance;

pub(crate) const SERVED_MODEL: HeaderName = HeaderName::from_static("x-sluice-served-model");
pub(crate) const PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
pub(crate) const DEPLOYMENT: HeaderName = HeaderName::from_static("x-sluice-deployment");
pub(crate) const ALIAS: HeaderName = HeaderName::from_static("x-sluice-alias");
pub(crate) const ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn request_id(headers: &mut HeaderMap, id: &str) {
    insert(headers, REQUEST_ID, id);
}

pub(crate) fn insert_all(headers: &mut HeaderMap, provenance: &Provenance) {
    insert(headers, REQUEST_ID, &provenance.request_id);
    insert(headers, SERVED_MODEL, &provenance.served_model);
    insert(headers, PROVIDER, &provenance.provider);
    insert(headers, DEPLOYMENT, &provenance.deployment);
    insert(headers, ALIAS, &provenance.alias);
    headers.insert(ATTEMPTS, HeaderValue::from(provenance.attempts));
    crate::quota::insert(headers, &provenance.quota);
}

/// Values come from configuration and provider answers; one that is not a valid header value
/// is left out rather than failing the response.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
