//! The conformance resources validation knows beyond base R4: profiles (StructureDefinitions
//! with a snapshot), and the ValueSets and CodeSystems their bindings name, with the expansions
//! Fjord can compute itself (no terminology server).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::profile::Profile;

/// Why a conformance resource could not be taken in.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConformanceError {
    #[error("{0} has no url")]
    NoUrl(&'static str),
    #[error("StructureDefinition {0} has no snapshot (generate one before installing it)")]
    NoSnapshot(String),
    #[error("StructureDefinition {url}: {message}")]
    BadProfile { url: String, message: String },
    #[error("StructureDefinition {url} has no snapshot and its base {base} is not known")]
    UnknownBase { url: String, base: String },
}

/// The codes of a value set: (system, code) pairs.
#[derive(Debug, Default)]
pub struct Expansion {
    codes: HashSet<(String, String)>,
}

/// A code as `$lookup` tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptInfo {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
    /// The code system's name and version.
    pub name: Option<String>,
    pub version: Option<String>,
    /// Codes directly above it in the hierarchy of nested concepts.
    pub parents: Vec<String>,
}

impl Expansion {
    /// Every (system, code), sorted.
    pub fn codes(&self) -> Vec<(&str, &str)> {
        let mut codes: Vec<(&str, &str)> = self
            .codes
            .iter()
            .map(|(s, c)| (s.as_str(), c.as_str()))
            .collect();
        codes.sort_unstable();
        codes
    }

    pub fn contains(&self, system: &str, code: &str) -> bool {
        self.codes.contains(&(system.to_owned(), code.to_owned()))
    }

    /// Whether some system has `code` (for `code` elements, which carry no system).
    pub fn contains_code(&self, code: &str) -> bool {
        self.codes.iter().any(|(_, c)| c == code)
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

/// A set of profiles, value sets and code systems, as a tenant has installed them.
#[derive(Default)]
pub struct Conformance {
    profiles: HashMap<String, Arc<Profile>>,
    /// The profiles as given (with their snapshots, generated where they had none): the base of
    /// a profile written as a differential.
    definitions: HashMap<String, Value>,
    value_sets: HashMap<String, Value>,
    code_systems: HashMap<String, Value>,
    /// Expansions computed so far (`None`: cannot be computed here). Belongs to this set, so a
    /// tenant never sees another's.
    expansions: Mutex<HashMap<String, Option<Arc<Expansion>>>>,
}

/// A canonical URL without its `|version`.
fn unversioned(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

impl Conformance {
    /// Takes in one conformance resource; types validation does not use are ignored.
    pub fn add(&mut self, resource: Value) -> Result<(), ConformanceError> {
        let kind = resource["resourceType"].as_str().unwrap_or_default();
        let url = resource["url"].as_str().map(|u| unversioned(u).to_owned());
        match kind {
            "StructureDefinition" => {
                let url = url.ok_or(ConformanceError::NoUrl("StructureDefinition"))?;
                let resource = self.with_snapshot(resource, &url)?;
                let profile = Profile::compile(&resource)?;
                self.profiles.insert(url.clone(), Arc::new(profile));
                self.definitions.insert(url, resource);
            }
            "ValueSet" => {
                let url = url.ok_or(ConformanceError::NoUrl("ValueSet"))?;
                self.value_sets.insert(url, resource);
            }
            "CodeSystem" => {
                let url = url.ok_or(ConformanceError::NoUrl("CodeSystem"))?;
                self.code_systems.insert(url, resource);
            }
            _ => return Ok(()),
        }
        if let Ok(mut expansions) = self.expansions.lock() {
            expansions.clear();
        }
        Ok(())
    }

    /// Takes in several conformance resources, profiles after the bases they are written on
    /// (in any order); returns those that could not be taken in, with why.
    pub fn add_all(&mut self, resources: Vec<Value>) -> Vec<(Value, ConformanceError)> {
        let mut pending = resources;
        loop {
            let mut failed = Vec::new();
            let before = pending.len();
            for resource in pending {
                if let Err(error) = self.add(resource.clone()) {
                    failed.push((resource, error));
                }
            }
            let waiting_for_base = failed
                .iter()
                .any(|(_, e)| matches!(e, ConformanceError::UnknownBase { .. }));
            if failed.len() == before || !waiting_for_base {
                return failed;
            }
            pending = failed.into_iter().map(|(resource, _)| resource).collect();
        }
    }

    /// A StructureDefinition with its snapshot: as given, or generated from its differential.
    fn with_snapshot(&self, definition: Value, url: &str) -> Result<Value, ConformanceError> {
        let has_snapshot = definition["snapshot"]["element"]
            .as_array()
            .is_some_and(|e| !e.is_empty());
        if has_snapshot {
            return Ok(definition);
        }
        let base = definition["baseDefinition"].as_str().unwrap_or_default();
        if crate::snapshot::is_core(base) {
            return crate::snapshot::generate(&definition, None);
        }
        match self.definitions.get(unversioned(base)) {
            Some(base) => crate::snapshot::generate(&definition, Some(base)),
            None => Err(ConformanceError::UnknownBase {
                url: url.to_owned(),
                base: base.to_owned(),
            }),
        }
    }

    /// The profile with this canonical URL.
    pub fn profile(&self, url: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(unversioned(url))
    }

    pub fn profiles(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.values()
    }

    /// The installed value set with this canonical URL.
    pub fn value_set(&self, url: &str) -> Option<&Value> {
        self.value_sets.get(unversioned(url))
    }

    /// The installed code system with this canonical URL.
    pub fn code_system(&self, url: &str) -> Option<&Value> {
        self.code_systems.get(unversioned(url))
    }

    /// What an installed code system says of one of its codes: display, name, parents.
    pub fn lookup(&self, system: &str, code: &str) -> Option<ConceptInfo> {
        let code_system = self.code_systems.get(unversioned(system))?;
        let mut concepts = Vec::new();
        flatten(&code_system["concept"], &[], &mut concepts);
        let concept = concepts.iter().find(|c| c.code == code)?;
        let text = |v: &Value| v.as_str().map(str::to_owned);
        Some(ConceptInfo {
            system: unversioned(system).to_owned(),
            code: code.to_owned(),
            display: concept.display.map(str::to_owned),
            name: text(&code_system["name"]).or_else(|| text(&code_system["title"])),
            version: text(&code_system["version"]),
            parents: concept
                .ancestors
                .last()
                .map(|p| (*p).to_owned())
                .into_iter()
                .collect(),
        })
    }

    /// The display of a code: from its installed code system, or from a value set's compose.
    pub fn display(&self, system: &str, code: &str) -> Option<String> {
        if let Some(info) = self.lookup(system, code) {
            return info.display;
        }
        self.value_sets.values().find_map(|value_set| {
            value_set["compose"]["include"]
                .as_array()?
                .iter()
                .filter(|i| i["system"].as_str() == Some(system))
                .flat_map(|i| i["concept"].as_array().into_iter().flatten())
                .find(|c| c["code"].as_str() == Some(code))?["display"]
                .as_str()
                .map(str::to_owned)
        })
    }

    /// The codes of a value set, when Fjord can enumerate them: base R4's required value sets,
    /// and installed ones whose parts are concept lists, whole installed code systems (complete
    /// content), `is-a`/`descendent-of`, `=` and `regex` filters on installed code systems,
    /// other value sets, and exclusions of the same.
    pub fn expand(&self, url: &str) -> Option<Arc<Expansion>> {
        let url = unversioned(url);
        if let Some(found) = self.expansions.lock().ok()?.get(url) {
            return found.clone();
        }
        let expansion = self.compute(url, 0).map(Arc::new);
        self.expansions
            .lock()
            .ok()?
            .insert(url.to_owned(), expansion.clone());
        expansion
    }

    fn compute(&self, url: &str, depth: usize) -> Option<Expansion> {
        if depth > 8 {
            return None;
        }
        let Some(value_set) = self.value_sets.get(url) else {
            let base = fjord_definitions::required_value_set(url)?;
            let codes = base
                .codes
                .iter()
                .map(|(s, c)| ((*s).to_owned(), (*c).to_owned()))
                .collect();
            return Some(Expansion { codes });
        };
        let compose = &value_set["compose"];
        let mut codes = HashSet::new();
        let Some(includes) = compose["include"].as_array() else {
            // No compose: an expansion the value set carries, if any.
            let mut codes = HashSet::new();
            expansion_codes(value_set["expansion"]["contains"].as_array()?, &mut codes);
            return Some(Expansion { codes });
        };
        for include in includes {
            codes.extend(self.part(include, depth)?);
        }
        for exclude in compose["exclude"].as_array().into_iter().flatten() {
            for code in self.part(exclude, depth)? {
                codes.remove(&code);
            }
        }
        Some(Expansion { codes })
    }

    /// The codes one `include` (or `exclude`) of a compose names.
    fn part(&self, part: &Value, depth: usize) -> Option<HashSet<(String, String)>> {
        let mut sets: Vec<HashSet<(String, String)>> = Vec::new();
        for nested in part["valueSet"].as_array().into_iter().flatten() {
            let nested = self.compute(unversioned(nested.as_str()?), depth + 1)?;
            sets.push(nested.codes);
        }
        if let Some(system) = part["system"].as_str() {
            let mut codes: HashSet<(String, String)> = match part["concept"].as_array() {
                Some(concepts) => concepts
                    .iter()
                    .filter_map(|c| Some((system.to_owned(), c["code"].as_str()?.to_owned())))
                    .collect(),
                None => self.system_codes(system, part["filter"].as_array())?,
            };
            if part["concept"].is_array() && part["filter"].is_array() {
                let filtered = self.system_codes(system, part["filter"].as_array())?;
                codes.retain(|c| filtered.contains(c));
            }
            sets.push(codes);
        }
        // The parts of one include are intersected.
        let mut sets = sets.into_iter();
        let first = sets.next()?;
        Some(sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect()))
    }

    /// The codes of an installed code system that pass every filter.
    fn system_codes(
        &self,
        system: &str,
        filters: Option<&Vec<Value>>,
    ) -> Option<HashSet<(String, String)>> {
        let code_system = self.code_systems.get(system)?;
        if code_system["content"] != "complete" {
            return None;
        }
        let mut concepts = Vec::new();
        flatten(&code_system["concept"], &[], &mut concepts);
        let mut kept: Vec<&Concept> = concepts.iter().collect();
        for filter in filters.into_iter().flatten() {
            let property = filter["property"].as_str().unwrap_or_default();
            let value = filter["value"].as_str().unwrap_or_default();
            kept.retain(|concept| match filter["op"].as_str().unwrap_or_default() {
                "is-a" => concept.code == value || concept.ancestors.contains(&value),
                "descendent-of" => concept.ancestors.contains(&value),
                "=" if property == "concept" || property == "code" => concept.code == value,
                "=" => concept
                    .properties
                    .iter()
                    .any(|(p, v)| *p == property && v == value),
                "regex" => regex::Regex::new(&format!("^(?:{value})$"))
                    .is_ok_and(|r| r.is_match(concept.code)),
                _ => false,
            });
            let op = filter["op"].as_str().unwrap_or_default();
            if !matches!(op, "is-a" | "descendent-of" | "=" | "regex") {
                return None;
            }
        }
        Some(
            kept.into_iter()
                .map(|c| (system.to_owned(), c.code.to_owned()))
                .collect(),
        )
    }
}

/// A concept of a code system, with the codes above it and its properties as text.
struct Concept<'a> {
    code: &'a str,
    display: Option<&'a str>,
    ancestors: Vec<&'a str>,
    properties: Vec<(&'a str, String)>,
}

fn expansion_codes(contains: &[Value], out: &mut HashSet<(String, String)>) {
    for entry in contains {
        if let (Some(system), Some(code)) = (entry["system"].as_str(), entry["code"].as_str()) {
            out.insert((system.to_owned(), code.to_owned()));
        }
        if let Some(nested) = entry["contains"].as_array() {
            expansion_codes(nested, out);
        }
    }
}

fn flatten<'a>(concepts: &'a Value, ancestors: &[&'a str], out: &mut Vec<Concept<'a>>) {
    for concept in concepts.as_array().into_iter().flatten() {
        let Some(code) = concept["code"].as_str() else {
            continue;
        };
        let properties = concept["property"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let value = p
                    .as_object()?
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .map(|(_, v)| v.as_str().map_or_else(|| v.to_string(), str::to_owned))?;
                Some((p["code"].as_str()?, value))
            })
            .collect();
        out.push(Concept {
            code,
            display: concept["display"].as_str(),
            ancestors: ancestors.to_vec(),
            properties,
        });
        let mut below = ancestors.to_vec();
        below.push(code);
        flatten(&concept["concept"], &below, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_sets_expand_from_lists_systems_filters_and_exclusions() {
        let mut conformance = Conformance::default();
        conformance
            .add(json!({
                "resourceType": "CodeSystem", "url": "urn:cs", "content": "complete",
                "concept": [
                    { "code": "vital", "concept": [{ "code": "bp" }, { "code": "pulse" }] },
                    { "code": "lab", "property": [{ "code": "status", "valueCode": "retired" }] },
                ],
            }))
            .unwrap();
        conformance
            .add(json!({
                "resourceType": "ValueSet", "url": "urn:vs:vital",
                "compose": {
                    "include": [{ "system": "urn:cs", "filter": [{ "property": "concept", "op": "is-a", "value": "vital" }] }],
                    "exclude": [{ "system": "urn:cs", "concept": [{ "code": "pulse" }] }],
                },
            }))
            .unwrap();
        conformance
            .add(json!({
                "resourceType": "ValueSet", "url": "urn:vs:mixed",
                "compose": { "include": [
                    { "valueSet": ["urn:vs:vital|1.0"] },
                    { "system": "urn:cs", "filter": [{ "property": "status", "op": "=", "value": "retired" }] },
                    { "system": "http://snomed.info/sct", "concept": [{ "code": "271649006" }] },
                ] },
            }))
            .unwrap();
        let vital = conformance.expand("urn:vs:vital").unwrap();
        assert!(vital.contains("urn:cs", "vital") && vital.contains("urn:cs", "bp"));
        assert!(!vital.contains("urn:cs", "pulse") && !vital.contains("urn:cs", "lab"));
        let mixed = conformance.expand("urn:vs:mixed").unwrap();
        assert_eq!(mixed.len(), 4);
        assert!(mixed.contains("http://snomed.info/sct", "271649006"));
        // Base R4's required value sets are known without installing anything.
        let status = conformance
            .expand("http://hl7.org/fhir/ValueSet/observation-status|4.0.1")
            .unwrap();
        assert!(status.contains_code("final"));
        // A whole system Fjord does not have cannot be enumerated.
        conformance
            .add(json!({ "resourceType": "ValueSet", "url": "urn:vs:sct",
                         "compose": { "include": [{ "system": "http://snomed.info/sct" }] } }))
            .unwrap();
        assert!(conformance.expand("urn:vs:sct").is_none());
    }
}
