//! A resource against a profile: the snapshot's element tree walked along the resource's JSON.
//!
//! At each element: the values it names (a choice's by their type), their count against the
//! profile's cardinality, the slices they fall into (by the discriminators), then of each value
//! its type, `fixed[x]`, `pattern[x]`, binding, the profiles of its type (extensions, data type
//! profiles), the types its references may point to, the profile's own invariants, and its
//! children. What base R4 already requires is `structure`'s; duplicates are left out by the
//! caller.

use fjord_definitions::{type_def, BindingStrength};
use fjord_fhirpath::{Node, Value as Item};
use serde_json::Value;

use crate::conformance::Conformance;
use crate::profile::{Discriminator, Profile, Rule, SlicingRules};
use crate::{Issue, IssueType, Severity};

/// Profiles within profiles (extensions of extensions) deeper than this are not followed.
const MAX_DEPTH: usize = 12;

pub(crate) struct ProfileCheck<'c> {
    conformance: &'c Conformance,
    pub(crate) issues: Vec<Issue>,
    pub(crate) unevaluated: Vec<String>,
    depth: usize,
}

/// A value of an element, with its FHIR type and where it is.
#[derive(Clone)]
struct Found<'r> {
    json: Option<&'r Value>,
    companion: Option<&'r Value>,
    type_code: String,
    path: String,
}

impl<'c> ProfileCheck<'c> {
    pub(crate) fn new(conformance: &'c Conformance) -> ProfileCheck<'c> {
        ProfileCheck {
            conformance,
            issues: Vec::new(),
            unevaluated: Vec::new(),
            depth: 0,
        }
    }

    fn issue(&mut self, severity: Severity, code: IssueType, path: &str, message: String) {
        self.issues.push(Issue::new(severity, code, path, message));
    }

    /// `value` (at `path`, of type `type_code`) against `profile`.
    pub(crate) fn check(
        &mut self,
        profile: &Profile,
        value: &Value,
        type_code: &str,
        path: &str,
        resource: &Value,
    ) {
        if self.depth >= MAX_DEPTH {
            return;
        }
        self.depth += 1;
        let found = Found {
            json: Some(value),
            companion: None,
            type_code: type_code.to_owned(),
            path: path.to_owned(),
        };
        self.value(profile, 0, &found, resource);
        self.depth -= 1;
    }

    /// Whether `value` conforms to `candidate`, errors only counting (a slice's profile, one of
    /// several type or target profiles); the issues of the probe are not kept.
    fn conforms(
        &self,
        candidate: &Profile,
        value: &Value,
        type_code: &str,
        path: &str,
        resource: &Value,
    ) -> bool {
        let mut probe = ProfileCheck::new(self.conformance);
        probe.depth = self.depth + 1;
        probe.check(candidate, value, type_code, path, resource);
        !probe.issues.iter().any(|i| i.severity == Severity::Error)
    }

    /// One value against one rule.
    fn value(&mut self, profile: &Profile, index: usize, found: &Found, resource: &Value) {
        let rule = &profile.rules[index];
        let path = found.path.as_str();
        if let Some(json) = found.json {
            if let Some(fixed) = &rule.fixed {
                if json != fixed {
                    let message = format!("{}: must be exactly {fixed}", rule.id);
                    self.issue(Severity::Error, IssueType::Value, path, message);
                }
            }
            if let Some(pattern) = &rule.pattern {
                if !contains(json, pattern) {
                    let message = format!("{}: must match the pattern {pattern}", rule.id);
                    self.issue(Severity::Error, IssueType::Value, path, message);
                }
            }
            self.binding(rule, found);
            self.type_profiles(rule, found, resource);
            self.references(rule, found, resource);
        }
        self.invariants(profile, rule, found, resource);
        let Some(Value::Object(_)) = found.json else {
            return;
        };
        for &child in &rule.children {
            let values = gather(&profile.rules[child], found);
            self.element(profile, child, &values, path, resource);
        }
    }

    /// The values of one element: count, type, slices, then each value.
    fn element(
        &mut self,
        profile: &Profile,
        index: usize,
        values: &[Found],
        parent: &str,
        resource: &Value,
    ) {
        let rule = &profile.rules[index];
        let at = format!("{parent}.{}", rule.name);
        self.cardinality(rule, values.len(), &at);
        let allowed: Vec<&str> = rule.types.iter().map(|t| t.code.as_str()).collect();
        for found in values {
            if rule.choice && !allowed.is_empty() && !allowed.contains(&found.type_code.as_str()) {
                let message = format!(
                    "{}: type {} is not allowed here (allowed: {})",
                    rule.id,
                    found.type_code,
                    allowed.join(", ")
                );
                self.issue(Severity::Error, IssueType::Structure, &found.path, message);
            }
        }
        if rule.slicing.is_some() && !rule.slices.is_empty() {
            self.slices(profile, index, values, &at, resource);
        }
        for found in values {
            self.value(profile, index, found, resource);
        }
    }

    fn cardinality(&mut self, rule: &Rule, count: usize, at: &str) {
        if count < rule.min as usize {
            let message = format!(
                "{}: minimum required = {}, but only found {count}",
                rule.id, rule.min
            );
            self.issue(Severity::Error, IssueType::Required, at, message);
        }
        if let Some(max) = rule.max {
            if count > max as usize {
                let message = if max == 0 {
                    format!("{}: not allowed by the profile", rule.id)
                } else {
                    format!("{}: at most {max} allowed, found {count}", rule.id)
                };
                self.issue(Severity::Error, IssueType::Structure, at, message);
            }
        }
    }

    /// Each value into the first slice whose discriminators it matches; then each slice's
    /// cardinality and rules, and the slicing's own (closed, open at end, ordered).
    fn slices(
        &mut self,
        profile: &Profile,
        group: usize,
        values: &[Found],
        at: &str,
        resource: &Value,
    ) {
        let rule = &profile.rules[group];
        let Some(slicing) = &rule.slicing else {
            return;
        };
        let assigned: Vec<Option<usize>> = values
            .iter()
            .map(|found| {
                rule.slices.iter().position(|&slice| {
                    slicing
                        .discriminators
                        .iter()
                        .all(|(kind, path)| self.matches(profile, slice, *kind, path, found))
                })
            })
            .collect();
        let mut last_matched = None;
        let mut seen_unmatched = false;
        for (found, slot) in values.iter().zip(&assigned) {
            match slot {
                None if slicing.rules == SlicingRules::Closed => {
                    let message = format!("{}: matches none of the slices (closed)", rule.id);
                    self.issue(Severity::Error, IssueType::Structure, &found.path, message);
                }
                None => seen_unmatched = true,
                Some(position) => {
                    if seen_unmatched && slicing.rules == SlicingRules::OpenAtEnd {
                        let message =
                            format!("{}: values outside the slices must come last", rule.id);
                        self.issue(Severity::Error, IssueType::Structure, &found.path, message);
                    }
                    if slicing.ordered && last_matched.is_some_and(|last| *position < last) {
                        let message = format!("{}: the slices are out of order", rule.id);
                        self.issue(Severity::Error, IssueType::Structure, &found.path, message);
                    }
                    last_matched = Some(*position);
                }
            }
        }
        for (position, &slice) in rule.slices.iter().enumerate() {
            let members: Vec<Found> = values
                .iter()
                .zip(&assigned)
                .filter(|(_, slot)| **slot == Some(position))
                .map(|(found, _)| found.clone())
                .collect();
            self.cardinality(&profile.rules[slice], members.len(), at);
            for found in &members {
                self.value(profile, slice, found, resource);
            }
        }
    }

    /// Whether a value matches one discriminator of a slice.
    fn matches(
        &self,
        profile: &Profile,
        slice: usize,
        kind: Discriminator,
        path: &str,
        found: &Found,
    ) -> bool {
        let structure = structure_of(&profile.rules[slice], &found.type_code);
        let actual = evaluate_path(found, &structure, path);
        match kind {
            Discriminator::Value | Discriminator::Pattern => {
                let Some(expected) = expected_value(profile, slice, path) else {
                    return false;
                };
                actual.iter().any(|a| contains(a, &expected))
            }
            Discriminator::Exists => {
                let Some(sub) = sub_rule(profile, slice, path) else {
                    return false;
                };
                let rule = &profile.rules[sub];
                if rule.max == Some(0) {
                    actual.is_empty()
                } else {
                    rule.min == 0 || !actual.is_empty()
                }
            }
            Discriminator::Type => {
                let Some(sub) = sub_rule(profile, slice, path) else {
                    return false;
                };
                let types = &profile.rules[sub].types;
                let actual_type = if path == "$this" {
                    Some(found.type_code.clone())
                } else {
                    typed_path(found, &structure, path)
                };
                actual_type.is_some_and(|t| types.iter().any(|r| r.code == t))
            }
            Discriminator::Profile => {
                let Some(sub) = sub_rule(profile, slice, path) else {
                    return false;
                };
                // What the path selects conforms to one of the profiles of the sub-element's
                // type (`value` of a component to a Quantity profile).
                profile.rules[sub].types.iter().any(|type_ref| {
                    type_ref
                        .profiles
                        .iter()
                        .filter_map(|url| self.conformance.profile(url))
                        .any(|candidate| {
                            actual.iter().any(|value| {
                                self.conforms(candidate, value, &type_ref.code, &found.path, value)
                            })
                        })
                })
            }
        }
    }

    /// A binding the profile adds: required → error, extensible or preferred → warning, when
    /// Fjord can enumerate the value set.
    fn binding(&mut self, rule: &Rule, found: &Found) {
        let Some((strength, url)) = &rule.binding else {
            return;
        };
        let severity = match strength {
            BindingStrength::Required => Severity::Error,
            BindingStrength::Extensible | BindingStrength::Preferred => Severity::Warning,
        };
        let Some(json) = found.json else { return };
        let Some(expansion) = self.conformance.expand(url) else {
            return;
        };
        let codings: Vec<&Value> = match found.type_code.as_str() {
            "code" => {
                let Some(code) = json.as_str() else { return };
                if !expansion.contains_code(code) {
                    let message = format!("'{code}' is not in the value set {url}");
                    self.issue(severity, IssueType::CodeInvalid, &found.path, message);
                }
                return;
            }
            "Coding" => vec![json],
            "CodeableConcept" => json["coding"]
                .as_array()
                .map(|c| c.iter().collect())
                .unwrap_or_default(),
            _ => return,
        };
        let coded: Vec<&Value> = codings
            .into_iter()
            .filter(|c| c["system"].is_string() && c["code"].is_string())
            .collect();
        let known = coded.iter().any(|c| {
            expansion.contains(
                c["system"].as_str().unwrap_or_default(),
                c["code"].as_str().unwrap_or_default(),
            )
        });
        if !known && (!coded.is_empty() || strength == &BindingStrength::Required) {
            let message = if coded.is_empty() {
                format!("no code from the value set {url}")
            } else {
                let codes: Vec<String> = coded
                    .iter()
                    .map(|c| {
                        format!(
                            "{}|{}",
                            c["system"].as_str().unwrap_or_default(),
                            c["code"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                format!("{} is not in the value set {url}", codes.join(", "))
            };
            self.issue(severity, IssueType::CodeInvalid, &found.path, message);
        }
    }

    /// The profiles the element's type names (an extension's definition, `no-basis-Address`):
    /// the value must conform to one of those Fjord knows.
    fn type_profiles(&mut self, rule: &Rule, found: &Found, resource: &Value) {
        let Some(json) = found.json else { return };
        let Some(type_ref) = rule.types.iter().find(|t| t.code == found.type_code) else {
            return;
        };
        let known: Vec<_> = type_ref
            .profiles
            .iter()
            .filter_map(|url| self.conformance.profile(url))
            .collect();
        match known.as_slice() {
            [] => {}
            [only] => self.check(only, json, &found.type_code, &found.path, resource),
            several => {
                let conforms = several.iter().any(|candidate| {
                    self.conforms(candidate, json, &found.type_code, &found.path, resource)
                });
                if !conforms {
                    let message = format!("{}: conforms to none of its type's profiles", rule.id);
                    self.issue(Severity::Error, IssueType::Structure, &found.path, message);
                }
            }
        }
    }

    /// A literal reference against the target profiles: a contained target must conform to
    /// one of them; any other target's type must be one of theirs.
    fn references(&mut self, rule: &Rule, found: &Found, resource: &Value) {
        if found.type_code != "Reference" {
            return;
        }
        let Some(reference) = found.json.and_then(|j| j["reference"].as_str()) else {
            return;
        };
        let targets: Vec<&String> = rule
            .types
            .iter()
            .filter(|t| t.code == "Reference")
            .flat_map(|t| &t.target_profiles)
            .collect();
        if targets.is_empty() {
            return;
        }
        if let Some(id) = reference.strip_prefix('#') {
            let contained = resource["contained"]
                .as_array()
                .and_then(|c| c.iter().find(|r| r["id"].as_str() == Some(id)));
            if let Some(target) = contained {
                self.target_conforms(rule, found, target, &targets);
            }
            return;
        }
        let Some(target_type) = referenced_type(reference) else {
            return;
        };
        let allowed: Vec<String> = targets
            .iter()
            .filter_map(|url| {
                let url = url.split('|').next().unwrap_or(url);
                url.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                    .map(str::to_owned)
                    .or_else(|| self.conformance.profile(url).map(|p| p.type_name.clone()))
            })
            .collect();
        let allows = allowed.iter().any(|t| t == target_type || t == "Resource");
        if !allowed.is_empty() && !allows {
            let message = format!(
                "{}: a reference to {target_type} is not allowed (allowed: {})",
                rule.id,
                allowed.join(", ")
            );
            self.issue(Severity::Error, IssueType::Structure, &found.path, message);
        }
    }

    /// Whether a target Fjord can see (a contained resource) is of a core type the targets
    /// name, or conforms to one of their profiles of its type; targets Fjord does not know are
    /// given the benefit of the doubt.
    fn target_conforms(&mut self, rule: &Rule, found: &Found, target: &Value, targets: &[&String]) {
        let target_type = target["resourceType"].as_str().unwrap_or_default();
        let mut profiles_of_its_type = Vec::new();
        for url in targets {
            let url = url.split('|').next().unwrap_or(url);
            if let Some(core) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") {
                if core == target_type || core == "Resource" {
                    return;
                }
                continue;
            }
            match self.conformance.profile(url) {
                Some(candidate) if candidate.type_name == target_type => {
                    profiles_of_its_type.push(candidate.clone());
                }
                Some(_) => {}
                None => return,
            }
        }
        let conforms = profiles_of_its_type
            .iter()
            .any(|candidate| self.conforms(candidate, target, target_type, &found.path, target));
        if !conforms {
            let message = if profiles_of_its_type.is_empty() {
                format!(
                    "{}: a reference to {target_type} is not allowed here",
                    rule.id
                )
            } else {
                let urls: Vec<&str> = profiles_of_its_type
                    .iter()
                    .map(|p| p.url.as_str())
                    .collect();
                format!(
                    "{}: the {target_type} referred to conforms to none of {}",
                    rule.id,
                    urls.join(", ")
                )
            };
            self.issue(Severity::Error, IssueType::Structure, &found.path, message);
        }
    }

    fn invariants(&mut self, profile: &Profile, rule: &Rule, found: &Found, resource: &Value) {
        if rule.constraints.is_empty() {
            return;
        }
        let Some(json) = found.json else { return };
        let structure = structure_of(rule, &found.type_code);
        let node = Node {
            json: Some(json),
            companion: found.companion,
            type_code: &found.type_code,
            structure: &structure,
        };
        for constraint in &rule.constraints {
            match crate::invariants::holds_expression(&constraint.expression, node, resource) {
                Ok(true) => {}
                Ok(false) => {
                    let severity = if constraint.error {
                        Severity::Error
                    } else {
                        Severity::Warning
                    };
                    let message =
                        format!("{} ({}): {}", constraint.key, profile.url, constraint.human);
                    self.issue(severity, IssueType::Invariant, &found.path, message);
                }
                Err(error) => self
                    .unevaluated
                    .push(format!("{} ({}): {error}", constraint.key, profile.url)),
            }
        }
    }
}

/// Where the children of a value are defined, for FHIRPath: its type, or for an inline
/// structure the element's path in the core definitions.
fn structure_of(rule: &Rule, type_code: &str) -> String {
    match type_code {
        "BackboneElement" | "Element" => rule.path.clone(),
        other => other.to_owned(),
    }
}

/// The values an element names in its parent's JSON.
fn gather<'r>(rule: &Rule, parent: &Found<'r>) -> Vec<Found<'r>> {
    let Some(Value::Object(object)) = parent.json else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |key: &str, type_code: String, label: String| {
        let values = object.get(key);
        let companions = object.get(&format!("_{key}"));
        let list = |v: Option<&'r Value>| -> (Vec<Option<&'r Value>>, bool) {
            match v {
                Some(Value::Array(items)) => (items.iter().map(Some).collect(), true),
                Some(other) => (vec![Some(other)], false),
                None => (Vec::new(), false),
            }
        };
        let (values, array) = list(values);
        let (companions, companion_array) = list(companions);
        let count = values.len().max(companions.len());
        for i in 0..count {
            let path = if array || companion_array {
                format!("{}.{label}[{i}]", parent.path)
            } else {
                format!("{}.{label}", parent.path)
            };
            out.push(Found {
                json: values.get(i).copied().flatten().filter(|v| !v.is_null()),
                companion: companions.get(i).copied().flatten(),
                type_code: type_code.clone(),
                path,
            });
        }
    };
    if rule.choice {
        let mut keys: Vec<&String> = object
            .keys()
            .filter(|k| !k.starts_with('_') || !object.contains_key(&k[1..]))
            .collect();
        keys.sort();
        for key in keys {
            let plain = key.trim_start_matches('_');
            let Some(suffix) = plain.strip_prefix(rule.name.as_str()) else {
                continue;
            };
            let Some(type_code) = choice_type(suffix) else {
                continue;
            };
            let label = format!("{}.ofType({type_code})", rule.name);
            push(plain, type_code, label);
        }
    } else {
        let type_code = match rule.types.first() {
            Some(t) => t.code.clone(),
            None => "BackboneElement".to_owned(),
        };
        push(&rule.name, type_code, rule.name.clone());
    }
    out
}

/// The type a choice key's suffix names: `Quantity`, `DateTime` → `dateTime`.
fn choice_type(suffix: &str) -> Option<String> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    let lowered = format!("{}{}", first.to_ascii_lowercase(), chars.as_str());
    if type_def(&lowered).is_some_and(|t| t.kind == fjord_definitions::TypeKind::Primitive) {
        Some(lowered)
    } else if type_def(suffix).is_some() {
        Some(suffix.to_owned())
    } else {
        None
    }
}

/// What `path` selects from a value, typed by `structure` and evaluated leniently, handed to
/// `then` (the items borrow the node); `None` when the path does not parse or evaluate.
fn with_selected<T>(
    found: &Found,
    structure: &str,
    path: &str,
    then: impl FnOnce(Vec<Item<'_>>) -> T,
) -> Option<T> {
    let json = found.json?;
    let expr = fjord_fhirpath::parse(path).ok()?;
    let node = Node {
        json: Some(json),
        companion: found.companion,
        type_code: &found.type_code,
        structure,
    };
    let env = fjord_fhirpath::Environment {
        lenient: true,
        ..Default::default()
    };
    let items = fjord_fhirpath::evaluate(&expr, vec![Item::Node(node)], &env).ok()?;
    Some(then(items))
}

/// The JSON values a discriminator path selects from a value (`$this`, `url`, `coding.system`,
/// `extension('…').value`), through FHIRPath.
fn evaluate_path(found: &Found, structure: &str, path: &str) -> Vec<Value> {
    if path == "$this" {
        return found.json.cloned().into_iter().collect();
    }
    with_selected(found, structure, path, |items| {
        items
            .into_iter()
            .filter_map(|item| match item {
                Item::Node(node) => node.json.cloned(),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The FHIR type of what a path selects (for `type` discriminators).
fn typed_path(found: &Found, structure: &str, path: &str) -> Option<String> {
    with_selected(found, structure, path, |items| match items.first()? {
        Item::Node(node) => Some(node.type_code.to_owned()),
        _ => None,
    })
    .flatten()
}

/// The rule a discriminator path names within a slice (`Patient.identifier:FNR.system`).
fn sub_rule(profile: &Profile, slice: usize, path: &str) -> Option<usize> {
    if path == "$this" {
        return Some(slice);
    }
    let mut id = profile.rules[slice].id.clone();
    for segment in path.split('.') {
        let candidates = [format!("{id}.{segment}"), format!("{id}.{segment}[x]")];
        if let Some(found) = candidates.into_iter().find(|c| profile.rule(c).is_some()) {
            id = found;
            continue;
        }
        // Through a sliced element (`code.coding.code` where only `coding:SBPCode.code` is
        // unrolled): the first required slice that has the element.
        let current = profile.rule(&id)?;
        id = profile.rules[current]
            .slices
            .iter()
            .map(|&s| &profile.rules[s])
            .filter(|s| s.min >= 1)
            .map(|s| format!("{}.{segment}", s.id))
            .find(|c| profile.rule(c).is_some())?;
    }
    profile.rule(&id)
}

/// The value a `value`/`pattern` discriminator expects of a slice: the fixed or pattern value
/// of the element the path names; or, when the snapshot does not unroll that far, the part of
/// the nearest unrolled element's pattern the rest of the path names; or an extension slice's
/// URL, which is its type's profile.
fn expected_value(profile: &Profile, slice: usize, path: &str) -> Option<Value> {
    if let Some(sub) = sub_rule(profile, slice, path) {
        let rule = &profile.rules[sub];
        if let Some(value) = rule.fixed.clone().or_else(|| rule.pattern.clone()) {
            return Some(value);
        }
    }
    let slice_rule = &profile.rules[slice];
    if path == "url" {
        if let Some(url) = slice_rule
            .types
            .iter()
            .find(|t| t.code == "Extension")
            .and_then(|t| t.profiles.first())
        {
            return Some(Value::String(url.clone()));
        }
    }
    let segments: Vec<&str> = if path == "$this" {
        Vec::new()
    } else {
        path.split('.').collect()
    };
    for depth in (0..=segments.len()).rev() {
        let mut id = slice_rule.id.clone();
        for segment in &segments[..depth] {
            id = format!("{id}.{segment}");
        }
        let Some(index) = profile.rule(&id) else {
            continue;
        };
        let rule = &profile.rules[index];
        let Some(mut value) = rule.fixed.clone().or_else(|| rule.pattern.clone()) else {
            continue;
        };
        for segment in &segments[depth..] {
            value = match value {
                Value::Array(items) => items.into_iter().next()?.get(*segment)?.clone(),
                other => other.get(*segment)?.clone(),
            };
        }
        return Some(value);
    }
    None
}

/// Whether `actual` has everything `pattern` has (objects by key, arrays item by item in any
/// order, primitives equal).
pub(crate) fn contains(actual: &Value, pattern: &Value) -> bool {
    match (actual, pattern) {
        (Value::Object(a), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(p)) => {
            p.iter().all(|pv| a.iter().any(|av| contains(av, pv)))
        }
        (Value::Array(a), p) => a.iter().any(|av| contains(av, p)),
        (a, p) => a == p,
    }
}

/// The resource type a literal reference names (`Patient/1`, `https://…/Patient/1/_history/2`).
fn referenced_type(reference: &str) -> Option<&str> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let reference = reference.split("/_history/").next()?;
    let mut parts = reference.rsplit('/');
    let _id = parts.next()?;
    let type_name = parts.next()?;
    type_def(type_name)
        .is_some_and(|t| t.kind == fjord_definitions::TypeKind::Resource)
        .then_some(type_name)
}

#[cfg(test)]
#[path = "profile_check_tests.rs"]
mod tests;
