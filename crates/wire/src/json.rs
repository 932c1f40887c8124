//! Path-tracking access to parsed JSON, shared by the decoders.
//!
//! Client requests are parsed into a [`Value`] and walked with [`Obj`] (they keep unknown
//! fields, and every error names the field it is about: `messages[2].content[0].type`).
//! Upstream answers (and OpenAI stream chunks), read on every request and never kept whole,
//! are deserialized into typed shapes by [`from_slice_at_path`], whose errors name the field
//! too. `null` counts as absent for optional fields, because clients routinely send
//! `"temperature": null` for "unset".

use serde::Deserialize;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::WireError;

/// Path of the body itself, used when the top level has the wrong type.
pub(crate) const ROOT: &str = "body";

/// Parses a body: UTF-8 first (for a clear error), then JSON.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, WireError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(WireError::InvalidUtf8 {
            offset: e.valid_up_to(),
        });
    }
    serde_json::from_slice(body).map_err(WireError::MalformedJson)
}

/// Deserializes a body into a typed shape in one pass, without a [`Value`] tree. When that
/// fails the body is read again to say where: the error names the field's path
/// (`choices[0].message`), as the [`Obj`] walkers' errors do.
pub(crate) fn from_slice_at_path<'de, T: Deserialize<'de>>(
    body: &'de [u8],
) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|err| locate::<T>(body, err))
}

fn locate<'de, T: Deserialize<'de>>(body: &'de [u8], err: serde_json::Error) -> WireError {
    if let Err(e) = std::str::from_utf8(body) {
        return WireError::InvalidUtf8 {
            offset: e.valid_up_to(),
        };
    }
    if err.is_syntax() || err.is_eof() {
        return WireError::MalformedJson(err);
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut reader) {
        Err(located) => {
            let path = match located.path().to_string() {
                root if root == "." => ROOT.to_owned(),
                path => path,
            };
            WireError::InvalidShape {
                path,
                detail: located.into_inner().to_string(),
            }
        }
        // Unreachable for a deterministic deserializer; the first error still says what.
        Ok(_) => WireError::MalformedJson(err),
    }
}

/// Serializes an encoder's wire struct. These hold only string keys and JSON values (serde_json
/// writes non-finite floats as `null`), so serialization cannot fail; the fallback keeps the
/// signature infallible without a panic path.
pub(crate) fn to_vec(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn wrong_type(path: &str, expected: &'static str, found: &Value) -> WireError {
    WireError::InvalidType {
        path: path.to_owned(),
        expected,
        found: type_name(found),
    }
}

pub(crate) fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, WireError> {
    v.as_str().ok_or_else(|| wrong_type(path, "string", v))
}

/// Checks `value` against an enumeration and returns it.
pub(crate) fn one_of<'a>(
    value: &'a str,
    path: &str,
    expected: &'static [&'static str],
) -> Result<&'a str, WireError> {
    if expected.contains(&value) {
        Ok(value)
    } else {
        Err(WireError::UnknownValue {
            path: path.to_owned(),
            value: value.to_owned(),
            expected,
        })
    }
}

/// Objects of up to this many keys are searched by a scan instead of a hash lookup
/// ([`Obj::get`]); past it the map's index wins.
const SCAN_UP_TO: usize = 16;

/// A JSON object together with its path.
pub(crate) struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    /// The body's top level, which must be an object.
    pub fn root(v: &'a Value) -> Result<Self, WireError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path: String::new(),
            }),
            other => Err(wrong_type(ROOT, "object", other)),
        }
    }

    pub fn at(v: &'a Value, path: String) -> Result<Self, WireError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(wrong_type(&path, "object", other)),
        }
    }

    pub fn path(&self, key: &str) -> String {
        field(&self.path, key)
    }

    /// The error for `key` holding the wrong type. Paths are built only for errors: a request
    /// that decodes cleanly formats none of its leaves' paths.
    fn wrong_type(&self, key: &str, expected: &'static str, found: &Value) -> WireError {
        wrong_type(&self.path(key), expected, found)
    }

    /// The value under `key`, `null` included. A small object is scanned rather than looked
    /// up: with `preserve_order` its map hashes every key looked up (SipHash, ~180
    /// instructions), while a request body's objects hold a handful of keys and most keys a
    /// decoder asks for are absent, so comparing lengths and bytes is several times cheaper.
    fn lookup(&self, key: &str) -> Option<&'a Value> {
        if self.map.len() <= SCAN_UP_TO {
            self.map.iter().find_map(|(k, v)| (k == key).then_some(v))
        } else {
            self.map.get(key)
        }
    }

    /// The value under `key`, with `null` treated as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.lookup(key).filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str) -> Result<&'a Value, WireError> {
        match self.lookup(key) {
            None => Err(WireError::MissingField {
                path: self.path(key),
            }),
            Some(Value::Null) => Err(wrong_type(&self.path(key), "a value", &Value::Null)),
            Some(v) => Ok(v),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, WireError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "string", v)))
            .transpose()
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, WireError> {
        let v = self.required(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "string", v))
    }

    /// A required string from an enumeration.
    pub fn req_one_of(
        &self,
        key: &str,
        expected: &'static [&'static str],
    ) -> Result<&'a str, WireError> {
        let value = self.req_str(key)?;
        if expected.contains(&value) {
            Ok(value)
        } else {
            Err(WireError::UnknownValue {
                path: self.path(key),
                value: value.to_owned(),
                expected,
            })
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, WireError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong_type(key, "boolean", v))
            })
            .transpose()
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, WireError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong_type(key, "number", v)))
            .transpose()
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, WireError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| WireError::InvalidValue {
                path: self.path(key),
                reason: "must be an integer that fits in 64 bits",
            }),
            other => Err(self.wrong_type(key, "integer", other)),
        }
    }

    pub fn u32(&self, key: &str) -> Result<Option<u32>, WireError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| WireError::InvalidValue {
                    path: self.path(key),
                    reason: "must be a non-negative integer below 2^32",
                }),
            other => Err(self.wrong_type(key, "integer", other)),
        }
    }

    pub fn req_u32(&self, key: &str) -> Result<u32, WireError> {
        self.required(key)?;
        self.u32(key)?.ok_or_else(|| WireError::MissingField {
            path: self.path(key),
        })
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, WireError> {
        self.get(key)
            .map(|v| Obj::at(v, self.path(key)))
            .transpose()
    }

    pub fn req_obj(&self, key: &str) -> Result<Obj<'a>, WireError> {
        Obj::at(self.required(key)?, self.path(key))
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, WireError> {
        self.get(key)
            .map(|v| v.as_array().ok_or_else(|| self.wrong_type(key, "array", v)))
            .transpose()
    }

    pub fn req_array(&self, key: &str) -> Result<&'a Vec<Value>, WireError> {
        let v = self.required(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, "array", v))
    }

    /// Top-level fields outside `known`, for [`sluice_types::Extras`]. `null` values are skipped:
    /// they mean "unset" and must not make a request look like it needs a specific dialect.
    pub fn unknown_fields(&self, known: &[&str]) -> Map<String, Value> {
        self.map
            .iter()
            .filter(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_utf8_names_the_offset() {
        let err = parse_body(b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(matches!(err, WireError::InvalidUtf8 { offset: 6 }));
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = parse_body(b"{\"a\":").unwrap_err();
        assert!(matches!(err, WireError::MalformedJson(_)));
        assert!(err.to_string().starts_with("body is not valid JSON"));
    }

    #[test]
    fn root_must_be_an_object() {
        let v = json!([1]);
        let err = Obj::root(&v).err().unwrap();
        assert_eq!(err.to_string(), "`body`: expected object, found array");
    }

    #[test]
    fn typed_getters_name_the_path() {
        let v = json!({"a": {"n": -1, "s": 5, "f": "x", "nul": null}});
        let root = Obj::root(&v).unwrap();
        let a = root.req_obj("a").unwrap();
        assert_eq!(
            a.u32("n").unwrap_err().to_string(),
            "`a.n` must be a non-negative integer below 2^32"
        );
        assert_eq!(
            a.str("s").unwrap_err().to_string(),
            "`a.s`: expected string, found number"
        );
        assert_eq!(
            a.f64("f").unwrap_err().to_string(),
            "`a.f`: expected number, found string"
        );
        assert_eq!(a.str("nul").unwrap(), None);
        assert_eq!(
            a.req_str("missing").unwrap_err().to_string(),
            "`a.missing` is required"
        );
        assert_eq!(index("messages", 2), "messages[2]");
    }

    #[test]
    fn unknown_fields_skip_known_and_null() {
        let v = json!({"model": "m", "store": true, "logit_bias": null});
        let fields = Obj::root(&v).unwrap().unknown_fields(&["model"]);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields.get("store"), Some(&json!(true)));
    }

    #[test]
    fn small_and_large_objects_find_the_same_values() {
        for keys in [0, 1, 3, SCAN_UP_TO, SCAN_UP_TO + 1, 40] {
            let map: Map<String, Value> = (0..keys)
                .map(|i| {
                    (
                        format!("k{i}"),
                        if i % 3 == 0 { Value::Null } else { json!(i) },
                    )
                })
                .collect();
            let v = Value::Object(map);
            let obj = Obj::root(&v).unwrap();
            for i in 0..keys + 2 {
                let key = format!("k{i}");
                let expected = v.get(&key).filter(|v| !v.is_null());
                assert_eq!(obj.get(&key), expected, "{keys} keys, {key}");
                assert_eq!(obj.required(&key).ok(), expected, "{keys} keys, {key}");
            }
        }
    }
}
