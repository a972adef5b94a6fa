//! The search parameters of every resource type, with their expressions parsed once.

use std::collections::HashMap;

use fjord_definitions::{SearchParamType, TypeKind};
use fjord_fhirpath::Expr;

use crate::SearchError;

/// The resource types a reference parameter may point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Any type that can be stored (every type but `Parameters`).
    Any,
    Only(Vec<String>),
}

impl Targets {
    pub fn allows(&self, resource_type: &str) -> bool {
        match self {
            Targets::Any => resource_type != "Parameters",
            Targets::Only(types) => types.iter().any(|t| t == resource_type),
        }
    }
}

impl From<fjord_definitions::Targets> for Targets {
    fn from(targets: fjord_definitions::Targets) -> Targets {
        match targets {
            fjord_definitions::Targets::Any => Targets::Any,
            fjord_definitions::Targets::Only(types) => {
                Targets::Only(types.iter().map(|t| (*t).to_owned()).collect())
            }
        }
    }
}

/// A search parameter as Fjord evaluates it on one resource type.
#[derive(Debug, Clone)]
pub struct SearchParam {
    pub code: String,
    pub url: String,
    pub kind: SearchParamType,
    /// `None` for parameters not evaluated on the resource (`_text`, `_content`, `_query`).
    pub expression: Option<Expr>,
    pub targets: Targets,
    /// For a composite: each part's type and its expression, relative to the composite's value.
    pub components: Vec<(SearchParamType, Expr)>,
    /// How its values are stored: indexed from its own expression, or answered from others.
    pub storage: Storage,
}

/// Where a parameter's values come from when searching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Extracted on every write into the index tables.
    Indexed,
    /// The union of other parameters of the type (`combo-code` = `code` | `component-code`):
    /// searched through them, so nothing is written twice.
    UnionOf(Vec<String>),
    /// Kept in the resource tables themselves (`_id`, `_lastUpdated`).
    Resource,
}

/// Search parameters by resource type.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub(crate) by_type: HashMap<String, Vec<SearchParam>>,
    /// The keys of `by_type`, sorted.
    types: Vec<String>,
}

impl Registry {
    /// Every search parameter of R4 for every concrete resource type.
    pub fn r4() -> Result<Registry, SearchError> {
        let mut by_type = HashMap::new();
        let resource_types = fjord_definitions::types()
            .iter()
            .filter(|t| t.kind == TypeKind::Resource && !t.is_abstract);
        for resource_type in resource_types {
            let definitions: Vec<_> =
                fjord_definitions::search_parameters_of(resource_type.name).collect();
            let mut parameters = Vec::new();
            for &(parameter, expression) in &definitions {
                let components = parameter
                    .components
                    .iter()
                    .map(|component| {
                        let kind = fjord_definitions::search_parameter(component.definition)
                            .map(|p| p.kind)
                            .ok_or_else(|| {
                                SearchError::Definition(format!(
                                    "{}: unknown component {}",
                                    parameter.url, component.definition
                                ))
                            })?;
                        Ok((kind, parse(parameter.url, component.expression)?))
                    })
                    .collect::<Result<Vec<_>, SearchError>>()?;
                parameters.push(SearchParam {
                    code: parameter.code.to_owned(),
                    url: parameter.url.to_owned(),
                    kind: parameter.kind,
                    expression: expression.map(|e| parse(parameter.url, e)).transpose()?,
                    targets: parameter.targets.into(),
                    components,
                    storage: Storage::Indexed,
                });
            }
            let texts: Vec<(&str, Option<&str>)> =
                definitions.iter().map(|(p, e)| (p.code, *e)).collect();
            let storages: Vec<Storage> = parameters
                .iter()
                .map(|p| storage(p, &parameters, &texts))
                .collect();
            for (parameter, storage) in parameters.iter_mut().zip(storages) {
                parameter.storage = storage;
            }
            by_type.insert(resource_type.name.to_owned(), parameters);
        }
        let mut types: Vec<String> = by_type.keys().cloned().collect();
        types.sort_unstable();
        Ok(Registry { by_type, types })
    }

    /// The parameters of a resource type (none for an unknown type).
    pub fn parameters_of(&self, resource_type: &str) -> &[SearchParam] {
        self.by_type
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every searchable reference parameter, of any type, that may point at `target_type`: as
    /// (type it belongs to, parameter). What `_revinclude` takes, and where references to a
    /// resource are indexed.
    pub fn references_to<'r>(
        &'r self,
        target_type: &'r str,
    ) -> impl Iterator<Item = (&'r str, &'r SearchParam)> + 'r {
        self.resource_types().flat_map(move |source| {
            self.parameters_of(source)
                .iter()
                .filter(move |p| {
                    p.kind == SearchParamType::Reference
                        && p.is_searchable()
                        && p.targets.allows(target_type)
                })
                .map(move |p| (source, p))
        })
    }

    /// Every resource type with parameters, sorted.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }

    /// Whether the registry knows this resource type.
    pub fn has_type(&self, resource_type: &str) -> bool {
        self.by_type.contains_key(resource_type)
    }

    /// The parameter `code` of a resource type.
    pub fn parameter(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        self.parameters_of(resource_type)
            .iter()
            .find(|p| p.code == code)
    }
}

/// How a parameter is stored, given the expressions of all parameters of its type.
fn storage(
    parameter: &SearchParam,
    all: &[SearchParam],
    expressions: &[(&str, Option<&str>)],
) -> Storage {
    if matches!(parameter.code.as_str(), "_id" | "_lastUpdated") {
        return Storage::Resource;
    }
    let own = expressions
        .iter()
        .find(|(code, _)| *code == parameter.code.as_str())
        .and_then(|(_, e)| *e);
    let Some(own) = own else {
        return Storage::Indexed;
    };
    let alternatives: Vec<&str> = own.split(" | ").map(str::trim).collect();
    if alternatives.len() < 2 {
        return Storage::Indexed;
    }
    // Each alternative must be exactly another parameter's whole expression, of the same type
    // and (for composites) with the same components.
    let same_shape = |code: &str| {
        all.iter().any(|other| {
            other.code == code
                && other.kind == parameter.kind
                && other.components == parameter.components
        })
    };
    let sources: Option<Vec<String>> = alternatives
        .iter()
        .map(|alternative| {
            expressions
                .iter()
                .find(|(code, e)| {
                    *code != parameter.code.as_str() && *e == Some(*alternative) && same_shape(code)
                })
                .map(|(code, _)| (*code).to_owned())
        })
        .collect();
    match sources {
        Some(codes) => Storage::UnionOf(codes),
        None => Storage::Indexed,
    }
}

pub(crate) fn parse(url: &str, expression: &str) -> Result<Expr, SearchError> {
    fjord_fhirpath::parse(expression).map_err(|e| SearchError::Definition(format!("{url}: {e}")))
}

impl SearchParam {
    /// Whether searches by this parameter are served: it has values (an expression, or the
    /// resource's own columns, or parts that do), and for a composite a shape the index keeps
    /// (equality parts, optionally ending in one ordered part).
    pub fn is_searchable(&self) -> bool {
        use SearchParamType::*;
        let has_values = self.expression.is_some() || self.storage != Storage::Indexed;
        match self.kind {
            Special => false,
            Composite => {
                let kinds: Vec<SearchParamType> = self.components.iter().map(|c| c.0).collect();
                let equality = |k: &SearchParamType| matches!(k, Token | Reference | Uri);
                match kinds.split_last() {
                    Some((last, leading)) => {
                        has_values
                            && leading.iter().all(equality)
                            && (equality(last) || matches!(last, Quantity | Number | Date))
                    }
                    None => false,
                }
            }
            _ => has_values,
        }
    }
}
