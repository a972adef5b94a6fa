//! Finds where in a JSON body fhirbolt's strict deserializer failed.
//!
//! fhirbolt reports *what* is wrong (`unknown field `foo``) but not *where*. On the error path only,
//! we narrow the location down by removal: a child whose removal makes the error go away (or change)
//! contains it. Required-field errors stay put when every child of their element is removed, which
//! is how they are found as well.

use serde_json::Value;

use crate::resource::{resource_type, strict_json};
use crate::ParseError;

/// Diagnosis gives up after this many trial parses; bodies this large are rare on the error path.
const MAX_PROBES: usize = 400;

enum Segment {
    Key(String),
    Index(usize),
}

pub(crate) fn diagnose_json(body: &[u8], message: &str) -> ParseError {
    let root: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return ParseError::new(format!("invalid JSON: {e}")),
    };
    let Some(type_name) = root.get("resourceType").and_then(Value::as_str) else {
        return ParseError::at("missing resourceType", "resourceType");
    };
    if resource_type(type_name).is_none() {
        return ParseError::at(
            format!("unknown resource type '{type_name}'"),
            "resourceType",
        );
    }
    let mut path = Vec::new();
    let mut probes = 0;
    'descend: loop {
        let keys: Vec<Segment> = match node(&root, &path) {
            Some(Value::Object(map)) => map
                .keys()
                .filter(|k| !(path.is_empty() && *k == "resourceType"))
                .map(|k| Segment::Key(k.clone()))
                .collect(),
            Some(Value::Array(items)) => (0..items.len()).map(Segment::Index).collect(),
            _ => break,
        };
        for child in keys {
            probes += 1;
            if probes > MAX_PROBES {
                break 'descend;
            }
            path.push(child);
            let mut candidate = root.clone();
            remove(&mut candidate, &path);
            let bytes = serde_json::to_vec(&candidate).unwrap_or_default();
            let culprit = match (strict_json(&bytes), path.last()) {
                (Ok(_), _) => true,
                (Err(other), _) if other == message => false,
                // Removing a required element only moves the complaint to that element.
                (Err(other), Some(Segment::Key(key))) => {
                    !other.starts_with(&format!("missing field `{key}`"))
                }
                (Err(_), _) => true,
            };
            if culprit {
                continue 'descend;
            }
            path.pop();
        }
        break;
    }
    let mut location = render(type_name, &path);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        location = format!("{location}.{field}");
    }
    ParseError::at(message, location)
}

fn node<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(root, |value, segment| match segment {
        Segment::Key(k) => value.get(k),
        Segment::Index(i) => value.get(i),
    })
}

fn remove(root: &mut Value, path: &[Segment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents
        .iter()
        .try_fold(root, |value, segment| match segment {
            Segment::Key(k) => value.get_mut(k),
            Segment::Index(i) => value.get_mut(i),
        });
    match (parent, last) {
        (Some(Value::Object(map)), Segment::Key(k)) => {
            map.shift_remove(k);
        }
        (Some(Value::Array(items)), Segment::Index(i)) => {
            items.remove(*i);
        }
        _ => {}
    }
}

fn render(type_name: &str, path: &[Segment]) -> String {
    let mut out = type_name.to_owned();
    for segment in path {
        match segment {
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}
