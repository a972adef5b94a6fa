//! The AuditEvent Fjord writes for an interaction: who did it ([`Actor`]) and what it did
//! ([`Audited`]), in the shape of the Norwegian AuditEvent profile.

use serde_json::{json, Map, Value};

use super::{Audited, Notification, AUDIT_EVENT, CROSS_TENANT, EXPORT, FJORD_AUDIT, IMPORT};
use crate::interactions::{format_instant, now};
use crate::Caller;

const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";

const PATIENT_EXTENSION: &str =
    "http://hl7.no/fhir/StructureDefinition/auditevent-patient-extension";

/// Who an event says acted, and where: everything an event takes from its caller, so that two
/// interactions of equal actors differ only in what they did ([`super::buffer`] merges reads
/// by this).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Actor {
    /// The tenant (`source.site`).
    site: String,
    /// The token's user and client; none without a token.
    principal: Option<Principal>,
    /// The client's network address.
    address: Option<String>,
    /// The local account running a `fjord` command.
    operator: Option<String>,
    /// Another tenant's caller under a sharing grant.
    shared: Option<Sharing>,
}

/// What an event names of a token's principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Principal {
    issuer: String,
    subject: Option<String>,
    client_id: Option<String>,
    fhir_user: Option<String>,
    roles: Vec<String>,
}

/// What an event names of a sharing grant's use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Sharing {
    home_tenant: String,
    purpose: String,
}

impl Actor {
    pub(crate) fn of(caller: &Caller) -> Actor {
        Actor {
            site: caller.tenant.id.clone(),
            principal: caller.access.principal().map(|p| Principal {
                issuer: p.issuer.clone(),
                subject: p.subject.clone(),
                client_id: p.client_id.clone(),
                fhir_user: p.fhir_user.clone(),
                roles: p.roles.clone(),
            }),
            address: caller.address.clone(),
            operator: caller.operator.clone(),
            shared: caller.access.sharing().map(|s| Sharing {
                home_tenant: s.home_tenant.clone(),
                purpose: s.purpose.clone(),
            }),
        }
    }
}

/// The AuditEvent of an interaction by `actor`, its elements in the specification's order.
pub(super) fn audit_event(actor: &Actor, audited: &Audited) -> Value {
    let principal = actor.principal.as_ref();
    let mut user = Map::new();
    let who = match principal {
        Some(principal) => match (&principal.fhir_user, &principal.subject) {
            (Some(fhir_user), _) => json!({ "reference": fhir_user }),
            (None, Some(subject)) => {
                json!({ "identifier": { "system": principal.issuer, "value": subject } })
            }
            (None, None) => json!({ "display": "unnamed subject" }),
        },
        None if audited.unauthenticated => json!({ "display": "no valid access token" }),
        None => match &actor.operator {
            Some(operator) => {
                user.insert("name".into(), json!(format!("command line ({operator})")));
                json!({ "display": format!("{operator}, at the fjord command line") })
            }
            None => json!({ "display": "anyone (authentication off)" }),
        },
    };
    if let Some(principal) = principal.filter(|p| !p.roles.is_empty()) {
        let roles: Vec<Value> = principal
            .roles
            .iter()
            .map(|r| json!({ "text": r }))
            .collect();
        user.insert("role".into(), json!(roles));
    }
    user.insert("who".into(), who);
    if let Some(subject) = principal.and_then(|p| p.subject.as_ref()) {
        user.insert("altId".into(), json!(subject));
    }
    user.insert("requestor".into(), json!(true));
    if let Some(address) = &actor.address {
        user.insert("network".into(), json!({ "address": address, "type": "2" }));
    }
    let mut agents = vec![Value::Object(user)];
    if let Some(client) = principal.and_then(|p| p.client_id.as_ref()) {
        agents.push(json!({
            "type": { "text": "client application" },
            "who": { "identifier": { "system": "urn:fjord:oauth-client", "value": client } },
            "requestor": false,
        }));
    }
    if let Some(Notification {
        destination: Some(destination),
        ..
    }) = &audited.notification
    {
        agents.push(json!({
            "type": { "coding": [{ "system": DICOM, "code": "110152", "display": "Destination Role ID" }] },
            "who": { "display": "the subscription's endpoint" },
            "requestor": false,
            "network": { "address": destination, "type": "5" },
        }));
    }
    let entity_type = |code: &str| json!({ "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": code });
    let role = |code: &str| json!({ "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": code });
    let mut entities: Vec<Value> = audited
        .entities
        .iter()
        .map(|reference| json!({ "what": { "reference": reference }, "type": entity_type("2") }))
        .collect();
    if let Some(notification) = &audited.notification {
        entities.insert(
            0,
            json!({
                "what": { "reference": notification.subscription },
                "type": entity_type("2"),
                "role": role("9"),
            }),
        );
    }
    if let Some(query) = &audited.query {
        use base64::Engine as _;
        entities.push(json!({
            "type": entity_type("2"),
            "role": role("24"),
            "query": base64::engine::general_purpose::STANDARD.encode(query),
        }));
    }
    for patient in &audited.patients {
        entities.push(json!({
            "what": { "reference": patient },
            "type": entity_type("1"),
            "role": role("1"),
        }));
    }
    let mut event = Map::new();
    event.insert("resourceType".into(), json!(AUDIT_EVENT));
    if let [patient] = audited.patients.iter().collect::<Vec<_>>().as_slice() {
        event.insert(
            "extension".into(),
            json!([{ "url": PATIENT_EXTENSION, "valueReference": { "reference": patient } }]),
        );
    }
    if audited.notification.is_some() || audited.interaction == EXPORT {
        event.insert(
            "type".into(),
            json!({ "system": DICOM, "code": "110106", "display": "Export" }),
        );
    } else if audited.interaction == IMPORT {
        event.insert(
            "type".into(),
            json!({ "system": DICOM, "code": "110107", "display": "Import" }),
        );
    } else {
        event.insert(
            "type".into(),
            json!({
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "RESTful Operation",
            }),
        );
        event.insert(
            "subtype".into(),
            json!([{ "system": "http://hl7.org/fhir/restful-interaction", "code": audited.interaction }]),
        );
    }
    event.insert("action".into(), json!(audited.action()));
    let recorded = now();
    if let Some(since) = audited.since {
        // The interactions the event records (notifications, reads) took place within this
        // period.
        event.insert(
            "period".into(),
            json!({ "start": format_instant(since), "end": format_instant(recorded) }),
        );
    }
    event.insert("recorded".into(), json!(format_instant(recorded)));
    match &audited.failure {
        None => {
            event.insert("outcome".into(), json!("0"));
        }
        Some((code, why)) => {
            event.insert("outcome".into(), json!(code.to_string()));
            event.insert("outcomeDesc".into(), json!(why));
        }
    }
    if let Some(shared) = &actor.shared {
        mark_cross_tenant(&mut event, &mut agents, shared);
    }
    event.insert("agent".into(), json!(agents));
    event.insert(
        "source".into(),
        json!({
            "site": actor.site,
            "observer": { "display": "Fjord FHIR server" },
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        }),
    );
    if !entities.is_empty() {
        event.insert("entity".into(), json!(entities));
    }
    Value::Object(event)
}

/// Marks an event of an access by another tenant's caller, under a sharing grant: the subtype
/// `urn:fjord:audit|cross-tenant`, the purpose the token asserted, and the caller's home
/// tenant as an agent beside the user.
fn mark_cross_tenant(event: &mut Map<String, Value>, agents: &mut Vec<Value>, shared: &Sharing) {
    let marker = json!({
        "system": FJORD_AUDIT,
        "code": CROSS_TENANT,
        "display": "another tenant's caller, under the sharing policy",
    });
    match event.get_mut("subtype").and_then(Value::as_array_mut) {
        Some(subtypes) => subtypes.push(marker),
        None => {
            event.insert("subtype".into(), json!([marker]));
        }
    }
    let coding = match shared.purpose.split_once('|') {
        Some((system, code)) => json!({ "system": system, "code": code }),
        None => json!({ "code": shared.purpose }),
    };
    event.insert(
        "purposeOfEvent".into(),
        json!([{ "coding": [coding], "text": shared.purpose }]),
    );
    agents.push(json!({
        "type": { "text": "the caller's home tenant" },
        "who": { "identifier": { "system": "urn:fjord:tenant", "value": shared.home_tenant } },
        "requestor": false,
    }));
}
