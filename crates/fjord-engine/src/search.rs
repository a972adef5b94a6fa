//! Searches at type, system and compartment level: the query parsed against the registry, the
//! page read from the store, and the resources `_include` and `_revinclude` add to it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fjord_search::{keys, Filter, Include, IndexValue, Registry, Scope, SearchQuery};
use fjord_store::{SearchPage, StoredVersion, Tenant};

use crate::{Caller, Engine, EngineError, Permission};

/// How many resources includes add to one page at most; beyond it the page says so.
pub const MAX_INCLUDED: usize = 1000;
/// How many times `:iterate` includes follow the resources included before.
const MAX_ITERATIONS: usize = 4;

/// A search request.
#[derive(Debug, Default)]
pub struct SearchRequest {
    /// The search parameters in request order (query string, then form body).
    pub params: Vec<(String, String)>,
    /// `Prefer: handling=strict`: unknown parameters are an error instead of ignored.
    pub strict: bool,
    /// The `_cursor` of a page link.
    pub cursor: Option<String>,
}

/// A page of matches with what includes add to it.
#[derive(Debug)]
pub struct SearchResult {
    pub query: SearchQuery,
    pub page: SearchPage,
    /// Resources `_include`/`_revinclude` brought in, each once, none of them a match.
    pub included: Vec<StoredVersion>,
    /// Includes found more than [`MAX_INCLUDED`] resources and the rest were left out.
    pub included_truncated: bool,
}

impl Engine {
    /// Searches in `scope`; the query comes back too, for the Bundle's links.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id))]
    pub async fn search(
        &self,
        caller: &Caller,
        scope: Scope<'_>,
        request: &SearchRequest,
    ) -> Result<SearchResult, EngineError> {
        match scope {
            Scope::Type(t) => {
                self.resource_type(t)?;
            }
            Scope::System => {}
            Scope::Compartment {
                owner_type,
                resource_type,
                ..
            } => {
                self.resource_type(owner_type)?;
                if let Some(t) = resource_type {
                    self.resource_type(t)?;
                }
            }
        }
        let (registry, query) = self
            .prepare_query(caller, scope, &request.params, request.strict)
            .await?;
        let page = self
            .store
            .search(caller.key, &query, request.cursor.as_deref())
            .await?
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let (included, included_truncated) =
            self.included(caller, &registry, &query, &page).await?;
        Ok(SearchResult {
            query,
            page,
            included,
            included_truncated,
        })
    }

    /// A search as the store runs it: parsed against the tenant's parameters, its terminology
    /// and text filters answered; with the registry it was parsed against.
    pub(crate) async fn prepare_query(
        &self,
        caller: &Caller,
        scope: Scope<'_>,
        params: &[(String, String)],
        strict: bool,
    ) -> Result<(Arc<Registry>, SearchQuery), EngineError> {
        fjord_search::check_cost(params)?;
        let registry = self.registry(caller).await?;
        let mut query = registry
            .parse_query(scope, params, strict)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let every_type = matches!(
            scope,
            Scope::System
                | Scope::Compartment {
                    resource_type: None,
                    ..
                }
        );
        if every_type && !params.iter().any(|(name, _)| name == "_type") {
            // The audit trail is not the tenant's data: only asked for by name.
            query.types.retain(|t| t != crate::audit::AUDIT_EVENT);
            query.refresh_key();
        }
        self.answer_terminology(caller, &registry, &mut query)
            .await?;
        self.answer_text(caller, &mut query).await?;
        self.confine(caller, &registry, &mut query)?;
        Ok((registry, query))
    }

    /// `Patient/[id]/$everything`: the patient's compartment, paged, with the resources its
    /// members refer to. `_since` (changed since), `_type` and `_count` narrow it.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id))]
    pub async fn everything(
        &self,
        caller: &Caller,
        patient_id: &str,
        request: &SearchRequest,
    ) -> Result<SearchResult, EngineError> {
        self.read(caller, "Patient", patient_id).await?;
        let mut params = Vec::new();
        for (name, value) in &request.params {
            match name.as_str() {
                "_since" => params.push(("_lastUpdated".to_owned(), format!("ge{value}"))),
                "_type" | "_count" | "_cursor" | "_lastUpdated" => {
                    params.push((name.clone(), value.clone()))
                }
                // Always `*`: page links carry it.
                "_include" => {}
                _ if request.strict => {
                    return Err(EngineError::BadRequest(format!(
                        "$everything: the parameter {name} is not supported"
                    )))
                }
                _ => {}
            }
        }
        params.push(("_include".to_owned(), "*".to_owned()));
        let scope = Scope::Compartment {
            owner_type: "Patient",
            owner_id: patient_id,
            resource_type: None,
        };
        let request = SearchRequest {
            params,
            strict: request.strict,
            cursor: request.cursor.clone(),
        };
        self.search(caller, scope, &request).await
    }

    /// The includes of a page: first from the matches, then (`:iterate` ones) from what was
    /// included, until nothing new turns up.
    async fn included(
        &self,
        caller: &Caller,
        registry: &Registry,
        query: &SearchQuery,
        page: &SearchPage,
    ) -> Result<(Vec<StoredVersion>, bool), EngineError> {
        if query.includes.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut seen: HashSet<(String, String)> = page
            .resources
            .iter()
            .map(|r| (r.resource_type.clone(), r.id.clone()))
            .collect();
        let mut included: Vec<StoredVersion> = Vec::new();
        let mut from: Vec<StoredVersion> = page.resources.clone();
        for round in 0..MAX_ITERATIONS {
            let rules: Vec<&Include> = query
                .includes
                .iter()
                .filter(|i| round == 0 || i.iterate)
                .collect();
            if rules.is_empty() || from.is_empty() {
                break;
            }
            let mut found = self
                .targets_readable(caller, registry, targets(registry, &rules, &from, &seen)?)
                .await?;
            for rule in rules.iter().filter(|r| r.reverse) {
                let keys = referrer_keys(registry, rule, &from);
                found.extend(
                    self.referrers_readable(caller, registry, rule, keys)
                        .await?,
                );
            }
            found.retain(|r| seen.insert((r.resource_type.clone(), r.id.clone())));
            included.extend(found.iter().cloned());
            if included.len() > MAX_INCLUDED {
                included.truncate(MAX_INCLUDED);
                return Ok((included, true));
            }
            from = found;
        }
        Ok((included, false))
    }

    /// The current versions of these `_include` targets the caller may read: each type looked
    /// up under the caller's grant to read it; types it may not read are left out.
    async fn targets_readable(
        &self,
        caller: &Caller,
        registry: &Registry,
        targets: Vec<(String, String)>,
    ) -> Result<Vec<StoredVersion>, EngineError> {
        if caller.access.is_unrestricted() {
            return Ok(self.store.read_current(caller.key, &targets).await?);
        }
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (resource_type, id) in targets {
            by_type.entry(resource_type).or_default().push(id);
        }
        let mut found = Vec::new();
        for (resource_type, ids) in by_type {
            let Ok(access) = caller
                .access
                .filter(registry, Permission::Read, &resource_type)
            else {
                continue;
            };
            let count = ids.len();
            let among = Filter::Among {
                resource_type: resource_type.clone(),
                ids,
            };
            let filters = [among].into_iter().chain(access).collect();
            found.extend(
                self.found_under(caller, &resource_type, filters, count)
                    .await?,
            );
        }
        Ok(found)
    }

    /// What refers to the matches by `rule` (`_revinclude`) and the caller may read.
    async fn referrers_readable(
        &self,
        caller: &Caller,
        registry: &Registry,
        rule: &Include,
        keys: Vec<i64>,
    ) -> Result<Vec<StoredVersion>, EngineError> {
        let source = &rule.source_type;
        match caller.access.filter(registry, Permission::Read, source) {
            Err(_) => Ok(Vec::new()),
            Ok(None) => Ok(self
                .store
                .referrers(caller.key, source, &keys, MAX_INCLUDED + 1)
                .await?),
            Ok(Some(_)) if keys.is_empty() => Ok(Vec::new()),
            Ok(Some(access)) => {
                let referring = Filter::Any(keys.into_iter().map(Filter::Key).collect());
                self.found_under(caller, source, vec![referring, access], MAX_INCLUDED + 1)
                    .await
            }
        }
    }

    /// The canonical URLs of the compartment definitions searches honour.
    pub fn compartment_definitions(&self) -> Vec<String> {
        fjord_definitions::compartments()
            .iter()
            .map(|c| {
                let (first, rest) = c.code.split_at(1);
                format!(
                    "http://hl7.org/fhir/CompartmentDefinition/{}{rest}",
                    first.to_lowercase()
                )
            })
            .collect()
    }

    /// `Source:param` for every reference parameter of every type that may point at
    /// `resource_type`: what `_revinclude` takes.
    pub async fn revinclude_sources(
        &self,
        tenant: &Tenant,
        resource_type: &str,
    ) -> Result<Vec<String>, EngineError> {
        let registry = self.registry(tenant).await?;
        Ok(registry
            .references_to(resource_type)
            .map(|(source, p)| format!("{source}:{}", p.code))
            .collect())
    }

    /// The search parameters served for a resource type: (code, definition URL, type code).
    pub async fn search_parameters(
        &self,
        tenant: &Tenant,
        resource_type: &str,
    ) -> Result<Vec<(String, String, String)>, EngineError> {
        let registry = self.registry(tenant).await?;
        Ok(registry
            .parameters_of(resource_type)
            .iter()
            .filter(|p| {
                p.is_searchable()
                    || (self.has_text_index()
                        && resource_type != crate::audit::AUDIT_EVENT
                        && matches!(p.code.as_str(), "_text" | "_content"))
            })
            .map(|p| {
                let kind = format!("{:?}", p.kind).to_lowercase();
                (p.code.clone(), p.url.clone(), kind)
            })
            .collect())
    }
}

/// The local references that the forward includes follow from `from`, not yet seen.
fn targets(
    registry: &Registry,
    rules: &[&Include],
    from: &[StoredVersion],
    seen: &HashSet<(String, String)>,
) -> Result<Vec<(String, String)>, EngineError> {
    let mut targets = Vec::new();
    let mut wanted = HashSet::new();
    for resource in from {
        let sources: Vec<&&Include> = rules
            .iter()
            .filter(|r| !r.reverse && r.source_type == resource.resource_type)
            .collect();
        if sources.is_empty() {
            continue;
        }
        let Some(body) = resource.body.as_deref() else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| EngineError::BadRequest(format!("a stored resource: {e}")))?;
        for rule in sources {
            for value in fjord_search::values_of(registry, &json, &rule.param)? {
                let IndexValue::Reference {
                    resource_type: Some(target_type),
                    id: Some(id),
                    ..
                } = value
                else {
                    continue;
                };
                if rule.target_type.as_ref().is_some_and(|t| *t != target_type) {
                    continue;
                }
                let key = (target_type, id);
                if !seen.contains(&key) && wanted.insert(key.clone()) {
                    targets.push(key);
                }
            }
        }
    }
    Ok(targets)
}

/// The keys that references of `rule` to any of `to` have.
fn referrer_keys(registry: &Registry, rule: &Include, to: &[StoredVersion]) -> Vec<i64> {
    let links = registry.reference_links(&rule.source_type, &rule.param);
    to.iter()
        .filter(|r| {
            rule.target_type
                .as_ref()
                .is_none_or(|t| *t == r.resource_type)
        })
        .flat_map(|r| {
            let own = keys::resource(&r.resource_type, &r.id);
            links.iter().map(move |link| link ^ own)
        })
        .collect()
}

/// The name-value pairs of a query string (`a=1&b=2`), decoded.
pub(crate) fn query_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}
