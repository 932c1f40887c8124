//! Schema-instance generator: builds one JSON value that validates against a
//! JSON Schema, for structured output and generated tool arguments.
//!
//! It covers the subset that structured outputs and tool parameters use in
//! practice: `type` (also as a list; `null` is avoided), `properties` (all
//! listed ones, plus any `required` name), `items` / `prefixItems` with
//! `minItems` / `maxItems`, `enum`, `const`, `anyOf` / `oneOf` (first non-null
//! branch), `allOf` (merged), local `$ref` (`#`, `#/$defs/..`,
//! `#/definitions/..`), numeric bounds and `multipleOf`, string `format`,
//! `minLength` and `maxLength`. It ignores `pattern` and `uniqueItems`. It is
//! not a validator; the tests in `tests/` check the output by hand.

use serde_json::{Map, Value, json};

/// Past this depth the generator gives up and emits `null`.
const MAX_DEPTH: usize = 24;
/// Past this depth only required properties and `minItems` items are
/// generated, so recursive schemas (trees, linked lists) terminate.
const SHALLOW_DEPTH: usize = 6;
/// The schema `true`: any value is valid.
const ANY: &Value = &Value::Bool(true);

/// One value that validates against `schema`.
pub(super) fn instance(schema: &Value) -> Value {
    Generator { root: schema }.value(schema, 0)
}

struct Generator<'a> {
    root: &'a Value,
}

impl Generator<'_> {
    fn value(&self, schema: &Value, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let Value::Object(s) = schema else {
            // `true` accepts anything; `false` accepts nothing, so any value is as wrong as another.
            return json!("demo");
        };
        if let Some(constant) = s.get("const") {
            return constant.clone();
        }
        if let Some(Value::Array(options)) = s.get("enum")
            && let Some(first) = options.iter().find(|v| !v.is_null()).or(options.first())
        {
            return first.clone();
        }
        if let Some(Value::String(reference)) = s.get("$ref") {
            return match self.resolve(reference) {
                Some(target) => self.value(target, depth + 1),
                None => json!("demo"),
            };
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = s.get(key) {
                let branch = branches
                    .iter()
                    .find(|b| !self.is_null_schema(b))
                    .or(branches.first());
                if let Some(branch) = branch {
                    return self.value(branch, depth + 1);
                }
            }
        }
        if let Some(Value::Array(parts)) = s.get("allOf") {
            return self.value(&Value::Object(self.merge_all_of(s, parts)), depth + 1);
        }
        match type_of(s) {
            "object" => self.object(s, depth),
            "array" => self.array(s, depth),
            "string" => string(s),
            "integer" => integer(s),
            "number" => number(s),
            "boolean" => Value::Bool(false),
            "null" => Value::Null,
            _ => json!("demo"),
        }
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn is_null_schema(&self, schema: &Value) -> bool {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.resolve(reference).unwrap_or(schema),
            None => schema,
        };
        schema.get("type").and_then(Value::as_str) == Some("null")
    }

    /// Folds `allOf` parts into one schema: properties and `required` are
    /// unioned, other keywords come from the first part that has them.
    fn merge_all_of(&self, outer: &Map<String, Value>, parts: &[Value]) -> Map<String, Value> {
        let mut merged = outer.clone();
        merged.remove("allOf");
        let mut properties = object_field(outer, "properties");
        let mut required = string_list(outer, "required");
        for part in parts {
            let part = match part.get("$ref").and_then(Value::as_str) {
                Some(reference) => self.resolve(reference).unwrap_or(part),
                None => part,
            };
            let Value::Object(p) = part else { continue };
            for (name, sub) in object_field(p, "properties") {
                properties.entry(name).or_insert(sub);
            }
            for name in string_list(p, "required") {
                if !required.contains(&name) {
                    required.push(name);
                }
            }
            for (key, value) in p {
                if key != "properties" && key != "required" {
                    merged.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        if !properties.is_empty() {
            merged.insert("properties".into(), Value::Object(properties));
        }
        if !required.is_empty() {
            merged.insert("required".into(), json!(required));
        }
        merged
    }

    fn object(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let required = string_list(s, "required");
        let mut out = Map::new();
        if let Some(Value::Object(properties)) = s.get("properties") {
            for (name, sub) in properties {
                if depth < SHALLOW_DEPTH || required.contains(name) {
                    out.insert(name.clone(), self.value(sub, depth + 1));
                }
            }
        }
        // Required names without a declared property take the
        // `additionalProperties` schema when there is one.
        let extra = match s.get("additionalProperties") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            _ => ANY.clone(),
        };
        for name in required {
            if !out.contains_key(&name) {
                let value = self.value(&extra, depth + 1);
                out.insert(name, value);
            }
        }
        Value::Object(out)
    }

    fn array(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let shallow = depth < SHALLOW_DEPTH;
        let min = s
            .get("minItems")
            .and_then(Value::as_u64)
            .map_or(0, to_usize);
        let max = s
            .get("maxItems")
            .and_then(Value::as_u64)
            .map_or(usize::MAX, to_usize);
        // `prefixItems` (2020-12) or an `items` array (draft 4 tuples) fix the first positions.
        let prefix = match (s.get("prefixItems"), s.get("items")) {
            (Some(Value::Array(prefix)), _) | (None, Some(Value::Array(prefix))) => {
                prefix.as_slice()
            }
            _ => &[],
        };
        let prefix_count = if shallow {
            prefix.len()
        } else {
            min.min(prefix.len())
        }
        .min(max);
        let mut out: Vec<Value> = prefix
            .iter()
            .take(prefix_count)
            .map(|sub| self.value(sub, depth + 1))
            .collect();
        let rest = match s.get("items") {
            Some(Value::Bool(false)) => None,
            Some(Value::Array(_)) => match s.get("additionalItems") {
                Some(Value::Bool(false)) => None,
                Some(schema @ Value::Object(_)) => Some(schema),
                _ => Some(ANY),
            },
            Some(schema) => Some(schema),
            None => Some(ANY),
        };
        let target = if shallow { min.max(1) } else { min }.min(max);
        if let Some(item) = rest {
            while out.len() < target {
                out.push(self.value(item, depth + 1));
            }
        }
        Value::Array(out)
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn type_of(s: &Map<String, Value>) -> &str {
    match s.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(types)) => {
            let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            let picked = names.iter().find(|t| **t != "null").or(names.first());
            picked.copied().unwrap_or("any")
        }
        _ if s.contains_key("properties") || s.contains_key("required") => "object",
        _ if s.contains_key("items") || s.contains_key("prefixItems") => "array",
        _ => "any",
    }
}

fn object_field(s: &Map<String, Value>, key: &str) -> Map<String, Value> {
    match s.get(key) {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    }
}

fn string_list(s: &Map<String, Value>, key: &str) -> Vec<String> {
    match s.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn string(s: &Map<String, Value>) -> Value {
    let format = s.get("format").and_then(Value::as_str).unwrap_or("");
    let base = match format {
        "date-time" => "2026-01-01T00:00:00Z",
        "date" => "2026-01-01",
        "time" => "00:00:00Z",
        "email" => "demo@example.com",
        "uri" | "url" | "iri" => "https://example.com/",
        "uuid" => "00000000-0000-4000-8000-000000000000",
        "hostname" => "example.com",
        "ipv4" => "127.0.0.1",
        "ipv6" => "::1",
        "duration" => "PT1S",
        _ => "demo",
    };
    let mut text = base.to_owned();
    if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
        while (text.chars().count() as u64) < min {
            text.push('o');
        }
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
        text = text.chars().take(to_usize(max)).collect();
    }
    Value::String(text)
}

/// A numeric bound and whether it is exclusive.
type Bound = Option<(f64, bool)>;

/// Lower and upper bounds from `minimum` / `maximum` and their exclusive
/// forms, both as numbers (2019+) and as draft-4 booleans.
fn bounds(s: &Map<String, Value>) -> (Bound, Bound) {
    let num = |key: &str| s.get(key).and_then(Value::as_f64);
    let flag = |key: &str| s.get(key).and_then(Value::as_bool).unwrap_or(false);
    let low = match num("exclusiveMinimum") {
        Some(x) => Some((x, true)),
        None => num("minimum").map(|x| (x, flag("exclusiveMinimum"))),
    };
    let high = match num("exclusiveMaximum") {
        Some(x) => Some((x, true)),
        None => num("maximum").map(|x| (x, flag("exclusiveMaximum"))),
    };
    (low, high)
}

fn integer(s: &Map<String, Value>) -> Value {
    let (low, high) = bounds(s);
    let low = low.map(|(x, exclusive)| if exclusive { x.floor() + 1.0 } else { x.ceil() });
    let high = high.map(|(x, exclusive)| if exclusive { x.ceil() - 1.0 } else { x.floor() });
    let mut v = 0.0_f64;
    if let Some(low) = low {
        v = v.max(low);
    }
    if let Some(high) = high {
        v = v.min(high);
    }
    if let Some(step) = s
        .get("multipleOf")
        .and_then(Value::as_f64)
        .filter(|m| *m >= 1.0)
    {
        let up = (v / step).ceil() * step;
        v = if high.is_some_and(|h| up > h) {
            (v / step).floor() * step
        } else {
            up
        };
    }
    // Bounds come from JSON numbers, so the value fits an i64 in any sane schema.
    json!(v as i64)
}

fn number(s: &Map<String, Value>) -> Value {
    let (low, high) = bounds(s);
    let mut v = 0.0_f64;
    match (low, high) {
        (Some((l, exclusive_low)), Some((h, _))) if exclusive_low || v < l || v > h => {
            v = if exclusive_low { (l + h) / 2.0 } else { l };
        }
        (Some((l, exclusive)), None) if v < l || (exclusive && v <= l) => {
            v = if exclusive { l + 1.0 } else { l };
        }
        (None, Some((h, exclusive))) if v > h || (exclusive && v >= h) => {
            v = if exclusive { h - 1.0 } else { h };
        }
        _ => {}
    }
    if let Some(step) = s
        .get("multipleOf")
        .and_then(Value::as_f64)
        .filter(|m| *m > 0.0)
    {
        v = (v / step).ceil() * step;
    }
    json!(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_has_all_listed_and_required_properties() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 18},
                "score": {"type": "number"},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                "nick": {"type": ["string", "null"]},
                "kind": {"const": "person"}
            },
            "required": ["name", "extra"],
            "additionalProperties": false
        });
        assert_eq!(
            instance(&schema),
            json!({
                "name": "demo", "age": 18, "score": 0.0, "ok": false, "tags": ["a"],
                "nick": "demo", "kind": "person", "extra": "demo"
            })
        );
    }

    #[test]
    fn follows_local_refs_and_unions() {
        let schema = json!({
            "$defs": {
                "Step": {"type": "object", "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}}, "required": ["explanation", "output"]}
            },
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
                "final": {"anyOf": [{"type": "null"}, {"type": "integer", "exclusiveMinimum": 5}]},
                "when": {"type": "string", "format": "date-time"}
            },
            "required": ["steps", "final", "when"]
        });
        assert_eq!(
            instance(&schema),
            json!({
                "steps": [{"explanation": "demo", "output": "demo"}],
                "final": 6,
                "when": "2026-01-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn recursive_schema_terminates() {
        let schema = json!({
            "type": "object",
            "properties": {"value": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["value", "children"]
        });
        let value = instance(&schema);
        assert_eq!(value["value"], "demo");
        assert!(value["children"].is_array());
    }

    #[test]
    fn honours_numeric_and_length_bounds() {
        assert_eq!(
            instance(&json!({"type": "integer", "maximum": -3})),
            json!(-3)
        );
        assert_eq!(
            instance(&json!({"type": "integer", "minimum": 7, "multipleOf": 5})),
            json!(10)
        );
        assert_eq!(
            instance(&json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1})),
            json!(0.5)
        );
        assert_eq!(
            instance(&json!({"type": "string", "minLength": 6})),
            json!("demooo")
        );
        assert_eq!(
            instance(&json!({"type": "string", "maxLength": 2})),
            json!("de")
        );
        assert_eq!(
            instance(&json!({"type": "array", "items": {"type": "integer"}, "minItems": 3})),
            json!([0, 0, 0])
        );
        assert_eq!(
            instance(
                &json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]})
            ),
            json!(["demo", false])
        );
    }

    #[test]
    fn merges_all_of() {
        let schema = json!({
            "definitions": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
            "allOf": [{"$ref": "#/definitions/Base"}, {"properties": {"label": {"type": "string"}}, "required": ["label"]}]
        });
        assert_eq!(instance(&schema), json!({"id": 0, "label": "demo"}));
    }
}
