//! protocol/schemas/ is generated from the code ([`weir::protocol`]): the
//! committed files must be exactly what the generator writes, the Markdown
//! may cite only anchors that exist, and the OpenAPI document must carry
//! the same schema as the files for every type they share.
//!
//! Regenerate after changing a type: `WEIR_SCHEMAS=write cargo test --test
//! api schemas`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::protocol::{doc, protocol_dir};

/// What to run when the files are stale.
const REGENERATE: &str = "WEIR_SCHEMAS=write cargo test --test api schemas";

#[test]
fn committed_schemas_are_generated() {
    let dir = protocol_dir().join("schemas");
    let generated = weir::protocol::render();
    if std::env::var("WEIR_SCHEMAS").as_deref() == Ok("write") {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, text) in &generated {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut committed = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            committed.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let made: BTreeMap<String, String> = generated.into_iter().collect();
    let (have, want): (Vec<&String>, Vec<&String>) =
        (committed.keys().collect(), made.keys().collect());
    assert_eq!(
        have, want,
        "protocol/schemas/ has other files than the generator makes; run `{REGENERATE}`"
    );
    for (name, text) in &made {
        assert!(
            committed[name] == *text,
            "protocol/schemas/{name} is not what the code generates (first difference at line {}); run `{REGENERATE}` and commit the result",
            first_difference(&committed[name], text)
        );
    }
}

fn first_difference(a: &str, b: &str) -> usize {
    a.lines().zip(b.lines()).take_while(|(x, y)| x == y).count() + 1
}

/// `key.json#/$defs/create` and the like, as protocol/*.md cite them; a
/// bare `#/$defs/x` belongs to the last file named before it on its line
/// or in its paragraph.
fn cited_anchors(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut file: Option<String> = None;
        let mut rest = paragraph;
        while let Some(i) = rest.find(".json") {
            let start = rest[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .map_or(0, |p| p + 1);
            let name = format!("{}.json", &rest[start..i]);
            let after = &rest[i + 5..];
            if !rest[start..i].is_empty() {
                file = Some(name.clone());
            }
            rest = after;
            // Anchors until the next file name.
            let upto = rest.find(".json").unwrap_or(rest.len());
            for cite in rest[..upto].split("#/$defs/").skip(1) {
                let anchor: String = cite
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(f) = &file {
                    out.push((f.clone(), anchor));
                }
            }
        }
        if file.is_none() && paragraph.contains("#/$defs/") {
            panic!("a `#/$defs/` citation names no file: {paragraph}");
        }
    }
    out
}

#[test]
fn every_cited_anchor_exists() {
    let files: BTreeMap<String, Value> = weir::protocol::render()
        .into_iter()
        .map(|(name, text)| (name, serde_json::from_str(&text).unwrap()))
        .collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(protocol_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for (file, anchor) in cited_anchors(&doc(&name)) {
            let schema = files
                .get(&file)
                .unwrap_or_else(|| panic!("protocol/{name} cites {file}, which is not generated"));
            assert!(
                schema["$defs"].get(&anchor).is_some(),
                "protocol/{name} cites {file}#/$defs/{anchor}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} anchors found: the citation reader is broken"
    );
}

#[test]
fn citation_reader_finds_what_is_cited() {
    let text = "Body ([`key.json#/$defs/create`](schemas/key.json)):\n\n| `run.json` | a run; `#/$defs/send` the body, `#/$defs/result` the answer |";
    assert_eq!(
        cited_anchors(text),
        [
            ("key.json".into(), "create".into()),
            ("run.json".into(), "send".into()),
            ("run.json".into(), "result".into())
        ]
    );
}

/// A file's root schema: the file without its identity, prose and `$defs`.
fn root_of(file: &Value) -> Value {
    let mut root = file.clone();
    let map = root.as_object_mut().unwrap();
    for key in ["$schema", "$id", "title", "description", "$defs"] {
        map.remove(key);
    }
    root
}

#[test]
fn openapi_components_are_the_files_schemas() {
    use weir::protocol::convert::{localise, simplify};
    let generated = weir::protocol::generate();
    let files: BTreeMap<String, Value> = generated
        .files
        .iter()
        .map(|(name, text)| (name.clone(), serde_json::from_str(text).unwrap()))
        .collect();
    let doc = weir::http::openapi::json();
    let components = doc["components"]["schemas"].as_object().unwrap();
    let mut shared = Vec::new();
    for (name, schema) in components {
        let Some(place) = generated.places.get(name) else {
            continue;
        };
        let mut schema = schema.clone();
        localise(&mut schema, &place.file, &generated.places);
        let mut schema = simplify(schema);
        let file = &files[&place.file];
        let want = match &place.anchor {
            Some(anchor) => file["$defs"][anchor].clone(),
            None => {
                // The file's description is the file's, not the type's.
                schema.as_object_mut().unwrap().remove("description");
                root_of(file)
            }
        };
        assert_eq!(
            schema, want,
            "/v1/openapi.json's {name} differs from its protocol/schemas/ twin"
        );
        shared.push(name.as_str());
    }
    for name in [
        "AgentEvent",
        "Agent",
        "Run",
        "Tool",
        "KeyRecord",
        "WsServerFrame",
        "StreamError",
    ] {
        assert!(shared.contains(&name), "{name} is not in both: {shared:?}");
    }
}
