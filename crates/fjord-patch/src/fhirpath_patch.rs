//! FHIRPath Patch (R4 `fhirpatch.html`): a `Parameters` resource whose `operation` parameters
//! (`add`, `insert`, `delete`, `replace`, `move`) each name their target with a FHIRPath
//! expression, applied in order, each to the result of the one before.

use fjord_definitions::{child_element, ElementDef};
use fjord_fhirpath::{evaluate_resource, parse, Expr, Node, Value};
use serde_json::{Map, Value as Json};

use crate::locate::{object_mut, prune, Element, Places, Step};
use crate::PatchError;

/// Applies a FHIRPath Patch (`Parameters`, as FHIR JSON) to `resource`. All or nothing: on an
/// error `resource` is as it was.
pub fn apply_fhirpath_patch(resource: &mut Json, parameters: &Json) -> Result<(), PatchError> {
    if parameters["resourceType"] != "Parameters" {
        return Err(malformed("a FHIRPath Patch is a Parameters resource"));
    }
    let operations = parameters["parameter"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(Operation::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let mut patched = resource.clone();
    for operation in &operations {
        operation.apply(&mut patched)?;
    }
    prune(&mut patched);
    *resource = patched;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

/// One `operation` parameter, its parts read.
struct Operation<'p> {
    kind: Kind,
    path_text: &'p str,
    path: Expr,
    name: Option<&'p str>,
    value: Option<&'p Json>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

fn malformed(message: impl Into<String>) -> PatchError {
    PatchError::Malformed(message.into())
}

fn not_applicable(message: impl Into<String>) -> PatchError {
    PatchError::NotApplicable(message.into())
}

impl<'p> Operation<'p> {
    fn parse(parameter: &'p Json) -> Result<Operation<'p>, PatchError> {
        if parameter["name"] != "operation" {
            return Err(malformed(format!(
                "a FHIRPath Patch has only 'operation' parameters, not '{}'",
                parameter["name"].as_str().unwrap_or_default()
            )));
        }
        let parts = parameter["part"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let part = |name: &str| parts.iter().find(|p| p["name"] == name);
        let text = |name: &str, key: &str| part(name).and_then(|p| p[key].as_str());
        let number = |name: &str| -> Result<Option<usize>, PatchError> {
            match part(name) {
                None => Ok(None),
                Some(p) => p["valueInteger"]
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| {
                        malformed(format!("the part '{name}' needs a valueInteger ≥ 0"))
                    }),
            }
        };
        let kind = match text("type", "valueCode") {
            Some("add") => Kind::Add,
            Some("insert") => Kind::Insert,
            Some("delete") => Kind::Delete,
            Some("replace") => Kind::Replace,
            Some("move") => Kind::Move,
            Some(other) => return Err(malformed(format!("unknown operation type '{other}'"))),
            None => return Err(malformed("an operation needs a type (valueCode)")),
        };
        let path_text =
            text("path", "valueString").ok_or_else(|| malformed("an operation needs a path"))?;
        let path = parse(path_text).map_err(|e| malformed(format!("path '{path_text}': {e}")))?;
        let operation = Operation {
            kind,
            path_text,
            path,
            name: text("name", "valueString"),
            value: part("value"),
            index: number("index")?,
            source: number("source")?,
            destination: number("destination")?,
        };
        let missing = match kind {
            Kind::Add if operation.name.is_none() => Some("name"),
            Kind::Add | Kind::Insert | Kind::Replace if operation.value.is_none() => Some("value"),
            Kind::Insert if operation.index.is_none() => Some("index"),
            Kind::Move if operation.source.is_none() => Some("source"),
            Kind::Move if operation.destination.is_none() => Some("destination"),
            _ => None,
        };
        match missing {
            Some(part) => Err(malformed(format!(
                "the {kind:?} operation on '{path_text}' needs a {part}"
            ))),
            None => Ok(operation),
        }
    }

    fn apply(&self, resource: &mut Json) -> Result<(), PatchError> {
        let (found, owner) = self.targets(resource)?;
        match self.kind {
            Kind::Add => {
                let (place, structure) = self.single(&found, "adding")?;
                let name = self.name.expect("checked when parsed");
                let element = child_element(&structure, name).ok_or_else(|| {
                    not_applicable(format!("{structure} has no element '{name}'"))
                })?;
                let new = NewValue::of(self.value.expect("checked"), element)?;
                let object = object_mut(resource, &place).ok_or_else(|| {
                    not_applicable(format!(
                        "{} is not an element with children",
                        self.path_text
                    ))
                })?;
                add(object, name, element, new)
            }
            Kind::Insert => {
                let list = self.list(&found, owner, "inserting")?;
                let new = NewValue::from_part(self.value.expect("checked"), &list.item_structure)?;
                let index = self.index.expect("checked");
                if index > list.len {
                    return Err(not_applicable(format!(
                        "index {index} is past the end of {} ({} items)",
                        self.path_text, list.len
                    )));
                }
                let object = object_mut(resource, &list.parent).expect("located");
                insert(object, &list.key, index, new);
                Ok(())
            }
            Kind::Delete => match found.as_slice() {
                [] => Ok(()),
                [_] => {
                    let (place, _) = self.single(&found, "deleting")?;
                    let element = Element::at(&place)
                        .ok_or_else(|| not_applicable("the resource itself cannot be deleted"))?;
                    let object = object_mut(resource, &element.parent).expect("located");
                    remove(object, &element.key, element.index);
                    Ok(())
                }
                more => Err(not_applicable(format!(
                    "{} matches {} elements; delete takes one",
                    self.path_text,
                    more.len()
                ))),
            },
            Kind::Replace => {
                let (place, structure) = self.single(&found, "replacing")?;
                let element = Element::at(&place)
                    .ok_or_else(|| not_applicable("the resource itself cannot be replaced"))?;
                let new = NewValue::from_part(self.value.expect("checked"), &structure)?;
                let choice = structure_at(resource, &element.parent)
                    .and_then(|parent| choice_stem(&parent, &element.key));
                let object = object_mut(resource, &element.parent).expect("located");
                replace(object, &element, choice, new);
                Ok(())
            }
            Kind::Move => {
                let list = self.list(&found, owner, "moving")?;
                let (source, destination) = (
                    self.source.expect("checked"),
                    self.destination.expect("checked"),
                );
                if source >= list.len || destination >= list.len {
                    return Err(not_applicable(format!(
                        "{} has {} items; cannot move {source} to {destination}",
                        self.path_text, list.len
                    )));
                }
                let object = object_mut(resource, &list.parent).expect("located");
                for key in [list.key.clone(), format!("_{}", list.key)] {
                    if let Some(Json::Array(items)) = object.get_mut(&key) {
                        let item = items.remove(source);
                        items.insert(destination, item);
                    }
                }
                Ok(())
            }
        }
    }

    /// The places (and structures) of what the path finds, and for an insert or move into a
    /// list the path finds empty (`Patient.identifier`), the element the list belongs to.
    fn targets(&self, resource: &Json) -> Result<(Vec<Located>, Option<Owner>), PatchError> {
        let places = Places::of(resource);
        let locate = |expr: &Expr| -> Result<Vec<Located>, PatchError> {
            let found = evaluate_resource(expr, resource)
                .map_err(|e| not_applicable(format!("path '{}': {e}", self.path_text)))?;
            found
                .iter()
                .map(|value| match value {
                    Value::Node(node) => place_of(&places, node)
                        .map(|place| (place, node.structure.to_owned()))
                        .ok_or_else(|| self.computed()),
                    _ => Err(self.computed()),
                })
                .collect()
        };
        let found = locate(&self.path)?;
        let owner = match (&self.path, self.kind) {
            (Expr::Member(base, name), Kind::Insert | Kind::Move) if found.is_empty() => {
                match locate(base)?.as_slice() {
                    [(place, structure)] => Some(Owner {
                        place: place.clone(),
                        structure: structure.clone(),
                        list: name.clone(),
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        Ok((found, owner))
    }

    fn computed(&self) -> PatchError {
        not_applicable(format!(
            "'{}' finds a computed value, not an element",
            self.path_text
        ))
    }

    fn single(&self, found: &[Located], doing: &str) -> Result<Located, PatchError> {
        match found {
            [one] => Ok(one.clone()),
            [] => Err(not_applicable(format!(
                "No content found at {} when {doing}",
                self.path_text
            ))),
            more => Err(not_applicable(format!(
                "{} matches {} elements when {doing}; it must match one",
                self.path_text,
                more.len()
            ))),
        }
    }

    /// The list the path names: its items must be the items of one repeating element.
    fn list(
        &self,
        found: &[Located],
        owner: Option<Owner>,
        doing: &str,
    ) -> Result<List, PatchError> {
        if let Some(owner) = owner {
            let element = child_element(&owner.structure, &owner.list)
                .filter(|e| e.many)
                .ok_or_else(|| not_applicable(format!("{} is not a list", self.path_text)))?;
            let item_type = element.types.first().copied().unwrap_or_default();
            return Ok(List {
                parent: owner.place,
                key: owner.list,
                len: 0,
                item_structure: element.structure_of(item_type).to_owned(),
            });
        }
        let elements: Vec<Element> = found.iter().filter_map(|(p, _)| Element::at(p)).collect();
        let Some(first) = elements.first() else {
            return Err(not_applicable(format!(
                "No content found at {} when {doing}",
                self.path_text
            )));
        };
        let one_list = elements.len() == found.len()
            && elements
                .iter()
                .all(|e| e.index.is_some() && e.parent == first.parent && e.key == first.key);
        if !one_list {
            return Err(not_applicable(format!(
                "{} is not the items of one list",
                self.path_text
            )));
        }
        Ok(List {
            parent: first.parent.clone(),
            key: first.key.clone(),
            len: elements.len(),
            item_structure: found[0].1.clone(),
        })
    }
}

/// A place in the resource and the structure of the element there.
type Located = (Vec<Step>, String);

/// The element an empty list belongs to: its place, its structure, and the list's name.
struct Owner {
    place: Vec<Step>,
    structure: String,
    list: String,
}

/// A repeating element of an object.
struct List {
    parent: Vec<Step>,
    key: String,
    len: usize,
    /// Where the children of its items are defined.
    item_structure: String,
}

fn place_of(places: &Places, node: &Node) -> Option<Vec<Step>> {
    node.json
        .or(node.companion)
        .and_then(|json| places.get(json))
        .map(<[Step]>::to_vec)
}

/// A value to put in: its JSON, a primitive's companion (`_value…`: id and extensions), and the
/// type a `value[x]` named (`Date`, `HumanName`).
struct NewValue {
    json: Json,
    companion: Option<Json>,
    type_suffix: Option<String>,
}

impl NewValue {
    /// The `value` part of an operation, for an element with this definition.
    fn of(part: &Json, element: &ElementDef) -> Result<NewValue, PatchError> {
        let structure = element.structure_of(element.types.first().copied().unwrap_or_default());
        NewValue::from_part(part, structure)
    }

    /// A part's `value[x]`, or its parts as an element of `structure` (an anonymous type, such
    /// as a BackboneElement).
    fn from_part(part: &Json, structure: &str) -> Result<NewValue, PatchError> {
        let object = part.as_object().expect("parts are objects");
        if let Some((key, json)) = object
            .iter()
            .find(|(key, _)| key.starts_with("value") && key.len() > "value".len())
        {
            return Ok(NewValue {
                json: json.clone(),
                companion: object.get(&format!("_{key}")).cloned(),
                type_suffix: Some(key["value".len()..].to_owned()),
            });
        }
        let parts = object
            .get("part")
            .and_then(Json::as_array)
            .ok_or_else(|| malformed("a value part needs a value[x] or parts"))?;
        let mut built = Map::new();
        for part in parts {
            let name = part["name"]
                .as_str()
                .ok_or_else(|| malformed("a part needs a name"))?;
            let element = child_element(structure, name)
                .ok_or_else(|| not_applicable(format!("{structure} has no element '{name}'")))?;
            add(&mut built, name, element, NewValue::of(part, element)?)?;
        }
        Ok(NewValue {
            json: Json::Object(built),
            companion: None,
            type_suffix: None,
        })
    }
}

/// The JSON key of `name` for a value: a choice element takes the value's type
/// (`value` + `Quantity`).
fn key_for(name: &str, element: &ElementDef, new: &NewValue) -> Result<String, PatchError> {
    if !element.is_choice() {
        return Ok(name.to_owned());
    }
    match &new.type_suffix {
        Some(suffix) => Ok(format!("{name}{suffix}")),
        None => Err(malformed(format!(
            "'{name}' is a choice: its value needs a value[x] naming the type"
        ))),
    }
}

/// Adds `new` as element `name` of `object`: appended when the element repeats, set when it
/// does not and has no value yet.
fn add(
    object: &mut Map<String, Json>,
    name: &str,
    element: &ElementDef,
    new: NewValue,
) -> Result<(), PatchError> {
    let key = key_for(name, element, &new)?;
    if element.many {
        let len = object
            .get(&key)
            .and_then(Json::as_array)
            .map_or(0, Vec::len);
        insert(object, &key, len, new);
        return Ok(());
    }
    let companion_key = format!("_{key}");
    if object.contains_key(&key) || object.contains_key(&companion_key) {
        return Err(not_applicable(format!(
            "'{name}' already has a value and does not repeat: replace it instead"
        )));
    }
    object.insert(key, new.json);
    if let Some(companion) = new.companion {
        object.insert(companion_key, companion);
    }
    Ok(())
}

/// Inserts `new` at `index` of the list `key`, keeping a companion list (`_key`) aligned.
fn insert(object: &mut Map<String, Json>, key: &str, index: usize, new: NewValue) {
    let companion_key = format!("_{key}");
    let items = object
        .entry(key.to_owned())
        .or_insert_with(|| Json::Array(Vec::new()));
    if !items.is_array() {
        *items = Json::Array(vec![items.take()]);
    }
    let items = items.as_array_mut().expect("made an array");
    let len = items.len();
    items.insert(index, new.json);
    if new.companion.is_some() || object.contains_key(&companion_key) {
        let companions = object
            .entry(companion_key)
            .or_insert_with(|| Json::Array(vec![Json::Null; len]));
        if let Some(companions) = companions.as_array_mut() {
            companions.resize(len, Json::Null);
            companions.insert(index, new.companion.unwrap_or(Json::Null));
        }
    }
}

/// Removes the element `key` (or its item `index`) and its companion.
fn remove(object: &mut Map<String, Json>, key: &str, index: Option<usize>) {
    let companion_key = format!("_{key}");
    match index {
        None => {
            object.remove(key);
            object.remove(&companion_key);
        }
        Some(index) => {
            for key in [key, companion_key.as_str()] {
                if let Some(Json::Array(items)) = object.get_mut(key) {
                    if index < items.len() {
                        items.remove(index);
                    }
                }
            }
        }
    }
}

/// Replaces the value of `element` (in `object`) with `new`. A choice element (`choice` is its
/// name without the type) takes the key of the new value's type: `valueQuantity` →
/// `valueString`.
fn replace(object: &mut Map<String, Json>, element: &Element, choice: Option<&str>, new: NewValue) {
    let key = match (choice, &new.type_suffix) {
        (Some(stem), Some(suffix)) => format!("{stem}{suffix}"),
        _ => element.key.clone(),
    };
    let companion_key = format!("_{key}");
    match element.index {
        None => {
            object.remove(&format!("_{}", element.key));
            object.remove(&element.key);
            object.insert(key, new.json);
            if let Some(companion) = new.companion {
                object.insert(companion_key, companion);
            }
        }
        Some(index) => {
            if let Some(Json::Array(items)) = object.get_mut(&key) {
                items[index] = new.json;
            }
            match (object.get_mut(&companion_key), new.companion) {
                (Some(Json::Array(companions)), companion) => {
                    if let Some(slot) = companions.get_mut(index) {
                        *slot = companion.unwrap_or(Json::Null);
                    }
                }
                (_, Some(companion)) => {
                    let len = object
                        .get(&key)
                        .and_then(Json::as_array)
                        .map_or(0, Vec::len);
                    let mut companions = vec![Json::Null; len];
                    companions[index] = companion;
                    object.insert(companion_key, Json::Array(companions));
                }
                _ => {}
            }
        }
    }
}

/// Where the children of the object at `place` are defined: walks the definitions from the
/// resource type (or a contained resource's) along the keys.
fn structure_at(root: &Json, place: &[Step]) -> Option<String> {
    let mut structure = root["resourceType"].as_str()?.to_owned();
    let mut value = root;
    for step in place {
        match step {
            Step::Index(index) => value = value.get(*index)?,
            Step::Key(key) => {
                value = value.get(key)?;
                let (element, type_code) = match child_element(&structure, key) {
                    Some(element) => (element, element.types.first().copied().unwrap_or_default()),
                    None => {
                        let stem = choice_stem(&structure, key)?;
                        let element = child_element(&structure, stem)?;
                        let suffix = &key[stem.len()..];
                        let type_code = element
                            .types
                            .iter()
                            .copied()
                            .find(|t| upper_first(t) == suffix)?;
                        (element, type_code)
                    }
                };
                structure = element.structure_of(type_code).to_owned();
            }
        }
        if let Some(contained) = value.get("resourceType").and_then(Json::as_str) {
            structure = contained.to_owned();
        }
    }
    Some(structure)
}

/// The name of the choice element `key` is a value of (`value` for `valueQuantity`), if any.
fn choice_stem<'k>(structure: &str, key: &'k str) -> Option<&'k str> {
    key.char_indices()
        .filter(|(_, c)| c.is_ascii_uppercase())
        .map(|(at, _)| &key[..at])
        .find(|stem| child_element(structure, stem).is_some_and(ElementDef::is_choice))
}

fn upper_first(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn operation(parts: Json) -> Json {
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]})
    }

    #[test]
    fn an_insert_into_an_absent_list_starts_it() {
        let mut patient = json!({"resourceType": "Patient"});
        let patch = operation(json!([
            {"name": "type", "valueCode": "insert"},
            {"name": "path", "valueString": "Patient.identifier"},
            {"name": "index", "valueInteger": 0},
            {"name": "value", "valueIdentifier": {"value": "1"}},
        ]));
        apply_fhirpath_patch(&mut patient, &patch).unwrap();
        assert_eq!(patient["identifier"], json!([{"value": "1"}]));
    }

    #[test]
    fn a_failed_operation_leaves_the_resource_as_it_was() {
        let mut patient = json!({"resourceType": "Patient", "birthDate": "1920-01-01"});
        let patch = json!({"resourceType": "Parameters", "parameter": [
            {"name": "operation", "part": [
                {"name": "type", "valueCode": "delete"},
                {"name": "path", "valueString": "Patient.birthDate"}]},
            {"name": "operation", "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Patient.gender"},
                {"name": "value", "valueCode": "male"}]},
        ]});
        let error = apply_fhirpath_patch(&mut patient, &patch).unwrap_err();
        assert!(matches!(error, PatchError::NotApplicable(_)), "{error}");
        assert_eq!(patient["birthDate"], "1920-01-01");
    }

    #[test]
    fn a_choice_takes_the_type_of_its_new_value() {
        let mut observation = json!({"resourceType": "Observation", "valueString": "high"});
        let patch = operation(json!([
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Observation.value"},
            {"name": "value", "valueQuantity": {"value": 7.2, "code": "mmol/L"}},
        ]));
        apply_fhirpath_patch(&mut observation, &patch).unwrap();
        assert_eq!(
            observation,
            json!({"resourceType": "Observation", "valueQuantity": {"value": 7.2, "code": "mmol/L"}})
        );
    }
}
