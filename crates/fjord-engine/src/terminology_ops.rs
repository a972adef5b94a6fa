//! The terminology operations over a tenant's conformance resources and base R4's required
//! value sets: `ValueSet/$expand`, `CodeSystem/$lookup`, `ValueSet/$validate-code` and
//! `CodeSystem/$validate-code`. The expansions are the ones validation uses (and caches per
//! caller); what Fjord cannot enumerate (a system it does not have, an unsupported filter) is
//! refused, never answered empty.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::interactions::{format_instant, now};
use crate::{Caller, Engine, EngineError, Permission};

/// What `$validate-code` is asked.
#[derive(Debug, Default)]
pub struct CodeQuestion<'a> {
    /// The value set (for `ValueSet/$validate-code`) or code system (`CodeSystem/…`) URL.
    pub url: Option<&'a str>,
    /// The instance named in the path, instead of `url`.
    pub id: Option<&'a str>,
    pub system: Option<&'a str>,
    pub code: &'a str,
    pub display: Option<&'a str>,
}

impl Engine {
    /// The canonical URL of `url`, or of the `resource_type` instance `id`.
    async fn canonical_of(
        &self,
        caller: &Caller,
        resource_type: &str,
        url: Option<&str>,
        id: Option<&str>,
    ) -> Result<String, EngineError> {
        self.authorize_any(
            caller,
            resource_type,
            &[Permission::Read, Permission::Search],
        )?;
        if let Some(url) = url {
            return Ok(url.to_owned());
        }
        let id = id.ok_or_else(|| EngineError::BadRequest("a url parameter is needed".into()))?;
        let stored = self.read(caller, resource_type, id).await?;
        let body: Value = serde_json::from_str(stored.body.as_deref().unwrap_or("{}"))
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        body["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| EngineError::Rejected(format!("{resource_type}/{id} has no url")))
    }

    /// `$expand`: the value set with an `expansion` of every code (and display, where known).
    pub async fn expand_value_set(
        &self,
        caller: &Caller,
        url: Option<&str>,
        id: Option<&str>,
    ) -> Result<Value, EngineError> {
        let url = self.canonical_of(caller, "ValueSet", url, id).await?;
        let conformance = self.conformance(caller).await?;
        let known = conformance.value_set(&url).is_some()
            || fjord_definitions::required_value_set(&url).is_some();
        if !known {
            return Err(EngineError::NotFound(format!("ValueSet {url}")));
        }
        let expansion = conformance.expand(&url).ok_or_else(|| {
            EngineError::Rejected(format!(
                "the value set {url} names codes Fjord cannot enumerate (a code system it does \
                 not have, or a filter it does not support)"
            ))
        })?;
        let contains: Vec<Value> = expansion
            .codes()
            .into_iter()
            .map(|(system, code)| {
                let mut entry = json!({ "system": system, "code": code });
                if let Some(display) = conformance.display(system, code) {
                    entry["display"] = json!(display);
                }
                entry
            })
            .collect();
        let mut value_set = conformance.value_set(&url).cloned().unwrap_or_else(
            || json!({ "resourceType": "ValueSet", "url": url, "status": "active" }),
        );
        if let Some(object) = value_set.as_object_mut() {
            object.remove("meta");
            object.remove("text");
            object.remove("compose");
        }
        value_set["expansion"] = json!({
            "identifier": format!("urn:uuid:{}", Uuid::new_v4()),
            "timestamp": format_instant(now()),
            "total": contains.len(),
            "contains": contains,
        });
        Ok(value_set)
    }

    /// `$lookup`: what an installed code system says of a code, as `Parameters`.
    pub async fn lookup_code(
        &self,
        caller: &Caller,
        system: &str,
        code: &str,
    ) -> Result<Value, EngineError> {
        self.authorize_any(
            caller,
            "CodeSystem",
            &[Permission::Read, Permission::Search],
        )?;
        let conformance = self.conformance(caller).await?;
        let info = conformance
            .lookup(system, code)
            .ok_or_else(|| EngineError::NotFound(format!("code {code} in {system}")))?;
        let mut parameters = vec![
            json!({ "name": "name", "valueString": info.name.unwrap_or_else(|| system.to_owned()) }),
        ];
        if let Some(version) = info.version {
            parameters.push(json!({ "name": "version", "valueString": version }));
        }
        if let Some(display) = info.display {
            parameters.push(json!({ "name": "display", "valueString": display }));
        }
        for parent in info.parents {
            parameters.push(json!({ "name": "property", "part": [
                { "name": "code", "valueCode": "parent" },
                { "name": "value", "valueCode": parent },
            ] }));
        }
        Ok(json!({ "resourceType": "Parameters", "parameter": parameters }))
    }

    /// `$validate-code` against a value set (`in_value_set`) or a code system: `result`,
    /// `message` when false, `display` where known.
    pub async fn validate_code(
        &self,
        caller: &Caller,
        in_value_set: bool,
        question: CodeQuestion<'_>,
    ) -> Result<Value, EngineError> {
        let resource_type = if in_value_set {
            "ValueSet"
        } else {
            "CodeSystem"
        };
        let url = self
            .canonical_of(caller, resource_type, question.url, question.id)
            .await?;
        let conformance = self.conformance(caller).await?;
        let code = question.code;
        let (result, display, message) = if in_value_set {
            let expansion = conformance.expand(&url).ok_or_else(|| {
                EngineError::Rejected(format!("the value set {url} cannot be enumerated here"))
            })?;
            let found = match question.system {
                Some(system) => expansion.contains(system, code),
                None => expansion.contains_code(code),
            };
            let display = question.system.and_then(|s| conformance.display(s, code));
            (
                found,
                display,
                format!("{code} is not in the value set {url}"),
            )
        } else {
            if conformance.code_system(&url).is_none() {
                return Err(EngineError::NotFound(format!("CodeSystem {url}")));
            }
            let info = conformance.lookup(&url, code);
            let display = info.as_ref().and_then(|i| i.display.clone());
            (
                info.is_some(),
                display,
                format!("{code} is not a code of {url}"),
            )
        };
        let mut parameters = vec![json!({ "name": "result", "valueBoolean": result })];
        match (&display, question.display) {
            (Some(known), Some(given)) if result && known != given => parameters.push(json!({
                "name": "message",
                "valueString": format!("the display of {code} is '{known}', not '{given}'"),
            })),
            _ if !result => parameters.push(json!({ "name": "message", "valueString": message })),
            _ => {}
        }
        if let Some(display) = display {
            parameters.push(json!({ "name": "display", "valueString": display }));
        }
        Ok(json!({ "resourceType": "Parameters", "parameter": parameters }))
    }
}
