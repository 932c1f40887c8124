//! `GET /v1/models` and `GET /v1/models/{id}`: the aliases the caller's key may use, in the
//! shape of the SDK asking (Anthropic when `anthropic-version` is sent, OpenAI otherwise).
//!
//! Anthropic model objects carry what the current SDK's `ModelInfo` requires: `type`, `id`,
//! `display_name`, `created_at` and `lifecycle` (always `active`: an alias that is served).
//! An alias has no creation date of its own, so `created` (OpenAI, Unix seconds) and
//! `created_at` (Anthropic, RFC 3339) are the time this gateway loaded its configuration (at
//! start, or its last reload).
//! Anthropic lists carry `first_id`, `last_id` and `has_more` (always `false`: every alias fits
//! one page). An id that is not an alias, or one the key may not use, is a 404 `not_found` in
//! the caller's dialect: the answer does not say which, so it reveals no alias to a key
//! without access.

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use sluice_types::{Dialect, ErrorKind};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;
use crate::{AppState, body, dialect_of, json_response, provenance};

/// When the configuration in force was loaded: its aliases exist since then.
#[derive(Debug, Clone, Copy)]
struct LoadedAt(OffsetDateTime);

impl LoadedAt {
    fn of(gateway: &sluice_pipeline::Gateway) -> Self {
        // Whole seconds, so `created` and `created_at` name the same instant.
        let seconds = gateway.config_source().loaded_at_ms.div_euclid(1000);
        LoadedAt(OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    fn rfc3339(self) -> String {
        self.0
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
    }
}

fn model(id: &str, dialect: Dialect, loaded: LoadedAt) -> Value {
    match dialect {
        Dialect::OpenAi => json!({
            "id": id, "object": "model", "created": loaded.0.unix_timestamp(), "owned_by": "sluice",
        }),
        Dialect::Anthropic => json!({
            "type": "model", "id": id, "display_name": id, "created_at": loaded.rfc3339(),
            "lifecycle": "active",
        }),
    }
}

/// `GET /v1/models`.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let dialect = dialect_of(&headers);
    let gateway = state.gateway.current();
    let loaded = LoadedAt::of(&gateway);
    let (exchange, caller) = match body::admit(
        &gateway,
        &headers,
        sluice_pipeline::Endpoint::Models,
        dialect,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let models = gateway.models_for(&caller);
    let data: Vec<Value> = models.iter().map(|id| model(id, dialect, loaded)).collect();
    let json = match dialect {
        Dialect::OpenAi => json!({"object": "list", "data": data}),
        Dialect::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": models.first(),
            "last_id": models.last(),
        }),
    };
    let request_id = exchange.id.to_string();
    exchange.finish(200);
    let mut response = json_response(Bytes::from(json.to_string()));
    provenance::request_id(response.headers_mut(), &request_id);
    response
}

/// `GET /v1/models/{id}`: one alias the caller may use.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let dialect = dialect_of(&headers);
    let gateway = state.gateway.current();
    let loaded = LoadedAt::of(&gateway);
    let (exchange, caller) = match body::admit(
        &gateway,
        &headers,
        sluice_pipeline::Endpoint::Models,
        dialect,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if !gateway.models_for(&caller).contains(&id) {
        let message = format!("model `{id}` does not exist or this key may not use it");
        return body::fail(
            exchange,
            dialect,
            ApiError::new(ErrorKind::NotFound, message),
        );
    }
    let request_id = exchange.id.to_string();
    exchange.finish(200);
    let mut response = json_response(Bytes::from(model(&id, dialect, loaded).to_string()));
    provenance::request_id(response.headers_mut(), &request_id);
    response
}
