//! A resource against base R4: what the typed model does not already refuse.
//!
//! `fjord-model` parses strictly (element names, JSON types, arrays where many are allowed); this
//! walk adds what the definitions say on top: minimum cardinalities, the primitive types' formats
//! (their regular expressions, and calendar dates that exist), `ele-1` (no empty elements), the
//! codes of required bindings whose value sets the specification enumerates, and every invariant
//! of the elements and types met on the way, evaluated with `fjord-fhirpath`. Contained resources
//! and the resources of bundle entries and parameters are walked as resources of their own.

use fjord_definitions::{
    child_element, elements_of, required_value_set, type_def, BindingStrength, ElementDef, TypeKind,
};
use serde_json::Value;

use crate::invariants::{self, Constraints};
use crate::primitives;
use crate::{Issue, IssueType, Severity};

/// Walks one resource (with what it contains), collecting issues.
pub(crate) struct Walker<'r> {
    pub(crate) issues: Vec<Issue>,
    /// Invariants that could not be evaluated (an expression the engine cannot run), by key.
    pub(crate) unevaluated: Vec<String>,
    root: &'r Value,
}

/// Where a value sits: the element that holds it and the type it has there.
#[derive(Clone, Copy)]
struct Slot<'r> {
    element: Option<&'static ElementDef>,
    type_code: &'r str,
    /// The nearest resource, `%resource` of invariants.
    resource: &'r Value,
    /// The resource that is not contained in another (`%rootResource`): a contained resource's
    /// container; a bundle entry's resource is its own.
    container: &'r Value,
}

impl<'r> Walker<'r> {
    pub(crate) fn new(root: &'r Value) -> Walker<'r> {
        Walker {
            issues: Vec::new(),
            unevaluated: Vec::new(),
            root,
        }
    }

    fn issue(&mut self, severity: Severity, code: IssueType, path: &str, message: String) {
        self.issues.push(Issue::new(severity, code, path, message));
    }

    /// A resource: its elements, then the invariants of its type. `container` is the resource
    /// that contains it, if any.
    pub(crate) fn resource(&mut self, json: &'r Value, path: &str, container: Option<&'r Value>) {
        let Some(type_name) = json["resourceType"].as_str() else {
            let message = "a resource needs a resourceType".to_owned();
            return self.issue(Severity::Error, IssueType::Structure, path, message);
        };
        let is_resource = type_def(type_name).is_some_and(|t| t.kind == TypeKind::Resource);
        if !is_resource {
            let message = format!("'{type_name}' is not a resource type");
            return self.issue(Severity::Error, IssueType::Structure, path, message);
        }
        let slot = Slot {
            element: None,
            type_code: type_name,
            resource: json,
            container: container.unwrap_or(json),
        };
        self.complex(json, type_name, path, slot);
    }

    /// An object of `structure` (a type, or an inline structure's path): each member, the
    /// cardinalities, `ele-1`, then the invariants of its element and type.
    fn complex(&mut self, json: &'r Value, structure: &'r str, path: &str, slot: Slot<'r>) {
        let Value::Object(map) = json else {
            let message = format!("{} must be an object", slot.type_code);
            return self.issue(Severity::Error, IssueType::Structure, path, message);
        };
        let is_resource = slot.element.is_none() && map.contains_key("resourceType");
        // A primitive's `_name` companion: `ele-1` is the primitive's, checked with its value.
        let is_companion = slot.element.is_none() && slot.type_code == "Element";
        let empty = !map.keys().any(|k| k != "id" && k != "fhir_comments");
        if !is_resource && !is_companion && empty {
            let message = "ele-1: All FHIR elements must have a @value or children".to_owned();
            self.issue(Severity::Error, IssueType::Invariant, path, message);
        }
        let mut present: Vec<(&'static str, usize)> = Vec::new();
        for (key, value) in map {
            if (is_resource && key == "resourceType") || key == "fhir_comments" {
                continue;
            }
            let (name, companion_only) = match key.strip_prefix('_') {
                // A primitive's id and extensions are walked with its value, when it has one.
                Some(name) if map.contains_key(name) => continue,
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let Some((element, type_code)) = member(structure, name) else {
                let message = format!("unknown element '{key}'");
                self.issue(Severity::Error, IssueType::Structure, path, message);
                continue;
            };
            let (values, companions) = if companion_only {
                (None, Some(value))
            } else {
                (Some(value), map.get(&format!("_{key}")))
            };
            let count =
                self.member_values(element, type_code, name, values, companions, path, slot);
            present.push((element.path, count));
        }
        for element in elements_of(structure) {
            if element.min == 0 {
                continue;
            }
            let count = present
                .iter()
                .find(|(p, _)| *p == element.path)
                .map_or(0, |(_, n)| *n);
            if count < element.min as usize {
                let message = format!(
                    "{}: minimum required = {}, but only found {count}",
                    element.path, element.min
                );
                let at = format!("{path}.{}", element.name());
                self.issue(Severity::Error, IssueType::Required, &at, message);
            }
        }
        self.invariants(json, None, structure, path, slot);
    }

    /// The values of one member (`given`, `valueQuantity`) with their `_` companions; returns how
    /// many there are.
    #[allow(clippy::too_many_arguments)] // reason: one member's full context, used once
    fn member_values(
        &mut self,
        element: &'static ElementDef,
        type_code: &'r str,
        name: &str,
        values: Option<&'r Value>,
        companions: Option<&'r Value>,
        path: &str,
        slot: Slot<'r>,
    ) -> usize {
        let display = if element.is_choice() {
            format!("{path}.{name}.ofType({type_code})", name = element.name())
        } else {
            format!("{path}.{name}")
        };
        let slot = Slot {
            element: Some(element),
            type_code,
            ..slot
        };
        let as_list = |v: Option<&'r Value>| -> Vec<Option<&'r Value>> {
            match v {
                Some(Value::Array(items)) => items.iter().map(Some).collect(),
                Some(other) => vec![Some(other)],
                None => Vec::new(),
            }
        };
        let values_list = as_list(values);
        let companions_list = as_list(companions);
        let is_array = matches!(values.or(companions), Some(Value::Array(_)));
        let count = values_list.len().max(companions_list.len());
        if is_array && count == 0 {
            let message = "an array must not be empty".to_owned();
            self.issue(Severity::Error, IssueType::Structure, &display, message);
        }
        if is_array && !element.many {
            let message = format!("{} allows one value, not an array", element.path);
            self.issue(Severity::Error, IssueType::Structure, &display, message);
        }
        for index in 0..count {
            let at = if is_array {
                format!("{display}[{index}]")
            } else {
                display.clone()
            };
            let value = values_list.get(index).copied().flatten();
            let companion = companions_list.get(index).copied().flatten();
            self.value(value, companion, &at, slot);
        }
        count
    }

    /// One value of a member, by the kind of its type.
    fn value(
        &mut self,
        value: Option<&'r Value>,
        companion: Option<&'r Value>,
        path: &str,
        slot: Slot<'r>,
    ) {
        let type_code = slot.type_code;
        if type_code == "Resource" {
            if let Some(value) = value {
                let contained = slot
                    .element
                    .is_some_and(|e| e.path == "DomainResource.contained");
                self.resource(value, path, contained.then_some(slot.container));
            }
            return;
        }
        let kind = type_def(type_code).map(|t| t.kind);
        match kind {
            Some(TypeKind::Primitive) => {
                let value = value.filter(|v| !v.is_null());
                match value {
                    Some(value) => {
                        if let Some(message) = primitives::check(type_code, value) {
                            self.issue(Severity::Error, IssueType::Value, path, message);
                        }
                    }
                    None if companion.is_none() => {
                        let message = "a primitive needs a value or extensions".to_owned();
                        self.issue(Severity::Error, IssueType::Structure, path, message);
                    }
                    None => {}
                }
                if let Some(companion) = companion.filter(|c| !c.is_null()) {
                    let companion_slot = Slot {
                        element: None,
                        type_code: "Element",
                        ..slot
                    };
                    if value.is_none() && !companion.get("extension").is_some_and(Value::is_array) {
                        let message =
                            "ele-1: All FHIR elements must have a @value or children".to_owned();
                        self.issue(Severity::Error, IssueType::Invariant, path, message);
                    }
                    self.complex(companion, "Element", path, companion_slot);
                }
                if let Some(value) = value {
                    self.binding(value, path, slot);
                    self.invariants(value, companion, type_code, path, slot);
                }
            }
            // FHIRPath system types (`Resource.id`, `Extension.url`): nothing to check here.
            None => {}
            Some(TypeKind::Complex) => {
                let Some(value) = value else { return };
                let structure = match slot.element {
                    Some(element) => element.structure_of(type_code),
                    None => type_code,
                };
                self.complex(value, structure, path, slot);
                self.binding(value, path, slot);
            }
            Some(TypeKind::Resource) => {
                if let Some(value) = value {
                    self.resource(value, path, None);
                }
            }
        }
    }

    /// A required binding to a value set the specification enumerates.
    fn binding(&mut self, value: &Value, path: &str, slot: Slot<'r>) {
        let Some(binding) = slot.element.and_then(|e| e.binding.as_ref()) else {
            return;
        };
        if binding.strength != BindingStrength::Required {
            return;
        }
        let Some(value_set) = required_value_set(binding.value_set) else {
            return;
        };
        let coding_in = |coding: &Value| match (coding["system"].as_str(), coding["code"].as_str())
        {
            (Some(system), Some(code)) => Some(value_set.contains(system, code)),
            _ => None,
        };
        let wrong = match slot.type_code {
            "code" => value
                .as_str()
                .filter(|code| !value_set.contains_code(code))
                .map(|code| format!("'{code}'")),
            "Coding" => (coding_in(value) == Some(false)).then(|| describe_coding(value)),
            "CodeableConcept" => {
                let codings = value["coding"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let known: Vec<bool> = codings.iter().filter_map(coding_in).collect();
                (!known.is_empty() && !known.contains(&true)).then(|| {
                    let all: Vec<String> = codings.iter().map(describe_coding).collect();
                    all.join(", ")
                })
            }
            _ => None,
        };
        if let Some(wrong) = wrong {
            let message = format!(
                "{wrong} is not in the value set {} (required binding)",
                binding.value_set
            );
            self.issue(Severity::Error, IssueType::CodeInvalid, path, message);
        }
    }

    /// The invariants of the value's element and of its type (with the type's bases).
    fn invariants(
        &mut self,
        json: &'r Value,
        companion: Option<&'r Value>,
        structure: &'r str,
        path: &str,
        slot: Slot<'r>,
    ) {
        let constraints = Constraints::of(slot.element, slot.type_code);
        if constraints.is_empty() {
            return;
        }
        let node = fjord_fhirpath::Node {
            json: Some(json),
            companion,
            type_code: slot.type_code,
            structure,
        };
        for constraint in constraints.iter() {
            match invariants::holds(constraint, node, slot.resource, slot.container, self.root) {
                Ok(true) => {}
                Ok(false) => {
                    let severity = match constraint.severity {
                        fjord_definitions::Severity::Error => Severity::Error,
                        fjord_definitions::Severity::Warning => Severity::Warning,
                    };
                    let message = format!("{}: {}", constraint.key, constraint.human);
                    self.issue(severity, IssueType::Invariant, path, message);
                }
                Err(error) => self.unevaluated.push(error.to_string()),
            }
        }
    }
}

/// The element a JSON member names, and the type its value has: `valueQuantity` is
/// `Observation.value[x]` as a `Quantity`.
pub(crate) fn member(structure: &str, key: &str) -> Option<(&'static ElementDef, &'static str)> {
    if let Some(element) = child_element(structure, key) {
        if !element.is_choice() {
            let type_code = match element.types.first() {
                Some(t) => t,
                // An element defined as another's structure (`Questionnaire.item.item`).
                None => "BackboneElement",
            };
            return Some((element, type_code));
        }
    }
    key.char_indices()
        .filter(|(i, c)| *i > 0 && c.is_ascii_uppercase())
        .find_map(|(i, _)| {
            let element = child_element(structure, &key[..i]).filter(|e| e.is_choice())?;
            let suffix = &key[i..];
            let type_code = element.types.iter().find(|t| {
                let mut chars = t.chars();
                chars.next().is_some_and(|first| {
                    suffix.starts_with(first.to_ascii_uppercase()) && suffix[1..] == t[1..]
                })
            })?;
            Some((element, *type_code))
        })
}

fn describe_coding(coding: &Value) -> String {
    format!(
        "'{}|{}'",
        coding["system"].as_str().unwrap_or(""),
        coding["code"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::{validate, IdentifierRules, IssueType, Severity};

    /// (code, expression, start of message) of every error.
    fn errors(resource: &Value) -> Vec<(IssueType, String, String)> {
        let report = validate(resource, IdentifierRules::default());
        assert!(report.unevaluated.is_empty(), "{:?}", report.unevaluated);
        report
            .errors()
            .map(|i| (i.code, i.expression.clone(), i.message.clone()))
            .collect()
    }

    fn observation() -> Value {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
            "subject": { "reference": "Patient/p1" },
            "effectiveDateTime": "2026-11-23T08:00:00+01:00",
            "valueQuantity": { "value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" },
        })
    }

    #[test]
    fn a_valid_resource_has_no_issue() {
        assert_eq!(errors(&observation()), []);
    }

    #[test]
    fn missing_required_elements_are_named() {
        let mut resource = observation();
        resource.as_object_mut().unwrap().remove("status");
        resource["component"] = json!([{ "valueString": "x" }]);
        let found = errors(&resource);
        let at: Vec<(IssueType, &str)> = found.iter().map(|(c, e, _)| (*c, e.as_str())).collect();
        assert_eq!(
            at,
            [
                (IssueType::Required, "Observation.component[0].code"),
                (IssueType::Required, "Observation.status"),
            ]
        );
    }

    #[test]
    fn primitive_formats_and_calendar_dates() {
        let mut resource = observation();
        resource["effectiveDateTime"] = json!("2026-02-30T08:00:00Z");
        resource["issued"] = json!("2026-11-23");
        let found = errors(&resource);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].1, "Observation.effective.ofType(dateTime)");
        assert!(found[0].2.contains("not a date of the calendar"));
        assert_eq!(found[1].1, "Observation.issued");
        assert!(found[1].2.contains("not a valid instant"));
    }

    #[test]
    fn required_bindings_refuse_unknown_codes() {
        let mut resource = observation();
        resource["status"] = json!("done");
        resource["valueQuantity"]["comparator"] = json!("<");
        resource["subject"]["type"] = json!("Patient");
        let found = errors(&resource);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, IssueType::CodeInvalid);
        assert_eq!(found[0].1, "Observation.status");
        assert!(found[0].2.contains("observation-status"), "{found:?}");
        let mut patient = json!({
            "resourceType": "Patient",
            "gender": "female",
            "contact": [{ "relationship": [{ "coding": [{ "system": "x", "code": "y" }] }], "name": { "text": "A" } }],
        });
        assert_eq!(errors(&patient), []);
        patient["gender"] = json!("f");
        assert_eq!(errors(&patient)[0].1, "Patient.gender");
    }

    #[test]
    fn invariants_of_elements_types_and_resources_are_evaluated() {
        let mut resource = observation();
        // obs-6: dataAbsentReason only when there is no value.
        resource["dataAbsentReason"] = json!({ "text": "device off" });
        // ref-1: a local reference needs its contained resource.
        resource["device"] = json!({ "reference": "#missing" });
        // per-1: a period must not end before it starts.
        resource["component"] = json!([{
            "code": { "text": "x" },
            "valuePeriod": { "start": "2026-11-23", "end": "2026-11-01" },
        }]);
        // ext-1: an extension has a value or extensions, not both.
        resource["extension"] = json!([{
            "url": "http://example.org/x",
            "valueString": "a",
            "extension": [{ "url": "y", "valueString": "b" }],
        }]);
        let found = errors(&resource);
        let keys: Vec<(&str, &str)> = found
            .iter()
            .map(|(_, e, m)| (e.as_str(), m.split(':').next().unwrap()))
            .collect();
        assert_eq!(
            keys,
            [
                ("Observation.device", "ref-1"),
                ("Observation.component[0].value.ofType(Period)", "per-1"),
                ("Observation.extension[0]", "ext-1"),
                ("Observation", "obs-6"),
            ],
            "{found:?}"
        );
    }

    #[test]
    fn contained_resources_are_validated_and_must_be_referred_to() {
        let mut resource = observation();
        resource["contained"] = json!([{ "resourceType": "Device", "id": "d1", "status": "on" }]);
        let found = errors(&resource);
        let at: Vec<&str> = found.iter().map(|(_, e, _)| e.as_str()).collect();
        assert_eq!(at, ["Observation.contained[0].status", "Observation"]);
        assert!(found[1].2.starts_with("dom-3"));
        resource["device"] = json!({ "reference": "#d1" });
        resource["contained"][0]["status"] = json!("active");
        assert_eq!(errors(&resource), []);
    }

    #[test]
    fn empty_elements_and_arrays_are_refused() {
        let mut resource = observation();
        resource["category"] = json!([]);
        resource["method"] = json!({});
        let found = errors(&resource);
        let at: Vec<&str> = found.iter().map(|(_, e, _)| e.as_str()).collect();
        assert_eq!(
            at,
            ["Observation.category", "Observation.method"],
            "{found:?}"
        );
        assert!(found[1].2.starts_with("ele-1"));
    }

    #[test]
    fn warnings_are_not_errors_and_recommendations_are_not_checked() {
        // dom-6 (a resource should have a narrative) is a best-practice recommendation.
        let report = validate(&observation(), IdentifierRules::default());
        assert!(report.issues.is_empty(), "{:?}", report.issues);
        // que-0: a name should be usable by machines (a warning).
        let questionnaire = json!({ "resourceType": "Questionnaire", "status": "active", "name": "home blood pressure" });
        let report = validate(&questionnaire, IdentifierRules::default());
        let warning = report
            .issues
            .iter()
            .find(|i| i.message.starts_with("que-0"));
        assert_eq!(
            warning.map(|w| w.severity),
            Some(Severity::Warning),
            "{:?}",
            report.issues
        );
        assert!(!report.has_errors());
    }

    #[test]
    fn contained_references_resolve_in_their_own_bundle_entry() {
        // ref-1 in an entry's resource looks at that resource's contained ones, not the bundle's.
        let mut observation = observation();
        observation["contained"] =
            json!([{ "resourceType": "Device", "id": "d1", "status": "active" }]);
        observation["device"] = json!({ "reference": "#d1" });
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{ "resource": observation, "request": { "method": "POST", "url": "Observation" } }],
        });
        assert_eq!(errors(&bundle), []);
    }
}
