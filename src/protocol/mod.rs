//! protocol/schemas/, generated: the JSON Schema (draft 2020-12) files of
//! weir's wire contract, built from the same utoipa schemas of the same
//! types as `/v1/openapi.json`, so the two cannot drift apart and neither
//! can drift from the code.
//!
//! # How a file is made
//!
//! [`table`] says which type is each file's root and which types are its
//! named `$defs`. Each type's schema (`PartialSchema::schema`) and the
//! components it refers to (`ToSchema::schemas`) are read as OpenAPI 3.1
//! JSON; the keywords utoipa's model cannot hold are put back
//! ([`crate::domain::schema::lift`]); `#/components/schemas/X` becomes
//! `#/$defs/x` or `other.json#/$defs/x` ([`convert`]); the file gets
//! `$schema`, `$id`, `title` and `description`, and is printed in one
//! stable key order.
//!
//! The committed files must equal [`render`]'s output byte for byte
//! (tests/api/schemas.rs); `WEIR_SCHEMAS=write cargo test --test api
//! schemas` rewrites them.

pub mod convert;
pub mod table;

pub use convert::Place;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use self::{
    convert::{localise, print, snake_case},
    table::FileSpec,
};
use crate::domain::schema::lift;

/// Where every schema's `$id` lives (an identifier, not a URL to fetch).
pub const BASE: &str = "https://weir.invalid/protocol/v1/schemas/";

/// The draft every file declares.
pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A schema, with its stashed keywords lifted, as JSON.
fn to_json(schema: &utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> Value {
    let mut v = serde_json::to_value(schema).expect("a schema is JSON");
    lift(&mut v);
    v
}

/// Every file of protocol/schemas/: its name and its text.
pub fn render() -> Vec<(String, String)> {
    generate().files
}

/// The files, and where each component went.
pub struct Generated {
    pub files: Vec<(String, String)>,
    pub places: BTreeMap<String, Place>,
}

/// Builds every file (see the module docs).
pub fn generate() -> Generated {
    let specs = table::files();
    let mut components: BTreeMap<String, Value> = BTreeMap::new();
    let mut places: BTreeMap<String, Place> = BTreeMap::new();
    for spec in &specs {
        let entries = spec.root.iter().map(|e| (None, e));
        let entries = entries.chain(spec.defs.iter().map(|(a, e)| (Some(*a), e)));
        for (anchor, entry) in entries {
            places.entry(entry.name.clone()).or_insert(Place {
                file: spec.name.to_owned(),
                anchor: anchor.map(str::to_owned),
            });
            components
                .entry(entry.name.clone())
                .or_insert_with(|| to_json(&entry.schema));
            for (name, schema) in &entry.deps {
                components
                    .entry(name.clone())
                    .or_insert_with(|| to_json(schema));
            }
        }
    }
    let files = specs
        .iter()
        .map(|spec| {
            let text = print(&build(spec, &components, &mut places));
            (spec.name.to_owned(), text)
        })
        .collect();
    Generated { files, places }
}

/// One file: its root and `$defs`, plus the components they refer to
/// that no file has placed yet.
fn build(
    spec: &FileSpec,
    components: &BTreeMap<String, Value>,
    places: &mut BTreeMap<String, Place>,
) -> Value {
    let mut defs: Vec<(String, Value)> = spec
        .defs
        .iter()
        .map(|(anchor, e)| ((*anchor).to_owned(), to_json(&e.schema)))
        .collect();
    let mut root = spec
        .root
        .as_ref()
        .map_or_else(|| json!({}), |e| to_json(&e.schema));
    let mut unplaced = localise(&mut root, spec.name, places);
    let mut done = 0;
    loop {
        for (_, d) in &mut defs[done..] {
            unplaced.extend(localise(d, spec.name, places));
        }
        done = defs.len();
        let Some(name) = unplaced.pop_first() else {
            break;
        };
        if places.contains_key(&name) {
            continue;
        }
        let schema = components
            .get(&name)
            .unwrap_or_else(|| {
                panic!(
                    "{}: `{name}` is referred to but no type gives it",
                    spec.name
                )
            })
            .clone();
        let anchor = snake_case(&name);
        assert!(
            defs.iter().all(|(a, _)| *a != anchor),
            "{}: `{name}` would take the anchor `{anchor}`, which is taken",
            spec.name
        );
        places.insert(
            name,
            Place {
                file: spec.name.to_owned(),
                anchor: Some(anchor.clone()),
            },
        );
        defs.push((anchor, schema));
        // Anything localised before this placement may name it: once more.
        localise(&mut root, spec.name, places);
        done = 0;
    }
    assemble(spec, root, defs)
}

/// The file's JSON: identity, prose, the root's keywords, `$defs`.
fn assemble(spec: &FileSpec, root: Value, defs: Vec<(String, Value)>) -> Value {
    let mut out = Map::new();
    out.insert("$schema".into(), DRAFT.into());
    out.insert("$id".into(), format!("{BASE}{}", spec.name).into());
    if let Value::Object(keywords) = root {
        out.extend(keywords);
    }
    out.insert("title".into(), spec.title.into());
    out.insert("description".into(), spec.description.into());
    if !defs.is_empty() {
        out.insert("$defs".into(), Value::Object(defs.into_iter().collect()));
    }
    convert::simplify(Value::Object(out))
}
