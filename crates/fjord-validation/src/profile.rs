//! A profile: a StructureDefinition's snapshot compiled into a tree of element rules, which
//! `profile_check` walks a resource along.
//!
//! Only what a profile can add to base R4 is kept: cardinality, types with their profiles and
//! target profiles, `fixed[x]`/`pattern[x]`, bindings, invariants of the profile's own (those of
//! the core definitions are base R4's, checked by `structure`), and slicing.

use std::collections::HashMap;

use fjord_definitions::BindingStrength;
use serde_json::Value;

use crate::conformance::ConformanceError;

/// A compiled profile.
#[derive(Debug)]
pub struct Profile {
    pub url: String,
    /// The type it constrains (`Patient`, `Extension`, `Address`).
    pub type_name: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) by_id: HashMap<String, usize>,
    /// For an extension: the elements it may be used on (`Address`, `Address.district`,
    /// `Patient`); `None` when it states other kinds of context, which are not checked.
    pub(crate) contexts: Option<Vec<String>>,
}

/// One element of the snapshot.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) path: String,
    /// The element's name without `[x]` (`value` for `Observation.value[x]`).
    pub(crate) name: String,
    pub(crate) choice: bool,
    pub(crate) min: u32,
    /// `None` for `*`.
    pub(crate) max: Option<u32>,
    pub(crate) types: Vec<TypeRef>,
    pub(crate) fixed: Option<Value>,
    pub(crate) pattern: Option<Value>,
    pub(crate) binding: Option<(BindingStrength, String)>,
    pub(crate) constraints: Vec<ProfileConstraint>,
    pub(crate) slicing: Option<Slicing>,
    /// Child rules (not slices), in snapshot order.
    pub(crate) children: Vec<usize>,
    /// For a sliced element, its slices in snapshot order.
    pub(crate) slices: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct TypeRef {
    pub(crate) code: String,
    pub(crate) profiles: Vec<String>,
    pub(crate) target_profiles: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct ProfileConstraint {
    pub(crate) key: String,
    pub(crate) error: bool,
    pub(crate) expression: String,
    pub(crate) human: String,
}

#[derive(Debug)]
pub(crate) struct Slicing {
    pub(crate) discriminators: Vec<(Discriminator, String)>,
    pub(crate) rules: SlicingRules,
    pub(crate) ordered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discriminator {
    Value,
    Pattern,
    Exists,
    Type,
    Profile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlicingRules {
    Open,
    Closed,
    OpenAtEnd,
}

/// Invariants published with a defect, and what Fjord does about each: (profile, key, reason).
/// They are checked as warnings, so data that the profile's authors meant to allow is stored.
const KNOWN_DEFECTS: &[(&str, &str, &str)] = &[(
    "http://hl7.no/fhir/StructureDefinition/no-basis-AppointmentResponse",
    "inv-1",
    "no-basis 2.2 publishes `…shortnotice').value.exists() and actor.type.value = 'Patient'`, \
     which every response without the short-notice extension breaks; the intent is `implies`",
)];

impl Profile {
    /// Compiles a StructureDefinition that has a snapshot.
    pub fn compile(definition: &Value) -> Result<Profile, ConformanceError> {
        let url = definition["url"].as_str().unwrap_or_default().to_owned();
        let elements = definition["snapshot"]["element"]
            .as_array()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| ConformanceError::NoSnapshot(url.clone()))?;
        let bad = |message: String| ConformanceError::BadProfile {
            url: url.clone(),
            message,
        };
        let mut rules: Vec<Rule> = Vec::with_capacity(elements.len());
        let mut by_id = HashMap::new();
        for element in elements {
            let rule = compile_rule(element, &url)?;
            by_id.insert(rule.id.clone(), rules.len());
            rules.push(rule);
        }
        for index in 1..rules.len() {
            let id = rules[index].id.clone();
            let (parent, last) = id
                .rsplit_once('.')
                .ok_or_else(|| bad(format!("element {id} is outside the root")))?;
            match last.split_once(':') {
                // `Patient.identifier:FNR` is a slice of `Patient.identifier`.
                Some((name, slice)) if !slice.contains('/') => {
                    let group = format!("{parent}.{name}");
                    let group = *by_id
                        .get(&group)
                        .ok_or_else(|| bad(format!("slice {id} of no element")))?;
                    rules[group].slices.push(index);
                }
                // Re-slices are not checked.
                Some(_) => {}
                None => {
                    let parent = *by_id
                        .get(parent)
                        .ok_or_else(|| bad(format!("element {id} has no parent")))?;
                    rules[parent].children.push(index);
                }
            }
        }
        let contexts = definition["context"].as_array().and_then(|contexts| {
            contexts
                .iter()
                .map(|c| {
                    (c["type"] == "element")
                        .then(|| c["expression"].as_str().map(str::to_owned))
                        .flatten()
                })
                .collect::<Option<Vec<String>>>()
        });
        Ok(Profile {
            contexts,
            type_name: definition["type"].as_str().unwrap_or_default().to_owned(),
            url,
            rules,
            by_id,
        })
    }

    /// The rule of a snapshot element id.
    pub(crate) fn rule(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

fn compile_rule(element: &Value, url: &str) -> Result<Rule, ConformanceError> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let path = text(&element["path"]);
    let id = element["id"]
        .as_str()
        .map_or_else(|| path.clone(), str::to_owned);
    let last = path.rsplit('.').next().unwrap_or(&path);
    let choice = last.ends_with("[x]");
    let name = last.trim_end_matches("[x]").to_owned();
    let max = match element["max"].as_str() {
        Some("*") | None => None,
        Some(n) => Some(n.parse().map_err(|_| ConformanceError::BadProfile {
            url: url.to_owned(),
            message: format!("{id}: max '{n}'"),
        })?),
    };
    let types = element["type"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let code = text(&t["code"]);
            TypeRef {
                code: code
                    .strip_prefix("http://hl7.org/fhirpath/")
                    .map_or(code.clone(), str::to_owned),
                profiles: strings(&t["profile"]),
                target_profiles: strings(&t["targetProfile"]),
            }
        })
        .collect();
    let prefixed = |prefix: &str| {
        element.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.starts_with(prefix) && k.len() > prefix.len())
                .map(|(_, v)| v.clone())
        })
    };
    let binding = &element["binding"];
    let strength = match binding["strength"].as_str() {
        Some("required") => Some(BindingStrength::Required),
        Some("extensible") => Some(BindingStrength::Extensible),
        Some("preferred") => Some(BindingStrength::Preferred),
        _ => None,
    };
    let binding = strength.zip(binding["valueSet"].as_str().map(str::to_owned));
    let constraints = element["constraint"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            // The core definitions' invariants are base R4's: checked by `structure`, and never
            // redefined by a profile (a profile that repeats `app-4` with a typo does not count).
            let source = c["source"].as_str().unwrap_or_default();
            !source.starts_with("http://hl7.org/fhir/StructureDefinition/")
                && c["expression"].is_string()
        })
        .map(|c| {
            let key = text(&c["key"]);
            let defect = KNOWN_DEFECTS
                .iter()
                .any(|(profile, k, _)| *profile == url && *k == key);
            ProfileConstraint {
                error: c["severity"] == "error" && !defect,
                expression: text(&c["expression"]),
                human: text(&c["human"]),
                key,
            }
        })
        .collect();
    let slicing = element.get("slicing").map(|s| Slicing {
        discriminators: s["discriminator"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let kind = match d["type"].as_str()? {
                    "value" => Discriminator::Value,
                    "pattern" => Discriminator::Pattern,
                    "exists" => Discriminator::Exists,
                    "type" => Discriminator::Type,
                    "profile" => Discriminator::Profile,
                    _ => return None,
                };
                Some((kind, d["path"].as_str()?.to_owned()))
            })
            .collect(),
        rules: match s["rules"].as_str() {
            Some("closed") => SlicingRules::Closed,
            Some("openAtEnd") => SlicingRules::OpenAtEnd,
            _ => SlicingRules::Open,
        },
        ordered: s["ordered"] == true,
    });
    Ok(Rule {
        min: element["min"].as_u64().unwrap_or(0) as u32,
        max,
        types,
        fixed: prefixed("fixed"),
        pattern: prefixed("pattern"),
        binding,
        constraints,
        slicing,
        children: Vec::new(),
        slices: Vec::new(),
        id,
        path,
        name,
        choice,
    })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}
