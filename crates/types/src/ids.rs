//! Identifiers. Request ids are UUIDv7, so they sort by time.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    pub fn new() -> Self {
        RequestId(uuid::Uuid::now_v7())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    /// `req_` and the UUID's 32 lowercase hex digits. Written as two plain strings: every
    /// request formats its id more than once (record, headers), and nested formatting
    /// arguments cost several times more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
        f.write_str("req_")?;
        f.write_str(self.0.simple().encode_lower(&mut hex))
    }
}

/// Who owns a request's data and quota: every key belongs to one tenant (its organisation
/// unless the key names another), and every record, counter and client-chosen id (end users,
/// sessions) of that key is the tenant's.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl TenantId {
    /// The tenant of keys bound to no organisation.
    pub const DEFAULT: &'static str = "default";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest id a client may choose, in bytes: the end user (`x-sluice-user`, `user`,
/// `metadata.user_id`), the feature tag (`x-sluice-feature`) and the model name. Such ids end up
/// in counter keys, records and reports, so their size is the gateway's to bound, not the
/// client's. 256 bytes holds a UUID, an email address or a hashed id with room to spare.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// Where a client-chosen id was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdPlace {
    Header,
    Body,
}

/// A client-chosen id longer than [`MAX_CLIENT_ID_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTooLong {
    /// The header (`x-sluice-user`) or body field (`user`, `metadata.user_id`, `model`).
    pub field: &'static str,
    pub place: IdPlace,
    pub len: usize,
}

impl fmt::Display for IdTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match self.place {
            IdPlace::Header => "header ",
            IdPlace::Body => "",
        };
        write!(
            f,
            "{place}`{}` is {} bytes long; it may be at most {MAX_CLIENT_ID_BYTES} bytes",
            self.field, self.len
        )
    }
}

impl std::error::Error for IdTooLong {}

/// `Err` when `value`, a client-chosen id sent as `field`, is longer than
/// [`MAX_CLIENT_ID_BYTES`].
pub fn check_client_id(field: &'static str, place: IdPlace, value: &str) -> Result<(), IdTooLong> {
    if value.len() > MAX_CLIENT_ID_BYTES {
        return Err(IdTooLong {
            field,
            place,
            len: value.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_req_and_its_uuid_in_simple_lowercase_hex() {
        let id = RequestId(uuid::Uuid::from_u128(
            0x0192_ABCD_EF01_7000_8000_0000_0000_00FF,
        ));
        assert_eq!(id.to_string(), "req_0192abcdef01700080000000000000ff");
        let fresh = RequestId::new();
        assert_eq!(fresh.to_string(), format!("req_{}", fresh.0.simple()));
    }

    #[test]
    fn a_client_id_is_refused_past_the_limit_naming_its_field() {
        let longest = "a".repeat(MAX_CLIENT_ID_BYTES);
        assert_eq!(check_client_id("user", IdPlace::Body, &longest), Ok(()));
        let over =
            check_client_id("x-sluice-user", IdPlace::Header, &format!("{longest}é")).unwrap_err();
        assert_eq!(over.len, MAX_CLIENT_ID_BYTES + 2);
        assert_eq!(
            over.to_string(),
            "header `x-sluice-user` is 258 bytes long; it may be at most 256 bytes"
        );
    }
}
