//! A Subscription resource read into what delivery needs: topic-based (the R5 Backport profile:
//! `criteria` a topic's canonical URL, filters in `backport-filter-criteria`) or classic R4
//! (`criteria` a search URL), and its channel. [`SubscriptionCheck`] refuses, before it is
//! stored, one Fjord could not serve.

use std::sync::Arc;
use std::time::Duration;

use fjord_engine::WriteCheck;
use fjord_search::{Filter, Registry};
use serde_json::Value;

use crate::topic::{parse_filter, Topic};
use crate::Topics;

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

/// What a subscription asks for.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    /// `requested`, `active`, `error`, `off`, as the resource says.
    pub status: String,
    pub kind: Kind,
    pub channel: Channel,
    /// `backport-heartbeat-period`.
    pub heartbeat: Option<Duration>,
    /// `backport-timeout`: how long a delivery may take.
    pub timeout: Duration,
    /// `backport-max-count`: events per notification.
    pub max_count: usize,
    pub content: Content,
    /// The search parameters its criteria name, by type (`*`: any): all that matching a version
    /// needs of its index terms.
    pub parameters: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Topic-based: the topic, and the filters (AND) with the type each applies to.
    Topic {
        topic: Arc<Topic>,
        filters: Vec<(String, Filter)>,
    },
    /// Classic R4: a search URL matched on each new version.
    Criteria {
        resource_type: String,
        filter: Filter,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelType {
    RestHook,
    Websocket,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub kind: ChannelType,
    pub endpoint: Option<String>,
    /// `name: value` headers sent with every rest-hook request.
    pub headers: Vec<(String, String)>,
    /// `channel.payload`: the MIME type of notifications; `None` for none (classic: a bare POST).
    pub payload: Option<String>,
}

/// `backport-payload-content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Empty,
    IdOnly,
    FullResource,
}

impl Content {
    pub fn code(self) -> &'static str {
        match self {
            Content::Empty => "empty",
            Content::IdOnly => "id-only",
            Content::FullResource => "full-resource",
        }
    }
}

impl Spec {
    /// Reads a Subscription; `Err` says why Fjord cannot serve it.
    pub fn read(registry: &Registry, topics: &Topics, json: &Value) -> Result<Spec, String> {
        let id = json["id"].as_str().unwrap_or_default().to_owned();
        let status = json["status"].as_str().unwrap_or("requested").to_owned();
        let criteria = json["criteria"]
            .as_str()
            .ok_or("a Subscription needs criteria")?;
        let channel_json = &json["channel"];
        let extension = |holder: &Value, name: &str| -> Vec<Value> {
            holder["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["url"].as_str() == Some(&format!("{BACKPORT}{name}")))
                .cloned()
                .collect()
        };
        let mut parameters = Vec::new();
        let kind = match topics.get(criteria) {
            Some(topic) => {
                let mut filters = Vec::new();
                for filter in extension(&json["_criteria"], "backport-filter-criteria") {
                    let text = filter["valueString"]
                        .as_str()
                        .ok_or("backport-filter-criteria needs valueString")?;
                    let (resource_type, filter) = topic_filter(registry, &topic, text)?;
                    let query = text.split_once('?').map_or(text, |(_, q)| q);
                    named_parameters(&resource_type, query, &mut parameters);
                    filters.push((resource_type, filter));
                }
                for trigger in &topic.triggers {
                    let resource_type = trigger.resource_type.as_deref().unwrap_or("*");
                    for query in trigger.query.iter().flat_map(|q| [&q.previous, &q.current]) {
                        named_parameters(
                            resource_type,
                            query.as_deref().unwrap_or(""),
                            &mut parameters,
                        );
                    }
                }
                for (resource_type, parameter) in &topic.includes {
                    parameters.push((resource_type.clone(), parameter.clone()));
                }
                Kind::Topic { topic, filters }
            }
            None if criteria.contains('?') => {
                let (resource_type, query) = criteria.split_once('?').expect("checked");
                let resource_type = resource_type.rsplit('/').next().unwrap_or_default();
                if fjord_model::resource_type(resource_type).is_none() {
                    return Err(format!("criteria '{criteria}': unknown resource type"));
                }
                let filter = decidable(registry, resource_type, query, criteria)?;
                named_parameters(resource_type, query, &mut parameters);
                Kind::Criteria {
                    resource_type: resource_type.to_owned(),
                    filter,
                }
            }
            None => {
                return Err(format!(
                    "criteria '{criteria}' is neither a topic this server offers nor a search URL"
                ))
            }
        };
        let kind_code = channel_json["type"].as_str().unwrap_or_default();
        let channel_kind = match kind_code {
            "rest-hook" => ChannelType::RestHook,
            "websocket" => ChannelType::Websocket,
            other => {
                return Err(format!(
                    "channel type '{other}' is not offered: use rest-hook or websocket"
                ))
            }
        };
        let endpoint = channel_json["endpoint"].as_str().map(str::to_owned);
        if channel_kind == ChannelType::RestHook {
            let url = endpoint
                .as_deref()
                .ok_or("a rest-hook channel needs an endpoint")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("endpoint '{url}' is not an http(s) URL"));
            }
        }
        let mut headers = Vec::new();
        for header in channel_json["header"].as_array().into_iter().flatten() {
            let text = header.as_str().unwrap_or_default();
            let (name, value) = text
                .split_once(':')
                .ok_or_else(|| format!("header '{text}' is not 'Name: value'"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let payload = channel_json["payload"].as_str().map(str::to_owned);
        if let Some(mime) = &payload {
            if !mime.starts_with("application/fhir+json") && !mime.starts_with("application/json") {
                return Err(format!(
                    "payload '{mime}' is not offered: use application/fhir+json"
                ));
            }
        }
        let seconds = |name: &str, field: &str| -> Option<u64> {
            extension(channel_json, name)
                .first()
                .and_then(|e| e[field].as_u64())
        };
        let content = match extension(&channel_json["_payload"], "backport-payload-content")
            .first()
            .and_then(|e| e["valueCode"].as_str())
        {
            None if matches!(kind, Kind::Criteria { .. }) => Content::FullResource,
            None | Some("id-only") => Content::IdOnly,
            Some("empty") => Content::Empty,
            Some("full-resource") => Content::FullResource,
            Some(other) => return Err(format!("payload content '{other}' is unknown")),
        };
        Ok(Spec {
            id,
            status,
            kind,
            channel: Channel {
                kind: channel_kind,
                endpoint,
                headers,
                payload,
            },
            heartbeat: seconds("backport-heartbeat-period", "valueUnsignedInt")
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            timeout: Duration::from_secs(
                seconds("backport-timeout", "valueUnsignedInt")
                    .filter(|s| *s > 0)
                    .unwrap_or(10)
                    .min(120),
            ),
            max_count: seconds("backport-max-count", "valuePositiveInt")
                .map(|n| n.clamp(1, 1000) as usize)
                .unwrap_or(1),
            content,
            parameters,
        })
    }

    /// The topic URL, or the classic criteria.
    pub fn topic_url(&self) -> Option<&str> {
        match &self.kind {
            Kind::Topic { topic, .. } => Some(&topic.url),
            Kind::Criteria { .. } => None,
        }
    }
}

/// The parameter codes of a query (`code:not=x&patient=p` → `code`, `patient`).
fn named_parameters(resource_type: &str, query: &str, into: &mut Vec<(String, String)>) {
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        let code = name.split(':').next().unwrap_or_default();
        if !code.is_empty() {
            into.push((resource_type.to_owned(), code.to_owned()));
        }
    }
}

/// A filter criterion of a topic-based subscription: `param=value` on the topic's type, or
/// `Type?param=value`.
fn topic_filter(
    registry: &Registry,
    topic: &Topic,
    text: &str,
) -> Result<(String, Filter), String> {
    let types: Vec<&str> = topic
        .triggers
        .iter()
        .filter_map(|t| t.resource_type.as_deref())
        .collect();
    let (resource_type, query) = match text.split_once('?') {
        Some((resource_type, query)) => (resource_type.to_owned(), query),
        None => match types.first() {
            Some(only) if types.iter().all(|t| t == only) => ((*only).to_owned(), text),
            _ => {
                return Err(format!(
                    "filter '{text}': this topic covers any type, so name it ('Observation?{text}')"
                ))
            }
        },
    };
    let any_type = topic.triggers.iter().any(|t| t.resource_type.is_none());
    if !any_type && !types.contains(&resource_type.as_str()) {
        return Err(format!(
            "filter '{text}': the topic raises no {resource_type} events"
        ));
    }
    if fjord_model::resource_type(&resource_type).is_none() {
        return Err(format!("filter '{text}': unknown resource type"));
    }
    let filter = decidable(registry, &resource_type, query, text)?;
    Ok((resource_type, filter))
}

/// Search parameters as a filter the matcher can decide on a version alone.
fn decidable(
    registry: &Registry,
    resource_type: &str,
    query: &str,
    text: &str,
) -> Result<Filter, String> {
    let filter =
        parse_filter(registry, resource_type, query).map_err(|e| format!("'{text}': {e}"))?;
    if filter
        .holds_on(resource_type, "", &Default::default())
        .is_none()
    {
        return Err(format!(
            "'{text}': chains, _has, _text, _content, :text, terminology modifiers and _lastUpdated \
             cannot be matched on a single version"
        ));
    }
    Ok(filter)
}

/// Refuses, before they are stored, Subscriptions Fjord could not serve.
#[derive(Debug)]
pub struct SubscriptionCheck {
    pub(crate) topics: Arc<Topics>,
}

impl WriteCheck for SubscriptionCheck {
    fn check(&self, registry: &Registry, resource: &Value) -> Result<(), String> {
        Spec::read(registry, &self.topics, resource).map(drop)
    }
}
