//! The value sets of `fjord-definitions`: every value set a base R4 element binds as required,
//! expanded from the specification's code systems where that needs no terminology server.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::{entries, literal, text, HEADER};

struct Terminology<'a> {
    value_sets: HashMap<&'a str, &'a Value>,
    code_systems: HashMap<&'a str, &'a Value>,
}

impl<'a> Terminology<'a> {
    /// Every (system, code) of a value set, or `None` when it needs what the specification does
    /// not enumerate (filters, external code systems such as UCUM or BCP-47).
    fn expand(&self, url: &str, depth: usize) -> Option<Vec<(&'a str, &'a str)>> {
        let value_set = self.value_sets.get(url)?;
        let compose = &value_set["compose"];
        if depth > 8 || compose["exclude"].is_array() {
            return None;
        }
        let mut codes = Vec::new();
        for include in compose["include"].as_array()? {
            for nested in include["valueSet"].as_array().into_iter().flatten() {
                let nested = text(nested);
                codes.extend(self.expand(nested.split('|').next()?, depth + 1)?);
            }
            if include["filter"].is_array() {
                return None;
            }
            let Some(system) = include["system"].as_str() else {
                continue;
            };
            match include["concept"].as_array() {
                Some(concepts) => {
                    codes.extend(concepts.iter().map(|c| (system, text(&c["code"]))));
                }
                None => {
                    let code_system = self.code_systems.get(system)?;
                    if code_system["content"] != "complete" {
                        return None;
                    }
                    collect_concepts(&code_system["concept"], system, &mut codes);
                }
            }
        }
        codes.sort_unstable();
        codes.dedup();
        Some(codes)
    }
}

fn collect_concepts<'a>(concepts: &'a Value, system: &'a str, out: &mut Vec<(&'a str, &'a str)>) {
    for concept in concepts.as_array().into_iter().flatten() {
        out.push((system, text(&concept["code"])));
        collect_concepts(&concept["concept"], system, out);
    }
}

pub(crate) fn value_sets_source(valuesets: &Value, structures: &[&Value]) -> String {
    let mut terminology = Terminology {
        value_sets: HashMap::new(),
        code_systems: HashMap::new(),
    };
    for resource in entries(valuesets) {
        let url = text(&resource["url"]);
        match text(&resource["resourceType"]) {
            "ValueSet" => terminology.value_sets.insert(url, resource),
            "CodeSystem" => terminology.code_systems.insert(url, resource),
            _ => None,
        };
    }
    let mut required = BTreeMap::new();
    for definition in structures.iter().flat_map(|b| entries(b)) {
        if definition["derivation"] == "constraint" || definition["kind"] == "logical" {
            continue;
        }
        for element in definition["snapshot"]["element"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let binding = &element["binding"];
            if binding["strength"] != "required" {
                continue;
            }
            if let Some(url) = binding["valueSet"].as_str() {
                let url = url.split('|').next().unwrap_or(url);
                if let Some(codes) = terminology.expand(url, 0) {
                    required.insert(url, codes);
                }
            }
        }
    }
    let mut out = String::from(HEADER);
    out += "use crate::ValueSetDef;\n\n";
    out += "/// The value sets base R4 binds as required and the specification enumerates, sorted by URL;\n\
            /// each with its codes as (system, code), sorted.\n";
    out += "pub(crate) static VALUE_SETS: &[ValueSetDef] = &[\n";
    for (url, codes) in required {
        let codes: Vec<String> = codes
            .iter()
            .map(|(system, code)| format!("({}, {})", literal(system), literal(code)))
            .collect();
        out += &format!(
            "ValueSetDef {{ url: {}, codes: &[{}] }},\n",
            literal(url),
            codes.join(", ")
        );
    }
    out += "];\n";
    out
}
