//! OpenAPI 3.1 component schemas, as utoipa writes them, made into
//! standalone JSON Schema 2020-12: `#/components/schemas/X` references
//! point at the file and `$defs` entry where `X` is placed, the keywords
//! only OpenAPI knows are dropped, and the text is printed in one stable
//! key order so that a regenerated file differs only where a type did.

use std::collections::{BTreeMap, BTreeSet};

use serde::{ser::SerializeMap, Serialize, Serializer};
use serde_json::Value;

/// What a component reference becomes in a file.
const COMPONENTS: &str = "#/components/schemas/";

/// Keywords of OpenAPI's Schema Object that JSON Schema does not have.
const OPENAPI_ONLY: &[&str] = &["discriminator", "xml", "externalDocs", "example"];

/// Where a component lives: a file, and its `$defs` entry (`None`: the
/// file's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub anchor: Option<String>,
}

impl Place {
    /// The `$ref` to this place from a schema in `from`.
    fn reference(&self, from: &str) -> String {
        let file = if self.file == from { "" } else { &self.file };
        match &self.anchor {
            Some(a) => format!("{file}#/$defs/{a}"),
            None if file.is_empty() => "#".to_owned(),
            None => file.to_owned(),
        }
    }
}

/// Rewrites `schema` (in place) for the file `from`: component references
/// become file references by `places`; OpenAPI-only keywords go. Returns
/// the components referenced that have no place yet.
pub fn localise(
    schema: &mut Value,
    from: &str,
    places: &BTreeMap<String, Place>,
) -> BTreeSet<String> {
    let mut unplaced = BTreeSet::new();
    walk(schema, from, places, &mut unplaced);
    unplaced
}

fn walk(v: &mut Value, from: &str, places: &BTreeMap<String, Place>, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for key in OPENAPI_ONLY {
                map.remove(*key);
            }
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(COMPONENTS) {
                    match places.get(name) {
                        Some(place) => *r = place.reference(from),
                        None => {
                            out.insert(name.to_owned());
                        }
                    }
                }
            }
            // `properties` and `$defs` hold names, not keywords: walk
            // their values only, so a property called `example` stays.
            for (key, child) in map.iter_mut() {
                match (key.as_str(), child) {
                    ("properties" | "$defs" | "patternProperties", Value::Object(named)) => {
                        for s in named.values_mut() {
                            walk(s, from, places, out);
                        }
                    }
                    (_, child) => walk(child, from, places, out),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk(i, from, places, out)),
        _ => {}
    }
}

/// `{"allOf": [{"$ref": r}], …}` → `{"$ref": r, …}` everywhere in `v`:
/// utoipa's model needs the `allOf` to keep a reference's neighbours,
/// JSON Schema 2020-12 does not.
pub fn simplify(mut v: Value) -> Value {
    hoist(&mut v);
    v
}

fn hoist(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let lone_ref = match map.get("allOf") {
                Some(Value::Array(all)) if all.len() == 1 && !map.contains_key("$ref") => all[0]
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .and_then(|o| o.get("$ref"))
                    .cloned(),
                _ => None,
            };
            if let Some(r) = lone_ref {
                map.remove("allOf");
                map.insert("$ref".into(), r);
            }
            map.values_mut().for_each(hoist);
        }
        Value::Array(items) => items.iter_mut().for_each(hoist),
        _ => {}
    }
}

/// `CreateAgent` → `create_agent`: the anchor of a component placed
/// without a name of its own.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    out
}

/// Pretty JSON with a newline at the end, keys in [`rank`] order.
pub fn print(v: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&Ordered(v)).expect("JSON values print");
    text.push('\n');
    text
}

/// A value whose object keys print in [`rank`] order.
struct Ordered<'a>(&'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by(|a, b| (rank(a), *a).cmp(&(rank(b), *b)));
                let mut out = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    out.serialize_entry(k, &Ordered(&map[k]))?;
                }
                out.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Ordered)),
            other => other.serialize(s),
        }
    }
}

/// Identity and prose first, `$defs` last, everything else by name.
/// Property names are ranked the same way, which is harmless: only
/// keywords are listed here.
fn rank(key: &str) -> u8 {
    match key {
        "$schema" => 0,
        "$id" => 1,
        "title" => 2,
        "description" => 3,
        "$comment" => 4,
        "$defs" => 9,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_point_at_files_and_anchors() {
        let places = BTreeMap::from([
            (
                "AgentId".into(),
                Place {
                    file: "common.json".into(),
                    anchor: Some("agent_id".into()),
                },
            ),
            (
                "Agent".into(),
                Place {
                    file: "agent.json".into(),
                    anchor: None,
                },
            ),
        ]);
        let mut s = json!({"properties": {
            "id": {"$ref": "#/components/schemas/AgentId"},
            "self": {"$ref": "#/components/schemas/Agent"},
            "example": {"type": "string", "example": "x"},
            "other": {"$ref": "#/components/schemas/Nowhere"}
        }, "discriminator": {"propertyName": "t"}});
        let unplaced = localise(&mut s, "agent.json", &places);
        assert_eq!(unplaced, BTreeSet::from(["Nowhere".to_owned()]));
        assert_eq!(
            s,
            json!({"properties": {
                "id": {"$ref": "common.json#/$defs/agent_id"},
                "self": {"$ref": "#"},
                "example": {"type": "string"},
                "other": {"$ref": "#/components/schemas/Nowhere"}
            }})
        );
        let mut from_elsewhere = json!({"$ref": "#/components/schemas/Agent"});
        localise(&mut from_elsewhere, "list.json", &places);
        assert_eq!(from_elsewhere, json!({"$ref": "agent.json"}));
    }

    #[test]
    fn names_and_order_are_stable() {
        assert_eq!(snake_case("CreateAgent"), "create_agent");
        assert_eq!(snake_case("Page_Agent"), "page__agent");
        let text = print(
            &json!({"$defs": {}, "type": "object", "$id": "i", "$schema": "s", "title": "t"}),
        );
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().split('"').nth(1))
            .collect();
        assert_eq!(keys, ["$schema", "$id", "title", "type", "$defs"]);
    }
}
