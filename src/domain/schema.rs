//! Schemas written by hand as JSON, for the types whose rules no derive
//! states (`if`/`then` by a field's value, `unevaluatedProperties`,
//! `const`, `not`): one derive system, utoipa's, with these as its manual
//! [`utoipa::PartialSchema`] impls.
//!
//! utoipa's schema model has no field for several JSON Schema 2020-12
//! keywords and drops them when it reads JSON. [`schema_json`] keeps them:
//! what the model would lose is stashed under the extension
//! [`KEYWORDS`], which it keeps, and [`lift`] puts it back where it was
//! when the OpenAPI document or a protocol/schemas file is written.

use serde_json::{json, Map, Value};
use utoipa::{
    openapi::{RefOr, Schema},
    ToSchema,
};

/// The extension that carries the keywords utoipa's model has no field for.
pub const KEYWORDS: &str = "x-json-schema";

/// Keywords whose value is one schema; those whose value is a list or a map
/// of schemas are named in [`children`].
const ONE_SCHEMA: &[&str] = &["items", "additionalProperties", "propertyNames", "not"];

/// A schema written as JSON. References name components
/// (`#/components/schemas/<Type>`, see [`ref_of`]).
pub fn schema_json(mut v: Value) -> RefOr<Schema> {
    stash(&mut v);
    serde_json::from_value(v).expect("a schema utoipa can read")
}

/// The reference to `T`'s component, as JSON for [`schema_json`].
pub fn ref_of<T: ToSchema>() -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", T::name()) })
}

/// Adds the components a hand-written schema refers to (and theirs), for
/// `ToSchema::schemas`: `push_schemas!(out, AgentId, Timestamp)`.
macro_rules! push_schemas {
    ($out:expr, $($t:ty),+ $(,)?) => {
        $(
            $out.push((
                <$t as utoipa::ToSchema>::name().into_owned(),
                <$t as utoipa::PartialSchema>::schema(),
            ));
            <$t as utoipa::ToSchema>::schemas($out);
        )+
    };
}
pub(crate) use push_schemas;

/// Undoes [`schema_json`]'s stashing everywhere in `v` (a schema, or a
/// whole OpenAPI document).
pub fn lift(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(kept)) = map.remove(KEYWORDS) {
                map.extend(kept);
            }
            map.values_mut().for_each(lift);
        }
        Value::Array(items) => items.iter_mut().for_each(lift),
        _ => {}
    }
}

/// Moves the keys of `node` that utoipa would drop under [`KEYWORDS`],
/// then does the same in its sub-schemas.
fn stash(node: &mut Value) {
    let Value::Object(map) = node else { return };
    ref_with_siblings_to_all_of(map);
    // utoipa reads a schema without `type` (and without `$ref` or a
    // composite) only when `type` is null, its "any type", which it omits
    // again when it writes.
    let composite = ["$ref", "allOf", "oneOf", "anyOf"];
    if !map.contains_key("type") && !composite.iter().any(|k| map.contains_key(*k)) {
        map.insert("type".into(), Value::Null);
    }
    let kept = kept_keys(map);
    let lost: Vec<String> = map.keys().filter(|k| !kept.contains(*k)).cloned().collect();
    if !lost.is_empty() {
        let stashed: Map<String, Value> = lost
            .into_iter()
            .filter_map(|k| map.remove_entry(&k))
            .collect();
        map.insert(KEYWORDS.into(), Value::Object(stashed));
    }
    for (key, child) in map.iter_mut() {
        children(key, child, &mut stash);
    }
}

/// utoipa reads `{"$ref": …, "other": …}` as a bare reference; as
/// `allOf: [{"$ref": …}]` the other keywords survive.
fn ref_with_siblings_to_all_of(map: &mut Map<String, Value>) {
    let plain = |k: &String| matches!(k.as_str(), "$ref" | "description" | "summary");
    if !map.contains_key("$ref") || map.keys().all(plain) {
        return;
    }
    let reference = json!({"$ref": map.remove("$ref")});
    match map.get_mut("allOf") {
        Some(Value::Array(all)) => all.insert(0, reference),
        _ => {
            map.insert("allOf".into(), json!([reference]));
        }
    }
}

/// Applies `f` to each sub-schema held by keyword `key`.
fn children(key: &str, v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match (key, v) {
        ("properties", Value::Object(named)) => named.values_mut().for_each(f),
        ("allOf" | "oneOf" | "anyOf" | "prefixItems", Value::Array(list)) => {
            list.iter_mut().for_each(f)
        }
        (k, v @ Value::Object(_)) if ONE_SCHEMA.contains(&k) => f(v),
        _ => {}
    }
}

/// The keys of `map` that survive a trip through utoipa's model, judged on
/// a copy whose sub-schemas are emptied (they are judged on their own).
fn kept_keys(map: &Map<String, Value>) -> Vec<String> {
    let mut shallow = map.clone();
    for (key, child) in shallow.iter_mut() {
        children(key, child, &mut |c| *c = json!({"type": "string"}));
    }
    let Ok(parsed) = serde_json::from_value::<RefOr<Schema>>(Value::Object(shallow.clone())) else {
        return Vec::new();
    };
    let back = serde_json::to_value(parsed).unwrap_or_default();
    shallow
        .into_iter()
        .filter(|(k, v)| back.get(k) == Some(v) || (k == "type" && v.is_null()))
        .map(|(k, _)| k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) -> Value {
        let mut back = serde_json::to_value(schema_json(v)).unwrap();
        lift(&mut back);
        back
    }

    #[test]
    fn keywords_utoipa_lacks_survive() {
        let s = json!({
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"const": "webhook"},
                "url": {"type": ["string", "null"], "minLength": 1},
                "list": {"type": "array", "items": {"not": {"type": "null"}}},
            },
            "if": {"properties": {"kind": {"const": "webhook"}}},
            "then": {"required": ["url"]},
            "unevaluatedProperties": false,
        });
        assert_eq!(round_trip(s.clone()), s);
    }

    #[test]
    fn a_reference_keeps_its_siblings() {
        let s = json!({"$ref": "#/components/schemas/A", "unevaluatedProperties": false});
        assert_eq!(
            round_trip(s),
            json!({"allOf": [{"$ref": "#/components/schemas/A"}], "unevaluatedProperties": false})
        );
        let plain = json!({"$ref": "#/components/schemas/A", "description": "d"});
        assert_eq!(round_trip(plain.clone()), plain);
    }

    #[test]
    fn composites_keep_their_neighbours() {
        let s = json!({
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer", "minimum": 0}},
            "additionalProperties": false,
        });
        assert_eq!(round_trip(s.clone()), s);
    }
}
