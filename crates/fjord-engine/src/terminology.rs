//! The terminology modifiers of token searches (`:in`, `:not-in`, `:below`, `:above`), answered
//! from the tenant's own ValueSet and CodeSystem resources: a value set's expansion, or its
//! compose (codes listed, whole systems, `is-a`/`descendent-of` filters, imported value sets,
//! excluded codes); a code system's hierarchy as nested `concept`s. The codes found become
//! token keys in the query before it runs.
//!
//! A value set is expanded as validation expands it (the tenant's `Conformance`, cached, with
//! base R4's required value sets); this module's own expansion answers the rest: a whole code
//! system the tenant does not have, matched by its system.
//!
//! What this cannot decide (a value set or code system the tenant does not have, filters other
//! than the two, hierarchies given only by `parent` properties) is a 400 naming it, never a
//! silently empty answer.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use fjord_search::{ConceptSet, Concepts, Filter, Registry, Scope, SearchQuery};
use serde_json::Value as Json;

use crate::{Caller, Engine, EngineError};

/// How deep value sets may import each other.
const MAX_IMPORT_DEPTH: usize = 4;
/// The most codes one lookup may bring into a query.
const MAX_CODES: usize = 10_000;

type Ask = (String, String, ConceptSet);

impl Engine {
    /// Puts the codes each [`Filter::Concepts`] of the query asks for in its place.
    pub(crate) async fn answer_terminology(
        &self,
        caller: &Caller,
        registry: &Registry,
        query: &mut SearchQuery,
    ) -> Result<(), EngineError> {
        let mut asked: Vec<Ask> = Vec::new();
        each_concepts_filter(query, |_, ask| asked.push(ask));
        let mut answers: HashMap<ConceptSet, Concepts> = HashMap::new();
        for (_, _, set) in asked {
            if let std::collections::hash_map::Entry::Vacant(entry) = answers.entry(set) {
                let concepts = self.concepts(caller, entry.key()).await?;
                entry.insert(concepts);
            }
        }
        each_concepts_filter(query, |filter, (resource_type, param, set)| {
            *filter = registry.concepts_filter(&resource_type, &param, &answers[&set]);
        });
        Ok(())
    }

    async fn concepts(&self, caller: &Caller, set: &ConceptSet) -> Result<Concepts, EngineError> {
        match set {
            ConceptSet::ValueSet(url) => {
                // The expansion validation uses, cached per caller, where it can be had; a
                // value set that takes in a whole system Fjord does not have is answered below
                // by that system.
                match self.conformance(caller).await?.expand(url) {
                    Some(expansion) => {
                        let codes = expansion
                            .codes()
                            .into_iter()
                            .map(|(s, c)| (s.to_owned(), c.to_owned()))
                            .collect();
                        check_size(
                            Concepts {
                                codes,
                                systems: Vec::new(),
                            },
                            url,
                        )
                    }
                    None => self.expand(caller, url, 0).await,
                }
            }
            ConceptSet::Below { system, code } | ConceptSet::Above { system, code } => {
                let code_system = self.code_system(caller, system).await?;
                let roots = concepts_of(&code_system, system)?;
                let path = path_to(roots, code).ok_or_else(|| {
                    EngineError::BadRequest(format!("the code system {system} has no code {code}"))
                })?;
                let mut codes = Vec::new();
                if matches!(set, ConceptSet::Below { .. }) {
                    collect_codes(std::slice::from_ref(path[path.len() - 1]), &mut codes);
                } else {
                    codes.extend(path.iter().filter_map(|c| c["code"].as_str()));
                }
                Ok(Concepts {
                    codes: codes
                        .into_iter()
                        .map(|c| (system.clone(), c.to_owned()))
                        .collect(),
                    systems: Vec::new(),
                })
            }
        }
    }

    /// The codes of a value set of the caller.
    fn expand<'a>(
        &'a self,
        caller: &'a Caller,
        url: &'a str,
        depth: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Concepts, EngineError>> + 'a>> {
        Box::pin(async move {
            if depth > MAX_IMPORT_DEPTH {
                return Err(EngineError::BadRequest(format!(
                    "the value set {url} imports value sets more than {MAX_IMPORT_DEPTH} deep"
                )));
            }
            let value_set = self.canonical(caller, "ValueSet", url).await?;
            let unsupported = |what: &str| {
                Err(EngineError::BadRequest(format!(
                    "the value set {url} uses {what}, which Fjord cannot expand yet"
                )))
            };
            let mut found = Concepts::default();
            if let Some(contains) = value_set["expansion"]["contains"].as_array() {
                expansion_codes(contains, &mut found.codes);
                return check_size(found, url);
            }
            let compose = &value_set["compose"];
            for include in array(&compose["include"]) {
                let imports: Vec<&str> = array(&include["valueSet"])
                    .filter_map(Json::as_str)
                    .collect();
                match (include["system"].as_str(), imports.as_slice()) {
                    (None, [import]) => {
                        let imported = self.expand(caller, import, depth + 1).await?;
                        found.codes.extend(imported.codes);
                        found.systems.extend(imported.systems);
                    }
                    (None, _) => return unsupported("an include without one system or value set"),
                    (Some(_), [_, ..]) => return unsupported("a system narrowed by value sets"),
                    (Some(system), []) => {
                        let filters: Vec<&Json> = array(&include["filter"]).collect();
                        if include["concept"].is_array() {
                            found.codes.extend(
                                array(&include["concept"])
                                    .filter_map(|c| c["code"].as_str())
                                    .map(|c| (system.to_owned(), c.to_owned())),
                            );
                        } else if let [filter] = filters.as_slice() {
                            let code = filter["value"].as_str().unwrap_or_default();
                            let set = ConceptSet::Below {
                                system: system.to_owned(),
                                code: code.to_owned(),
                            };
                            let mut below =
                                match (filter["property"].as_str(), filter["op"].as_str()) {
                                    (Some("concept"), Some("is-a" | "descendent-of")) => {
                                        self.concepts(caller, &set).await?.codes
                                    }
                                    _ => {
                                        return unsupported(
                                            "a filter other than concept is-a or descendent-of",
                                        )
                                    }
                                };
                            if filter["op"] == "descendent-of" {
                                below.retain(|(_, c)| c != code);
                            }
                            found.codes.extend(below);
                        } else if filters.is_empty() {
                            found.systems.push(system.to_owned());
                        } else {
                            return unsupported("several filters on one system");
                        }
                    }
                }
            }
            for exclude in array(&compose["exclude"]) {
                let (Some(system), true) =
                    (exclude["system"].as_str(), exclude["concept"].is_array())
                else {
                    return unsupported("an exclude other than a list of codes");
                };
                if found.systems.iter().any(|s| s == system) {
                    // A system taken whole loses codes: list its codes instead.
                    let code_system = self.code_system(caller, system).await?;
                    let mut codes = Vec::new();
                    collect_codes(concepts_of(&code_system, system)?, &mut codes);
                    found.systems.retain(|s| s != system);
                    found
                        .codes
                        .extend(codes.into_iter().map(|c| (system.to_owned(), c.to_owned())));
                }
                let excluded: Vec<&str> = array(&exclude["concept"])
                    .filter_map(|c| c["code"].as_str())
                    .collect();
                found
                    .codes
                    .retain(|(s, c)| s != system || !excluded.contains(&c.as_str()));
            }
            check_size(found, url)
        })
    }

    async fn code_system(&self, caller: &Caller, url: &str) -> Result<Json, EngineError> {
        self.canonical(caller, "CodeSystem", url).await
    }

    /// The current resource of `resource_type` with the canonical `url` (`url|version`).
    pub(crate) async fn canonical(
        &self,
        caller: &Caller,
        resource_type: &str,
        canonical: &str,
    ) -> Result<Json, EngineError> {
        let (url, version) = match canonical.split_once('|') {
            Some((url, version)) => (url, Some(version)),
            None => (canonical, None),
        };
        let mut params = vec![("url".to_owned(), url.to_owned())];
        if let Some(version) = version {
            params.push(("version".to_owned(), version.to_owned()));
        }
        let registry = self.registry(caller).await?;
        let query = registry
            .parse_query(Scope::Type(resource_type), &params, false)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let page = self
            .store
            .search(caller.key, &query, None)
            .await?
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let body = match page.resources.as_slice() {
            [one] => one.body.as_deref().unwrap_or("{}"),
            [] => {
                return Err(EngineError::BadRequest(format!(
                    "{resource_type} {canonical} is not known to this server"
                )))
            }
            _ => {
                return Err(EngineError::BadRequest(format!(
                    "several {resource_type} resources have the URL {canonical}; name a version"
                )))
            }
        };
        serde_json::from_str(body).map_err(|e| EngineError::Internal(e.to_string()))
    }
}

/// Calls `f` on every [`Filter::Concepts`] of the query, with what it asks.
fn each_concepts_filter(query: &mut SearchQuery, mut f: impl FnMut(&mut Filter, Ask)) {
    query.visit_filters_mut(&mut |filter| {
        if let Filter::Concepts {
            resource_type,
            param,
            set,
        } = filter
        {
            let ask = (resource_type.clone(), param.clone(), set.clone());
            f(filter, ask);
        }
    });
}

fn array(value: &Json) -> impl Iterator<Item = &Json> {
    value.as_array().into_iter().flatten()
}

/// The top-level concepts of a code system that lists them.
fn concepts_of<'a>(code_system: &'a Json, url: &str) -> Result<&'a [Json], EngineError> {
    match code_system["concept"].as_array() {
        Some(concepts) if !concepts.is_empty() => Ok(concepts),
        _ => Err(EngineError::BadRequest(format!(
            "the code system {url} lists no concepts here"
        ))),
    }
}

/// The concepts from a root down to the one with `code`.
fn path_to<'a>(concepts: &'a [Json], code: &str) -> Option<Vec<&'a Json>> {
    for concept in concepts {
        if concept["code"] == code {
            return Some(vec![concept]);
        }
        if let Some(children) = concept["concept"].as_array() {
            if let Some(mut path) = path_to(children, code) {
                path.insert(0, concept);
                return Some(path);
            }
        }
    }
    None
}

/// The codes of these concepts and of all below them.
fn collect_codes<'a>(concepts: &'a [Json], out: &mut Vec<&'a str>) {
    for concept in concepts {
        out.extend(concept["code"].as_str());
        if let Some(children) = concept["concept"].as_array() {
            collect_codes(children, out);
        }
    }
}

fn expansion_codes(contains: &[Json], out: &mut Vec<(String, String)>) {
    for entry in contains {
        if let (Some(system), Some(code)) = (entry["system"].as_str(), entry["code"].as_str()) {
            out.push((system.to_owned(), code.to_owned()));
        }
        if let Some(nested) = entry["contains"].as_array() {
            expansion_codes(nested, out);
        }
    }
}

fn check_size(concepts: Concepts, url: &str) -> Result<Concepts, EngineError> {
    if concepts.codes.len() > MAX_CODES {
        return Err(EngineError::BadRequest(format!(
            "the value set {url} has more than {MAX_CODES} codes; search by its systems instead"
        )));
    }
    Ok(concepts)
}
