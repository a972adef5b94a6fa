//! Walking a resource's FHIR JSON with the path of each element.

use serde_json::Value;

/// Calls `visit(object, path)` for every JSON object in `value`, itself included, where `path`
/// is the object's path from `root` in FHIRPath form (`Observation.performer[1]`).
pub fn for_each_object(value: &Value, root: &str, visit: &mut impl FnMut(&Value, &str)) {
    walk(value, &mut root.to_owned(), visit);
}

fn walk(value: &Value, path: &mut String, visit: &mut impl FnMut(&Value, &str)) {
    let len = path.len();
    match value {
        Value::Object(object) => {
            visit(value, path);
            for (key, child) in object {
                path.push('.');
                path.push_str(key);
                walk(child, path, visit);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push_str(&format!("[{index}]"));
                walk(item, path, visit);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_visited_with_their_paths() {
        let observation = json!({
            "resourceType": "Observation",
            "subject": { "reference": "Patient/p1" },
            "performer": [{ "display": "a" }, { "reference": "Practitioner/x" }],
            "component": [{ "code": { "text": "c" } }],
        });
        let mut paths = Vec::new();
        for_each_object(&observation, "Observation", &mut |_, path| {
            paths.push(path.to_owned())
        });
        assert_eq!(
            paths,
            [
                "Observation",
                "Observation.subject",
                "Observation.performer[0]",
                "Observation.performer[1]",
                "Observation.component[0]",
                "Observation.component[0].code",
            ]
        );
    }
}
