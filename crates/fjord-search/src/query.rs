//! Search URLs parsed into a [`SearchQuery`]: filters over index terms, sort keys, page size,
//! includes and the shape of the result. The store turns one into SQL; nothing here knows SQL.
//!
//! Index keys name the resource type they belong to, so a search over several types (system
//! and compartment searches) asks each type for its own keys.

mod cost;
mod parameter;
mod values;

#[cfg(test)]
mod tests;

use fjord_definitions::SearchParamType;
use rust_decimal::Decimal;

use crate::terms::keys;
#[cfg(test)]
use crate::IndexValue;
use crate::{Registry, Storage};

pub use cost::{check_cost, TooCostly, MAX_ALTERNATIVES, MAX_INCLUDES, MAX_SEARCH_PARAMETERS};
pub use parameter::MAX_CHAIN_DEPTH;

/// A search: every filter must hold (AND) on a resource of one of `types`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// One type for a type-level search; several for system (`_type`) and compartment searches.
    pub types: Vec<String>,
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub total: Total,
    /// `_include` and `_revinclude`, in request order.
    pub includes: Vec<Include>,
    pub summary: Summary,
    /// `_elements`: the top-level elements to return (all when empty).
    pub elements: Vec<String>,
    /// The parameters the query applied, as given: what the `self` link shows.
    pub applied: Vec<(String, String)>,
    /// Which search this is (types, filters, sort): a page token is good for this search only.
    pub key: i64,
}

/// Where a search looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// `GET /Observation?…`
    Type(&'a str),
    /// `GET /?…`: every type, or those `_type` names.
    System,
    /// `GET /Patient/1/Observation?…` (`resource_type` `None` for `/Patient/1/*`): the
    /// resources in the compartment of `owner_type/owner_id`.
    Compartment {
        owner_type: &'a str,
        owner_id: &'a str,
        resource_type: Option<&'a str>,
    },
}

/// A condition on a resource, as a tree of index terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// At least one holds (a comma-separated list, or a parameter that is a union of others).
    Any(Vec<Filter>),
    /// Every one holds (a granular SMART scope's parameters, an access rule on a nested filter).
    All(Vec<Filter>),
    Not(Box<Filter>),
    /// The resource has this equality key (see [`keys`]).
    Key(i64),
    Id(String),
    /// The resource is of this type and the filter holds: a parameter of a search over several
    /// types, which means something different on each.
    OfType(String, Box<Filter>),
    /// A date row of the parameter (`param_key`), or `_lastUpdated` when `None`, compares.
    Date {
        param_key: Option<i64>,
        prefix: Prefix,
        low: i64,
        high: i64,
    },
    String {
        param_key: i64,
        matching: StringMatch,
    },
    /// A value of `param` kept beside the keys (numbers, quantities, composites).
    Value {
        param: String,
        test: ValueTest,
    },
    /// Chaining: a reference stored under `link` ([`keys::link`]) points at a current resource
    /// of `target_type` on which `filter` holds.
    Chain {
        link: i64,
        target_type: String,
        filter: Box<Filter>,
    },
    /// `_has`: a current resource of `source_type` on which `filter` holds refers to this one
    /// by a reference stored under `link`.
    Has {
        link: i64,
        source_type: String,
        filter: Box<Filter>,
    },
    /// Words in a text of a resource of `resource_type` (`_text`, `_content`, `param:text`): the
    /// text index answers it, and the engine puts its answer, an [`Filter::Among`], in its place
    /// before the store sees the query.
    Text {
        resource_type: String,
        field: TextField,
        text: String,
    },
    /// The resource is one of these of `resource_type`.
    Among {
        resource_type: String,
        ids: Vec<String>,
    },
    /// A token of `param` has one of the codes a terminology resource of the tenant decides
    /// (`:in`, `:below`, `:above`; `:not-in` is its negation): the engine looks the codes up and
    /// puts [`Registry::concepts_filter`] of them in its place.
    Concepts {
        resource_type: String,
        param: String,
        set: ConceptSet,
    },
}

/// Which codes a [`Filter::Concepts`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConceptSet {
    /// The codes of the value set with this canonical URL (`url` or `url|version`).
    ValueSet(String),
    /// The code and those it subsumes in its code system's hierarchy.
    Below { system: String, code: String },
    /// The code and those that subsume it.
    Above { system: String, code: String },
}

/// Codes as a terminology lookup found them: single codes, and code systems taken whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concepts {
    pub codes: Vec<(String, String)>,
    pub systems: Vec<String>,
}

impl SearchQuery {
    /// A query built by the server itself (a lookup under an access rule, what an include
    /// adds): these filters on these types, at most `count` matches, nothing else asked.
    pub fn of(types: Vec<String>, filters: Vec<Filter>, count: usize) -> SearchQuery {
        let mut query = SearchQuery {
            types,
            filters,
            sort: Vec::new(),
            count,
            total: Total::None,
            includes: Vec::new(),
            summary: Summary::False,
            elements: Vec::new(),
            applied: Vec::new(),
            key: 0,
        };
        query.refresh_key();
        query
    }

    /// Names the search anew after its types, filters or sort changed: page tokens of the
    /// search as it was are no good for it.
    pub fn refresh_key(&mut self) {
        self.key = keys::search(&format!(
            "{:?}{:?}{:?}",
            self.types, self.filters, self.sort
        ));
    }

    /// Visits every filter of the query, each before its parts (see [`Filter::visit_mut`]).
    pub fn visit_filters_mut(&mut self, visitor: &mut impl FnMut(&mut Filter)) {
        for filter in &mut self.filters {
            filter.visit_mut(visitor);
        }
    }
}

impl Filter {
    /// Visits every filter of the tree, depth first, each before its parts.
    pub fn visit_mut(&mut self, visitor: &mut impl FnMut(&mut Filter)) {
        visitor(self);
        match self {
            Filter::Any(parts) | Filter::All(parts) => {
                parts.iter_mut().for_each(|p| p.visit_mut(visitor))
            }
            Filter::Not(inner)
            | Filter::OfType(_, inner)
            | Filter::Chain { filter: inner, .. }
            | Filter::Has { filter: inner, .. } => inner.visit_mut(visitor),
            _ => {}
        }
    }
}

/// Which text of a resource a [`Filter::Text`] looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TextField {
    /// `_text`: the narrative.
    Narrative,
    /// `_content`: every string in the resource.
    Content,
    /// `param:text`: the texts of a token parameter's values (displays, `CodeableConcept.text`).
    Token(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringMatch {
    /// Starts with, ignoring case and accents (normalized).
    Prefix(String),
    /// Equal as written (`:exact`).
    Exact(String),
    /// Contains, ignoring case and accents (`:contains`).
    Contains(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueTest {
    /// A number's stored range against the search range.
    Number {
        prefix: Prefix,
        low: Decimal,
        high: Decimal,
    },
    /// A quantity's value (canonical when `canonical_code`, else as written with the unit
    /// constraints) against the search range.
    Quantity {
        prefix: Prefix,
        low: Decimal,
        high: Decimal,
        unit: UnitMatch,
    },
    /// A composite whose leading parts have `key` and whose ordered last part passes `last`.
    Composite { key: i64, last: Box<ValueTest> },
    /// A composite's date part (`lo`/`hi` in the value) against the range.
    Date { prefix: Prefix, low: i64, high: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum UnitMatch {
    Any,
    /// Compare canonical values in this canonical unit.
    Canonical(String),
    /// `system|code`, or `|code` (`system` `None`: the code or the unit text).
    Code {
        system: Option<String>,
        code: String,
    },
}

/// Comparison prefixes of numbers, dates and quantities: the comparators of the definitions.
pub use fjord_definitions::Comparator as Prefix;

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SortBy {
    Id,
    LastUpdated,
    /// The earliest (ascending) or latest (descending) date of the parameter, stored under any
    /// of these keys (one per type searched).
    Date(Vec<i64>),
    /// The first (ascending) or last (descending) normalized string of the parameter.
    String(Vec<i64>),
    /// The smallest (ascending) or largest (descending) kept number or quantity of the
    /// parameter (a quantity in its canonical unit when it has one).
    Value(String),
    /// The smallest (ascending) or largest (descending) code, reference or URI of the
    /// parameter, as text.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Total {
    #[default]
    None,
    /// The planner's estimate.
    Estimate,
    Accurate,
}

/// `_summary`: how much of each resource to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Summary {
    #[default]
    False,
    /// The elements the definitions mark as summary.
    True,
    /// `text`, `id`, `meta` and the mandatory top-level elements.
    Text,
    /// Everything but `text`.
    Data,
    /// No resources, only the total.
    Count,
}

/// `_include` (`reverse` false) or `_revinclude` of `source_type:param[:target_type]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub reverse: bool,
    /// `:iterate`: also from the resources included so far.
    pub iterate: bool,
    pub source_type: String,
    /// A reference parameter of `source_type`.
    pub param: String,
    pub target_type: Option<String>,
}

/// Page sizes: the default when `_count` is absent, and the largest served.
pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;

/// Why a search cannot run: the REST layer answers 400 with the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// Parameters about the response format, applied by the REST layer; `_cursor` is the page
/// token, which the store reads.
const IGNORED_PARAMETERS: [&str; 3] = ["_format", "_pretty", "_cursor"];

impl Registry {
    /// Parses the parameters of a search. Unknown parameters are ignored (left out of
    /// [`SearchQuery::applied`]) unless `strict`, when they are an error, as are malformed values
    /// and features Fjord does not offer.
    pub fn parse_query(
        &self,
        scope: Scope<'_>,
        params: &[(String, String)],
        strict: bool,
    ) -> Result<SearchQuery, QueryError> {
        let (types, scope_filter) = self.scope(scope, params)?;
        let mut query = SearchQuery::of(types, scope_filter.into_iter().collect(), DEFAULT_COUNT);
        for (name, value) in params {
            let code = name.split(':').next().unwrap_or_default();
            if IGNORED_PARAMETERS.contains(&code) {
                continue;
            }
            if code == "_type" {
                let several = matches!(
                    scope,
                    Scope::System
                        | Scope::Compartment {
                            resource_type: None,
                            ..
                        }
                );
                if several {
                    query.applied.push((name.clone(), value.clone()));
                } else if strict {
                    return Err(QueryError(
                        "_type applies to system and compartment-wide searches only".into(),
                    ));
                }
                continue;
            }
            if self.result_parameter(&mut query, name, value)? {
                query.applied.push((name.clone(), value.clone()));
                continue;
            }
            match self.filter_over_types(&query.types, name, value)? {
                Some(filter) => {
                    query.filters.push(filter);
                    query.applied.push((name.clone(), value.clone()));
                }
                None if strict => {
                    return Err(QueryError(format!(
                        "unknown or unsupported search parameter '{name}' for {}",
                        query.types.join(", ")
                    )))
                }
                None => {}
            }
        }
        if query.summary == Summary::Count {
            query.total = Total::Accurate;
            query.count = 0;
        }
        query.refresh_key();
        Ok(query)
    }

    /// The types a scope searches and the filter that confines a compartment search.
    fn scope(
        &self,
        scope: Scope<'_>,
        params: &[(String, String)],
    ) -> Result<(Vec<String>, Option<Filter>), QueryError> {
        let known = |t: &str| self.has_type(t);
        match scope {
            Scope::Type(resource_type) => Ok((vec![resource_type.to_owned()], None)),
            Scope::System => {
                let mut types = named_types(params, known)?;
                if types.is_empty() {
                    types = self.resource_types().map(str::to_owned).collect();
                }
                types.sort();
                types.dedup();
                Ok((types, None))
            }
            Scope::Compartment {
                owner_type,
                owner_id,
                resource_type,
            } => {
                let compartment = fjord_definitions::compartment(owner_type)
                    .ok_or_else(|| QueryError(format!("{owner_type} owns no compartment")))?;
                let types: Vec<&str> = match resource_type {
                    Some(t) if t == owner_type || compartment.parameters_of(t).is_some() => {
                        vec![t]
                    }
                    Some(t) => {
                        return Err(QueryError(format!(
                            "{t} is not in the {owner_type} compartment"
                        )))
                    }
                    None => {
                        let mut all: Vec<&str> =
                            compartment.members.iter().map(|(t, _)| *t).collect();
                        if !all.contains(&owner_type) {
                            all.push(owner_type);
                        }
                        all.retain(|t| known(t));
                        let named = named_types(params, known)?;
                        if !named.is_empty() {
                            all.retain(|t| named.iter().any(|n| n == t));
                        }
                        all.sort_unstable();
                        all
                    }
                };
                let reference = format!("{owner_type}/{owner_id}");
                let mut per_type = Vec::new();
                for t in &types {
                    let mut members = Vec::new();
                    if *t == owner_type {
                        // The owner is in its own compartment.
                        members.push(Filter::Id(owner_id.to_owned()));
                    }
                    for code in compartment.parameters_of(t).unwrap_or_default() {
                        if let Some(filter) = self.parameter_filter(t, code, &reference, 0)? {
                            members.push(filter);
                        }
                    }
                    per_type.push(((*t).to_owned(), Filter::Any(members)));
                }
                let filter = combine(per_type);
                Ok((
                    types.iter().map(|t| (*t).to_owned()).collect(),
                    Some(filter),
                ))
            }
        }
    }

    /// What confines `resource_type` to the compartment of `owner_type/owner_id`; `None` when
    /// resources of that type are never in such a compartment.
    pub fn compartment_filter(
        &self,
        owner_type: &str,
        owner_id: &str,
        resource_type: &str,
    ) -> Result<Option<Filter>, QueryError> {
        let Some(compartment) = fjord_definitions::compartment(owner_type) else {
            return Ok(None);
        };
        if resource_type != owner_type && compartment.parameters_of(resource_type).is_none() {
            return Ok(None);
        }
        let scope = Scope::Compartment {
            owner_type,
            owner_id,
            resource_type: Some(resource_type),
        };
        Ok(self.scope(scope, &[])?.1)
    }

    /// What puts a resource of `resource_type` in the compartment of some `owner_type`
    /// resource on which `owners` holds (bulk export of patients): the owners themselves, or a
    /// reference to one under a parameter of the compartment definition. `None` when resources
    /// of that type are never in such a compartment.
    pub fn in_compartment_of_any(
        &self,
        owner_type: &str,
        resource_type: &str,
        owners: &Filter,
    ) -> Option<Filter> {
        if resource_type == owner_type {
            return Some(owners.clone());
        }
        let compartment = fjord_definitions::compartment(owner_type)?;
        let links: Vec<Filter> = compartment
            .parameters_of(resource_type)?
            .iter()
            .filter(|code| self.parameter(resource_type, code).is_some())
            .flat_map(|code| self.reference_links(resource_type, code))
            .map(|link| Filter::Chain {
                link,
                target_type: owner_type.to_owned(),
                filter: Box::new(owners.clone()),
            })
            .collect();
        (!links.is_empty()).then_some(Filter::Any(links))
    }

    /// The types whose resources can be in a compartment of `owner_type`, the owner's first.
    pub fn compartment_types(&self, owner_type: &str) -> Vec<String> {
        let mut types = vec![owner_type.to_owned()];
        if let Some(compartment) = fjord_definitions::compartment(owner_type) {
            types.extend(
                compartment
                    .members
                    .iter()
                    .map(|(t, _)| *t)
                    .filter(|t| *t != owner_type && self.has_type(t))
                    .map(str::to_owned),
            );
        }
        types
    }

    /// The filter of `name=value` on each of `types`; `None` unless every type knows it.
    fn filter_over_types(
        &self,
        types: &[String],
        name: &str,
        value: &str,
    ) -> Result<Option<Filter>, QueryError> {
        let mut per_type = Vec::with_capacity(types.len());
        for resource_type in types {
            match self.parameter_filter(resource_type, name, value, 0)? {
                Some(filter) => per_type.push((resource_type.clone(), filter)),
                None => return Ok(None),
            }
        }
        Ok(Some(combine(per_type)))
    }

    /// Handles a parameter that shapes the result; false when `name` is not one.
    fn result_parameter(
        &self,
        query: &mut SearchQuery,
        name: &str,
        value: &str,
    ) -> Result<bool, QueryError> {
        let (code, modifier) = match name.split_once(':') {
            Some((code, modifier)) => (code, Some(modifier)),
            None => (name, None),
        };
        match (code, modifier) {
            ("_count", None) => {
                let count: usize = value.parse().map_err(|_| {
                    QueryError(format!("_count={value}: not a non-negative integer"))
                })?;
                query.count = count.min(MAX_COUNT);
            }
            ("_total", None) => {
                query.total = match value {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    _ => {
                        return Err(QueryError(format!(
                            "_total={value}: use none, estimate or accurate"
                        )))
                    }
                }
            }
            ("_sort", None) => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (descending, code) = match key.strip_prefix('-') {
                        Some(code) => (true, code),
                        None => (false, key),
                    };
                    query.sort.push(SortKey {
                        by: self.sort_by(&query.types, code)?,
                        descending,
                    });
                }
            }
            ("_summary", None) => {
                query.summary = match value {
                    "true" => Summary::True,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    "false" => Summary::False,
                    _ => {
                        return Err(QueryError(format!(
                            "_summary={value}: use true, text, data, count or false"
                        )))
                    }
                };
            }
            ("_elements", None) => {
                query.elements.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned),
                );
            }
            ("_include" | "_revinclude", None | Some("iterate" | "recurse")) => {
                let reverse = code == "_revinclude";
                let iterate = modifier.is_some();
                let includes = self.includes(&query.types, reverse, iterate, value)?;
                query.includes.extend(includes);
            }
            ("_count" | "_total" | "_sort" | "_summary" | "_elements", Some(_))
            | ("_include" | "_revinclude", Some(_)) => {
                return Err(QueryError(format!("{name}: no such modifier")));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `Source:param[:Target]`, `Source:*` or `*` (every reference parameter of the types
    /// searched; `_include` only).
    fn includes(
        &self,
        types: &[String],
        reverse: bool,
        iterate: bool,
        value: &str,
    ) -> Result<Vec<Include>, QueryError> {
        let name = if reverse { "_revinclude" } else { "_include" };
        let parts: Vec<&str> = value.split(':').collect();
        let (sources, code, target): (Vec<&str>, &str, Option<&str>) = match parts.as_slice() {
            ["*"] if !reverse => (types.iter().map(String::as_str).collect(), "*", None),
            [source, code] => (vec![*source], *code, None),
            [source, code, target] => (vec![*source], *code, Some(*target)),
            _ => {
                return Err(QueryError(format!(
                    "{name}={value}: use SourceType:parameter[:TargetType]"
                )))
            }
        };
        let mut includes = Vec::new();
        for source in sources {
            if !self.has_type(source) {
                return Err(QueryError(format!(
                    "{name}={value}: unknown resource type {source}"
                )));
            }
            if let Some(target) = target {
                if fjord_definitions::type_def(target).is_none() {
                    return Err(QueryError(format!(
                        "{name}={value}: unknown resource type {target}"
                    )));
                }
            }
            let parameters: Vec<&str> = if code == "*" {
                self.parameters_of(source)
                    .iter()
                    .filter(|p| p.kind == SearchParamType::Reference && p.is_searchable())
                    .map(|p| p.code.as_str())
                    .collect()
            } else {
                match self.parameter(source, code) {
                    Some(p) if p.kind == SearchParamType::Reference => vec![code],
                    _ => {
                        return Err(QueryError(format!(
                            "{name}={value}: {source} has no reference parameter {code}"
                        )))
                    }
                }
            };
            includes.extend(parameters.into_iter().map(|param| Include {
                reverse,
                iterate,
                source_type: source.to_owned(),
                param: param.to_owned(),
                target_type: target.map(str::to_owned),
            }));
        }
        Ok(includes)
    }

    /// A sort parameter: the same kind on every type searched.
    fn sort_by(&self, types: &[String], code: &str) -> Result<SortBy, QueryError> {
        let mut param_keys = Vec::new();
        let mut kind = None;
        for resource_type in types {
            let parameter = self.parameter(resource_type, code).ok_or_else(|| {
                QueryError(format!(
                    "_sort: unknown parameter '{code}' for {resource_type}"
                ))
            })?;
            let this = match (parameter.code.as_str(), parameter.kind, &parameter.storage) {
                ("_id", ..) => SortBy::Id,
                ("_lastUpdated", ..) => SortBy::LastUpdated,
                (_, SearchParamType::Date, Storage::Indexed) => SortBy::Date(Vec::new()),
                (_, SearchParamType::String, Storage::Indexed) => SortBy::String(Vec::new()),
                (_, SearchParamType::Number | SearchParamType::Quantity, Storage::Indexed) => {
                    SortBy::Value(code.to_owned())
                }
                (
                    _,
                    SearchParamType::Token | SearchParamType::Reference | SearchParamType::Uri,
                    Storage::Indexed,
                ) => SortBy::Text(code.to_owned()),
                _ => {
                    return Err(QueryError(format!(
                        "_sort: sorting by '{code}' is not supported (composites and unions \
                         of parameters are not)"
                    )))
                }
            };
            if kind
                .as_ref()
                .is_some_and(|k| std::mem::discriminant(k) != std::mem::discriminant(&this))
            {
                return Err(QueryError(format!(
                    "_sort: '{code}' is of different types on the types searched"
                )));
            }
            kind = Some(this);
            param_keys.push(keys::param(resource_type, code));
        }
        Ok(match kind {
            Some(SortBy::Date(_)) => SortBy::Date(param_keys),
            Some(SortBy::String(_)) => SortBy::String(param_keys),
            Some(other) => other,
            None => SortBy::Id,
        })
    }
}

/// The types `_type` names, each checked.
fn named_types(
    params: &[(String, String)],
    known: impl Fn(&str) -> bool,
) -> Result<Vec<String>, QueryError> {
    let mut types = Vec::new();
    for (_, value) in params.iter().filter(|(name, _)| name == "_type") {
        for t in value.split(',').filter(|t| !t.is_empty()) {
            if !known(t) {
                return Err(QueryError(format!("_type: unknown resource type {t}")));
            }
            types.push(t.to_owned());
        }
    }
    Ok(types)
}

/// One filter from each type's own: the same one when they agree, else each on its own type.
fn combine(mut per_type: Vec<(String, Filter)>) -> Filter {
    if per_type.windows(2).all(|w| w[0].1 == w[1].1) {
        return per_type
            .pop()
            .map(|(_, f)| f)
            .unwrap_or(Filter::Any(Vec::new()));
    }
    Filter::Any(
        per_type
            .into_iter()
            .map(|(t, f)| Filter::OfType(t, Box::new(f)))
            .collect(),
    )
}
