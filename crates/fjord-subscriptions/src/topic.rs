//! Topics as data: R5 `SubscriptionTopic` JSON (the files in `topics/`, compiled in by the
//! build script, so a new topic is a new file). A topic says which resource type, which
//! interactions, and which tests on the previous and current version (search parameters, or
//! FHIRPath with `%previous` and `%current`) raise an event.

use std::sync::Arc;

use fjord_fhirpath::Expr;
use fjord_search::{Filter, IndexTerms, Registry, Scope};
use serde::Deserialize;
use serde_json::Value;

use crate::SubscriptionError;

/// The topics Fjord ships: (file name, JSON).
const SHIPPED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/topics.rs"));

/// The interaction that wrote a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Update,
    Delete,
}

impl Interaction {
    /// The method and status of a history entry for this interaction.
    pub fn request(self) -> (&'static str, &'static str) {
        match self {
            Interaction::Create => ("POST", "201"),
            Interaction::Update => ("PUT", "200"),
            Interaction::Delete => ("DELETE", "204"),
        }
    }
}

/// A topic as Fjord evaluates it.
#[derive(Debug)]
pub struct Topic {
    pub url: String,
    pub title: String,
    /// The JSON it was read from, served as is.
    pub definition: Value,
    pub triggers: Vec<Trigger>,
    /// Filter parameters the topic names (`canFilterBy`); any search parameter of the
    /// trigger's type is accepted too.
    pub filters: Vec<String>,
    /// Search parameters whose references are the notification's additional context, by type.
    pub includes: Vec<(String, String)>,
}

/// One `resourceTrigger`.
#[derive(Debug)]
pub struct Trigger {
    /// The type, or `None` for any (`Resource`).
    pub resource_type: Option<String>,
    pub interactions: Vec<Interaction>,
    pub query: Option<QueryCriteria>,
    pub fhirpath: Option<Arc<Expr>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryCriteria {
    pub previous: Option<String>,
    pub result_for_create: Option<String>,
    pub current: Option<String>,
    pub result_for_delete: Option<String>,
    #[serde(default)]
    pub require_both: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicJson {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    resource_trigger: Vec<TriggerJson>,
    #[serde(default)]
    can_filter_by: Vec<FilterJson>,
    #[serde(default)]
    notification_shape: Vec<ShapeJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TriggerJson {
    resource: String,
    #[serde(default)]
    supported_interaction: Vec<String>,
    query_criteria: Option<QueryCriteria>,
    fhir_path_criteria: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterJson {
    filter_parameter: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShapeJson {
    #[serde(default)]
    include: Vec<String>,
}

impl Topic {
    /// Reads a topic from its R5 `SubscriptionTopic` JSON.
    pub fn from_json(definition: Value) -> Result<Topic, SubscriptionError> {
        let invalid = |why: String| SubscriptionError::Topic(why);
        let json: TopicJson = serde_json::from_value(definition.clone())
            .map_err(|e| invalid(format!("not a SubscriptionTopic: {e}")))?;
        let mut triggers = Vec::new();
        for trigger in json.resource_trigger {
            let name = trigger
                .resource
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let resource_type = match name.as_str() {
                "Resource" | "DomainResource" => None,
                _ if fjord_model::resource_type(&name).is_some() => Some(name),
                _ => return Err(invalid(format!("{}: unknown resource", trigger.resource))),
            };
            let interactions = trigger
                .supported_interaction
                .iter()
                .map(|i| match i.as_str() {
                    "create" => Ok(Interaction::Create),
                    "update" => Ok(Interaction::Update),
                    "delete" => Ok(Interaction::Delete),
                    other => Err(invalid(format!("unknown interaction {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let fhirpath = trigger
                .fhir_path_criteria
                .as_deref()
                .map(|text| {
                    fjord_fhirpath::parse(text)
                        .map(Arc::new)
                        .map_err(|e| invalid(format!("fhirPathCriteria {text}: {e}")))
                })
                .transpose()?;
            triggers.push(Trigger {
                resource_type,
                interactions,
                query: trigger.query_criteria,
                fhirpath,
            });
        }
        if triggers.is_empty() {
            return Err(invalid(format!("{} has no resourceTrigger", json.url)));
        }
        let includes = json
            .notification_shape
            .iter()
            .flat_map(|shape| &shape.include)
            .filter_map(|include| {
                let (resource_type, param) = include.split_once(':')?;
                Some((resource_type.to_owned(), param.to_owned()))
            })
            .collect();
        Ok(Topic {
            url: json.url,
            title: json.title,
            definition,
            triggers,
            filters: json
                .can_filter_by
                .into_iter()
                .map(|f| f.filter_parameter)
                .collect(),
            includes,
        })
    }

    /// The trigger for a change of `resource_type` by `interaction`, if the topic has one.
    pub fn trigger(&self, resource_type: &str, interaction: Interaction) -> Option<&Trigger> {
        self.triggers.iter().find(|t| {
            t.resource_type
                .as_deref()
                .is_none_or(|r| r == resource_type)
                && t.interactions.contains(&interaction)
        })
    }
}

/// A version as a trigger sees it.
#[derive(Debug, Clone, Copy)]
pub struct Version<'a> {
    pub id: &'a str,
    pub body: &'a Value,
    pub terms: &'a IndexTerms,
}

impl Trigger {
    /// Whether a change from `previous` to `current` (`None` for a create and a delete
    /// respectively) raises an event.
    pub fn fires<'v>(
        &self,
        registry: &Registry,
        resource_type: &str,
        previous: Option<Version<'v>>,
        current: Option<Version<'v>>,
    ) -> bool {
        if let Some(query) = &self.query {
            let test = |criteria: &Option<String>,
                        version: Option<Version<'_>>,
                        absent: &Option<String>| {
                let criteria = criteria.as_deref()?;
                Some(match version {
                    Some(version) => holds(registry, resource_type, criteria, version),
                    None => absent.as_deref() == Some("test-passes"),
                })
            };
            let results: Vec<bool> = [
                test(&query.previous, previous, &query.result_for_create),
                test(&query.current, current, &query.result_for_delete),
            ]
            .into_iter()
            .flatten()
            .collect();
            let passes = if query.require_both {
                results.iter().all(|r| *r)
            } else {
                results.is_empty() || results.iter().any(|r| *r)
            };
            if !passes {
                return false;
            }
        }
        if let Some(expression) = &self.fhirpath {
            let as_values = |version: Option<Version<'v>>| {
                version
                    .map(|v| {
                        vec![fjord_fhirpath::Value::Node(fjord_fhirpath::Node::resource(
                            v.body,
                        ))]
                    })
                    .unwrap_or_default()
            };
            let env = fjord_fhirpath::Environment {
                resource: current.or(previous).map(|v| v.body),
                variables: vec![
                    ("previous".to_owned(), as_values(previous)),
                    ("current".to_owned(), as_values(current)),
                ],
                ..Default::default()
            };
            let input = as_values(current.or(previous));
            match fjord_fhirpath::evaluate(expression, input, &env) {
                Ok(result) => return result.first().and_then(|v| v.as_bool()) == Some(true),
                Err(error) => {
                    tracing::warn!(%error, "a topic's fhirPathCriteria failed; no event");
                    return false;
                }
            }
        }
        true
    }
}

/// Whether search parameters (`code=x&status=y`) hold on a version, decided in memory; a test
/// memory cannot decide does not hold.
pub fn holds(
    registry: &Registry,
    resource_type: &str,
    criteria: &str,
    version: Version<'_>,
) -> bool {
    match parse_filter(registry, resource_type, criteria) {
        Ok(filter) => filter
            .holds_on(resource_type, version.id, version.terms)
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Search parameters as one filter of `resource_type`.
pub fn parse_filter(
    registry: &Registry,
    resource_type: &str,
    criteria: &str,
) -> Result<Filter, String> {
    let params: Vec<(String, String)> = form_urlencoded::parse(criteria.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let query = registry
        .parse_query(Scope::Type(resource_type), &params, true)
        .map_err(|e| e.to_string())?;
    Ok(Filter::All(query.filters))
}

/// Every topic Fjord ships, by URL.
pub fn shipped() -> Result<Vec<Topic>, SubscriptionError> {
    SHIPPED
        .iter()
        .map(|(name, text)| {
            let json: Value = serde_json::from_str(text)
                .map_err(|e| SubscriptionError::Topic(format!("{name}: {e}")))?;
            Topic::from_json(json)
        })
        .collect()
}
