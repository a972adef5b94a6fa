//! The audit trail: an AuditEvent for every interaction, stored as a resource of the tenant, so
//! audit readers search it like any other (`user/AuditEvent.rs`), and a patient-scoped token
//! finds the events of its own patient (an event names the patients it concerns as entities).
//!
//! A write records its event in its own transaction: no change without its trace, no trace of
//! a change that rolled back. Reads and refusals are buffered and written by
//! [`Engine::flush_audit`], which the server runs every second and at shutdown. AuditEvents are
//! never changed or deleted, not even by the tenant's own administrators; a client with a scope
//! to create them may add its own. They are not the tenant's data: they hold back no delete,
//! and system-wide history and searches (and `$everything`) leave them out unless `_type`
//! names them.
//!
//! The shape follows the Norwegian AuditEvent profile (`no-domain-Trustframework-Auditevent`)
//! where Fjord knows the facts: the patient extension, `agent.who` as the user (`fhirUser`,
//! else the token's subject) with the client and role claims beside it, `source` the server.

use std::collections::BTreeSet;
use std::sync::Mutex;

use fjord_model::{Format, Resource};
use fjord_store::{Expected, Op, StoredVersion, Tenant};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::interactions::{format_instant, now};
use crate::{Caller, Engine, EngineError};

pub(crate) const AUDIT_EVENT: &str = "AuditEvent";

const PATIENT_EXTENSION: &str =
    "http://hl7.no/fhir/StructureDefinition/auditevent-patient-extension";

/// What an interaction did, for its AuditEvent.
#[derive(Debug, Clone)]
pub struct Audited {
    /// The RESTful interaction (`read`, `search-type`, `create`, `transaction`, …).
    pub interaction: &'static str,
    /// The resources read or written, as `Type/id/_history/n` or `Type/id`.
    pub entities: Vec<String>,
    /// The query of a search, as the client sent it.
    pub query: Option<String>,
    /// Patients the resources belong to (`Patient/id`).
    pub patients: BTreeSet<String>,
    /// `None` for success, else why it failed and whether the client (4) or the server (8) did.
    pub failure: Option<(u8, String)>,
    /// The request had no valid token (its caller is no one).
    pub unauthenticated: bool,
}

impl Audited {
    pub fn new(interaction: &'static str) -> Audited {
        Audited {
            interaction,
            entities: Vec::new(),
            query: None,
            patients: BTreeSet::new(),
            failure: None,
            unauthenticated: false,
        }
    }

    /// A search's query, and the patients of what it found.
    pub fn searched<'v>(
        mut self,
        query: String,
        found: impl IntoIterator<Item = &'v StoredVersion>,
    ) -> Audited {
        self.query = Some(query);
        for version in found {
            if let Some(body) = version.body.as_deref() {
                self.patients
                    .extend(patients_of(&version.resource_type, &version.id, body));
            }
        }
        self
    }

    /// A request refused before it had a caller (no token, a bad one).
    pub fn refused(mut self, why: String) -> Audited {
        self.failure = Some((4, why));
        self.unauthenticated = true;
        self
    }

    /// Names a stored version and the patient it belongs to.
    pub fn version(mut self, version: &StoredVersion) -> Audited {
        self.add(version);
        self
    }

    pub fn add(&mut self, version: &StoredVersion) {
        self.entities.push(format!(
            "{}/{}/_history/{}",
            version.resource_type, version.id, version.version
        ));
        if let Some(body) = version.body.as_deref() {
            self.patients
                .extend(patients_of(&version.resource_type, &version.id, body));
        }
    }

    pub fn failed(mut self, error: &EngineError) -> Audited {
        let code = match error {
            EngineError::Store(_) | EngineError::Internal(_) => 8,
            _ => 4,
        };
        self.failure = Some((code, error.to_string()));
        self
    }

    fn action(&self) -> &'static str {
        match self.interaction {
            "create" => "C",
            "update" | "patch" => "U",
            "delete" => "D",
            "read" | "vread" | "history-instance" | "history-type" | "history-system"
            | "search-type" | "search-system" | "search-compartment" => "R",
            _ => "E",
        }
    }
}

/// Events waiting to be written, shared by the engines of a process.
#[derive(Debug, Default)]
pub(crate) struct AuditBuffer {
    pending: Mutex<Vec<(Tenant, Value)>>,
}

impl Caller {
    /// Whether the caller may write this version of a resource of this type: an AuditEvent is
    /// created (by Fjord, or by a client with a scope to create one) and then never changed.
    pub(crate) fn may_write(
        &self,
        resource_type: &str,
        expected: Expected,
        delete: bool,
    ) -> Result<(), EngineError> {
        if resource_type == AUDIT_EVENT
            && !self.internal
            && (delete || expected != Expected::Absent)
        {
            return Err(EngineError::Immutable(
                "an AuditEvent is never changed or deleted".into(),
            ));
        }
        Ok(())
    }
}

impl Engine {
    /// Records a read or a refusal: written within a second by [`Engine::flush_audit`].
    pub fn audit(&self, caller: &Caller, audited: Audited) {
        let event = audit_event(caller, &audited);
        self.shared
            .audit
            .pending
            .lock()
            .expect("audit buffer")
            .push((caller.tenant.clone(), event));
    }

    /// Records the outcome of an interaction: failures are buffered, successful writes have
    /// recorded theirs in their transaction, successful reads are recorded by `on_success`.
    pub fn audit_outcome<T>(
        &self,
        caller: &Caller,
        interaction: &'static str,
        result: &Result<T, EngineError>,
        on_success: impl FnOnce(&T) -> Option<Audited>,
    ) {
        match result {
            Ok(value) => {
                if let Some(audited) = on_success(value) {
                    self.audit(caller, audited);
                }
            }
            Err(error) => self.audit(caller, Audited::new(interaction).failed(error)),
        }
    }

    /// Writes every buffered event, one transaction per tenant.
    pub async fn flush_audit(&self) -> Result<usize, EngineError> {
        let pending = std::mem::take(&mut *self.shared.audit.pending.lock().expect("audit buffer"));
        let mut written = 0;
        let mut by_tenant: Vec<(Tenant, Vec<Value>)> = Vec::new();
        for (tenant, event) in pending {
            match by_tenant.iter_mut().find(|(t, _)| t.key == tenant.key) {
                Some((_, events)) => events.push(event),
                None => by_tenant.push((tenant, vec![event])),
            }
        }
        for (tenant, events) in by_tenant {
            let caller = Caller::internal(tenant);
            let mut unit = self.begin(&caller).await?;
            let count = events.len();
            let result = async {
                for event in events {
                    self.write_audit_event(&caller, &mut unit, event).await?;
                }
                Ok(())
            }
            .await;
            self.finish(&caller, unit, result).await?;
            written += count;
        }
        Ok(written)
    }

    /// Adds the AuditEvent of what `unit` wrote to it, before it commits.
    pub(crate) async fn audit_unit(
        &self,
        caller: &Caller,
        unit: &mut crate::integrity::Unit<'_>,
    ) -> Result<(), EngineError> {
        let Some(audited) = unit.audited.take() else {
            return Ok(());
        };
        let event = audit_event(caller, &audited);
        self.write_audit_event(&Caller::internal(caller.tenant.clone()), unit, event)
            .await
    }

    async fn write_audit_event(
        &self,
        internal: &Caller,
        unit: &mut crate::integrity::Unit<'_>,
        mut event: Value,
    ) -> Result<(), EngineError> {
        let id = Uuid::new_v4().to_string();
        event["id"] = json!(id);
        let resource = Resource::parse(event.to_string().as_bytes(), Format::Json, &self.limits)
            .map_err(|e| EngineError::Internal(format!("an AuditEvent Fjord made: {e}")))?;
        let prepared = self
            .prepare(internal, AUDIT_EVENT, &id, Some(resource), Expected::Absent)
            .await?;
        if unit.write_version(&prepared.new_version()).await? != fjord_store::WriteOutcome::Written
        {
            return Err(EngineError::Internal("an AuditEvent id was taken".into()));
        }
        Ok(())
    }
}

/// What a unit wrote, for its AuditEvent: the interaction named by its versions' operations.
pub(crate) fn note_write(
    audited: &mut Option<Audited>,
    resource_type: &str,
    id: &str,
    version: i64,
    op: Op,
    body: Option<&Value>,
) {
    let interaction = match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Delete => "delete",
    };
    let audited = audited.get_or_insert_with(|| Audited::new(interaction));
    if audited.interaction != interaction {
        audited.interaction = "transaction";
    }
    audited
        .entities
        .push(format!("{resource_type}/{id}/_history/{version}"));
    if let Some(body) = body {
        audited
            .patients
            .extend(patients_of_value(resource_type, id, body));
    }
}

/// The patients a resource belongs to: itself, or the patient its `subject`, `patient` or
/// `beneficiary` names.
fn patients_of(resource_type: &str, id: &str, body: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(body) {
        Ok(value) => patients_of_value(resource_type, id, &value),
        Err(_) => Vec::new(),
    }
}

fn patients_of_value(resource_type: &str, id: &str, value: &Value) -> Vec<String> {
    if resource_type == "Patient" {
        return vec![format!("Patient/{id}")];
    }
    ["subject", "patient", "beneficiary"]
        .iter()
        .filter_map(|name| value[name]["reference"].as_str())
        .filter(|reference| reference.starts_with("Patient/"))
        .map(str::to_owned)
        .collect()
}

/// The AuditEvent of an interaction by `caller`.
fn audit_event(caller: &Caller, audited: &Audited) -> Value {
    let principal = caller.access.principal();
    let mut user = json!({ "requestor": true });
    match principal {
        Some(principal) => {
            user["who"] = match (&principal.fhir_user, &principal.subject) {
                (Some(fhir_user), _) => json!({ "reference": fhir_user }),
                (None, Some(subject)) => {
                    json!({ "identifier": { "system": principal.issuer, "value": subject } })
                }
                (None, None) => json!({ "display": "unnamed subject" }),
            };
            if let Some(subject) = &principal.subject {
                user["altId"] = json!(subject);
            }
            if !principal.roles.is_empty() {
                user["role"] = json!(principal
                    .roles
                    .iter()
                    .map(|r| json!({ "text": r }))
                    .collect::<Vec<_>>());
            }
        }
        None if audited.unauthenticated => {
            user["who"] = json!({ "display": "no valid access token" })
        }
        None => user["who"] = json!({ "display": "anyone (authentication off)" }),
    }
    if let Some(address) = &caller.address {
        user["network"] = json!({ "address": address, "type": "2" });
    }
    let mut agents = vec![user];
    if let Some(client) = principal.and_then(|p| p.client_id.as_ref()) {
        agents.push(json!({
            "type": { "text": "client application" },
            "who": { "identifier": { "system": "urn:fjord:oauth-client", "value": client } },
            "requestor": false,
        }));
    }
    let mut entities: Vec<Value> = audited
        .entities
        .iter()
        .map(|reference| {
            json!({
                "what": { "reference": reference },
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2" },
            })
        })
        .collect();
    if let Some(query) = &audited.query {
        use base64::Engine as _;
        entities.push(json!({
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24" },
            "query": base64::engine::general_purpose::STANDARD.encode(query),
        }));
    }
    for patient in &audited.patients {
        entities.push(json!({
            "what": { "reference": patient },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1" },
        }));
    }
    let mut event = json!({
        "resourceType": AUDIT_EVENT,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{ "system": "http://hl7.org/fhir/restful-interaction", "code": audited.interaction }],
        "action": audited.action(),
        "recorded": format_instant(now()),
        "outcome": "0",
        "agent": agents,
        "source": {
            "site": caller.tenant.id,
            "observer": { "display": "Fjord FHIR server" },
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        },
    });
    if let Some((code, why)) = &audited.failure {
        event["outcome"] = json!(code.to_string());
        event["outcomeDesc"] = json!(why);
    }
    if !entities.is_empty() {
        event["entity"] = json!(entities);
    }
    if let [patient] = audited.patients.iter().collect::<Vec<_>>().as_slice() {
        event["extension"] = json!([{
            "url": PATIENT_EXTENSION,
            "valueReference": { "reference": patient },
        }]);
    }
    event
}
