//! Where FHIRPath results are in the JSON they were evaluated on.
//!
//! The evaluator hands back references into the document; a patch needs their places to change
//! them. Every value's place is recorded once per evaluation, keyed by its address.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

/// One step from a value to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// The places of every value in a document, by address.
pub(crate) struct Places(HashMap<*const Json, Vec<Step>>);

impl Places {
    pub(crate) fn of(root: &Json) -> Places {
        let mut places = HashMap::new();
        record(root, &mut Vec::new(), &mut places);
        Places(places)
    }

    pub(crate) fn get(&self, value: &Json) -> Option<&[Step]> {
        self.0.get(&(value as *const Json)).map(Vec::as_slice)
    }
}

fn record(value: &Json, at: &mut Vec<Step>, places: &mut HashMap<*const Json, Vec<Step>>) {
    places.insert(value as *const Json, at.clone());
    match value {
        Json::Object(object) => {
            for (key, child) in object {
                at.push(Step::Key(key.clone()));
                record(child, at, places);
                at.pop();
            }
        }
        Json::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                at.push(Step::Index(index));
                record(child, at, places);
                at.pop();
            }
        }
        _ => {}
    }
}

/// An element of a FHIR object: its JSON key (without the `_` of a primitive's companion) in
/// the object at `parent`, and its position when the element repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub parent: Vec<Step>,
    pub key: String,
    pub index: Option<usize>,
}

impl Element {
    /// The element a place names; `None` for the root.
    pub(crate) fn at(place: &[Step]) -> Option<Element> {
        let (index, rest) = match place.split_last()? {
            (Step::Index(i), rest) => (Some(*i), rest),
            _ => (None, place),
        };
        let (Step::Key(key), parent) = rest.split_last()? else {
            return None;
        };
        Some(Element {
            parent: parent.to_vec(),
            key: key.strip_prefix('_').unwrap_or(key).to_owned(),
            index,
        })
    }
}

/// The value at `place`.
pub(crate) fn at_mut<'a>(root: &'a mut Json, place: &[Step]) -> Option<&'a mut Json> {
    place.iter().try_fold(root, |value, step| match step {
        Step::Key(key) => value.get_mut(key.as_str()),
        Step::Index(index) => value.get_mut(*index),
    })
}

/// The object at `place`.
pub(crate) fn object_mut<'a>(
    root: &'a mut Json,
    place: &[Step],
) -> Option<&'a mut Map<String, Json>> {
    at_mut(root, place)?.as_object_mut()
}

/// Removes empty objects and arrays, and companion arrays of nothing but `null`, below `value`:
/// what a deletion leaves behind is not valid FHIR JSON.
pub(crate) fn prune(value: &mut Json) {
    match value {
        Json::Object(object) => {
            object.values_mut().for_each(prune);
            object.retain(|key, child| !is_empty(key, child));
        }
        Json::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(key: &str, value: &Json) -> bool {
    match value {
        Json::Object(object) => object.is_empty(),
        Json::Array(items) => {
            items.is_empty() || (key.starts_with('_') && items.iter().all(Json::is_null))
        }
        _ => false,
    }
}
