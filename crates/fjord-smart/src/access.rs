//! What a caller may do, as filters over the search index: a `patient/` scope is the context
//! patient's compartment, a granular scope's parameters are the filters they parse to, and the
//! scopes of a token combine as a union (parameters within one scope as AND). The engine adds
//! these filters to every query before it runs, and checks a version about to be written against
//! them in memory, so nothing is filtered after the fact.

use fjord_search::{Filter, Registry, Scope as SearchScope};

use crate::scope::{Context, Permission, Permissions, Scope};
use crate::{AuthError, Shared};

/// Who is calling, as the token says: recorded in audit, never used to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub issuer: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// `fhirUser`: a reference to the user's Practitioner, Patient, … resource.
    pub fhir_user: Option<String>,
    /// Role claims (`hso:subject:application-role:*` and the like), as `claim=value`.
    pub roles: Vec<String>,
    /// The scope string as granted.
    pub scope: String,
    /// `jti`: a subscription stops when the token that made it is revoked.
    #[serde(default)]
    pub token_id: Option<String>,
}

/// An [`Access`] as kept beside what it governs (a Subscription acts for its creator's token
/// long after the request): the token's grant, rebuilt by [`Access::from_record`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessRecord {
    unrestricted: bool,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default)]
    principal: Option<Principal>,
    #[serde(default)]
    shared: Option<Shared>,
}

/// A caller's access: everything (no authentication, or a trusted internal task), or what a
/// token's scopes grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    grants: Option<Grants>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grants {
    scopes: Vec<Scope>,
    /// The launch context's patient (`patient` claim).
    patient: Option<String>,
    principal: Principal,
    /// Another tenant's caller reading under a sharing grant: the scopes are narrowed to it.
    shared: Option<Shared>,
}

/// What the scopes say about one permission on one resource type.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant<'a> {
    /// No scope grants it.
    Denied,
    /// Some scope grants it without conditions.
    Full,
    /// Only where one of these holds.
    Limited(Vec<Rule<'a>>),
}

/// One scope's condition on a resource: in the patient's compartment (`patient/` scopes) and
/// matching the scope's query.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<'a> {
    /// `Some` for a `patient/` scope; `Some(None)` when the token names no patient.
    pub patient: Option<Option<&'a str>>,
    pub query: &'a [(String, String)],
}

impl Access {
    /// No restriction: authentication off, or Fjord's own background work.
    pub fn unrestricted() -> Access {
        Access { grants: None }
    }

    /// What a validated token grants.
    pub fn granted(scopes: Vec<Scope>, patient: Option<String>, principal: Principal) -> Access {
        Access {
            grants: Some(Grants {
                scopes,
                patient,
                principal,
                shared: None,
            }),
        }
    }

    /// The access narrowed to what a sharing grant opens: reading and searching its resource
    /// types, within the token's own scopes. A wildcard scope becomes one scope per type.
    pub fn shared(self, shared: Shared) -> Access {
        let Some(mut grants) = self.grants else {
            return self;
        };
        let readable = Permissions::NONE
            .with(Permission::Read)
            .with(Permission::Search);
        grants.scopes = grants
            .scopes
            .into_iter()
            .flat_map(|scope| {
                let permissions = scope.permissions.intersection(readable);
                let types: Vec<String> = match &scope.resource_type {
                    _ if permissions == Permissions::NONE => Vec::new(),
                    None => shared.resource_types.clone(),
                    Some(t) if shared.resource_types.contains(t) => vec![t.clone()],
                    Some(_) => Vec::new(),
                };
                types.into_iter().map(move |t| Scope {
                    resource_type: Some(t),
                    permissions,
                    ..scope.clone()
                })
            })
            .collect();
        grants.shared = Some(shared);
        Access {
            grants: Some(grants),
        }
    }

    /// The sharing grant the caller reads under, when its token is another tenant's.
    pub fn sharing(&self) -> Option<&Shared> {
        self.grants.as_ref()?.shared.as_ref()
    }

    /// The access as JSON, for [`Access::from_record`].
    pub fn record(&self) -> String {
        let record = AccessRecord {
            unrestricted: self.grants.is_none(),
            patient: self.grants.as_ref().and_then(|g| g.patient.clone()),
            principal: self.grants.as_ref().map(|g| g.principal.clone()),
            shared: self.grants.as_ref().and_then(|g| g.shared.clone()),
        };
        serde_json::to_string(&record).expect("an access record serializes")
    }

    /// The access a [`record`](Access::record) was made of: the same scopes (parsed again from
    /// the granted scope string), patient and principal.
    pub fn from_record(text: &str) -> Result<Access, String> {
        let record: AccessRecord =
            serde_json::from_str(text).map_err(|e| format!("unreadable access record: {e}"))?;
        if record.unrestricted {
            return Ok(Access::unrestricted());
        }
        let principal = record
            .principal
            .ok_or("an access record without its principal")?;
        let access = Access::granted(
            crate::scope::parse_scopes(principal.scope.split_whitespace()),
            record.patient,
            principal,
        );
        Ok(match record.shared {
            Some(shared) => access.shared(shared),
            None => access,
        })
    }

    pub fn is_unrestricted(&self) -> bool {
        self.grants.is_none()
    }

    pub fn principal(&self) -> Option<&Principal> {
        self.grants.as_ref().map(|g| &g.principal)
    }

    /// The launch context's patient, if the token names one.
    pub fn patient(&self) -> Option<&str> {
        self.grants.as_ref()?.patient.as_deref()
    }

    /// What the scopes grant of `permission` on `resource_type`.
    pub fn grant(&self, permission: Permission, resource_type: &str) -> Grant<'_> {
        let Some(grants) = &self.grants else {
            return Grant::Full;
        };
        let mut rules = Vec::new();
        for scope in grants
            .scopes
            .iter()
            .filter(|s| s.permissions.contains(permission) && s.covers(resource_type))
        {
            let patient = match scope.context {
                Context::Patient => Some(grants.patient.as_deref()),
                Context::User | Context::System => None,
            };
            if patient.is_none() && scope.query.is_empty() {
                return Grant::Full;
            }
            rules.push(Rule {
                patient,
                query: &scope.query,
            });
        }
        if rules.is_empty() {
            Grant::Denied
        } else {
            Grant::Limited(rules)
        }
    }

    /// Whether some scope grants `permission` on every resource type without conditions: what
    /// tenant-wide operations (`$reindex`) ask.
    pub fn grants_everything(&self, permission: Permission) -> bool {
        match &self.grants {
            None => true,
            Some(grants) => grants.scopes.iter().any(|s| {
                s.context != Context::Patient
                    && s.resource_type.is_none()
                    && s.query.is_empty()
                    && s.permissions.contains(permission)
            }),
        }
    }

    /// The filter a resource of `resource_type` must match for `permission`: `Ok(None)` when
    /// no condition applies, `Err` when no scope grants it at all.
    pub fn filter(
        &self,
        registry: &Registry,
        permission: Permission,
        resource_type: &str,
    ) -> Result<Option<Filter>, AuthError> {
        match self.grant(permission, resource_type) {
            Grant::Full => Ok(None),
            Grant::Denied => Err(AuthError::InsufficientScope(format!(
                "no scope grants {} on {resource_type}",
                describe(permission)
            ))),
            Grant::Limited(rules) => Ok(Some(Filter::Any(
                rules
                    .iter()
                    .filter_map(|rule| rule_filter(registry, resource_type, rule))
                    .collect(),
            ))),
        }
    }
}

/// A rule as a filter; `None` when it can match nothing of this type (a type outside the
/// patient compartment, no patient in the token, a query that does not parse).
fn rule_filter(registry: &Registry, resource_type: &str, rule: &Rule<'_>) -> Option<Filter> {
    let mut all = Vec::new();
    if let Some(patient) = rule.patient {
        let compartment = registry
            .compartment_filter("Patient", patient?, resource_type)
            .ok()??;
        all.push(compartment);
    }
    if !rule.query.is_empty() {
        match registry.parse_query(SearchScope::Type(resource_type), rule.query, true) {
            Ok(query) => all.extend(query.filters),
            Err(error) => {
                tracing::warn!(%error, resource_type, "a granular scope's query does not parse; it grants nothing");
                return None;
            }
        }
    }
    Some(Filter::All(all))
}

fn describe(permission: Permission) -> &'static str {
    match permission {
        Permission::Create => "create (c)",
        Permission::Read => "read (r)",
        Permission::Update => "update (u)",
        Permission::Delete => "delete (d)",
        Permission::Search => "search (s)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::parse_scopes;

    fn access(scopes: &str, patient: Option<&str>) -> Access {
        Access::granted(
            parse_scopes(scopes.split(' ')),
            patient.map(str::to_owned),
            Principal::default(),
        )
    }

    #[test]
    fn scopes_combine_as_a_union() {
        let a = access("patient/Observation.rs user/Observation.r", Some("p1"));
        assert_eq!(a.grant(Permission::Read, "Observation"), Grant::Full);
        assert!(matches!(
            a.grant(Permission::Search, "Observation"),
            Grant::Limited(rules) if rules.len() == 1
        ));
        assert_eq!(a.grant(Permission::Create, "Observation"), Grant::Denied);
        assert_eq!(a.grant(Permission::Read, "Patient"), Grant::Denied);
        assert_eq!(
            Access::unrestricted().grant(Permission::Delete, "X"),
            Grant::Full
        );
    }

    #[test]
    fn an_access_record_rebuilds_the_same_access() {
        let principal = Principal {
            issuer: "https://idp".into(),
            subject: Some("u1".into()),
            scope: "patient/Observation.rs openid".into(),
            token_id: Some("j1".into()),
            ..Principal::default()
        };
        let granted = Access::granted(
            parse_scopes(principal.scope.split(' ')),
            Some("p1".into()),
            principal,
        );
        assert_eq!(Access::from_record(&granted.record()).unwrap(), granted);
        let open = Access::unrestricted();
        assert_eq!(Access::from_record(&open.record()).unwrap(), open);
        assert!(Access::from_record("{\"unrestricted\":false}").is_err());
    }

    #[test]
    fn shared_access_reads_only_the_granted_types_within_the_token_scopes() {
        let shared = Shared {
            home_tenant: "hf-b".into(),
            purpose: "TREAT".into(),
            resource_types: vec!["Observation".into(), "CarePlan".into()],
        };
        let wide = access("user/*.cruds", None).shared(shared.clone());
        for permission in [Permission::Read, Permission::Search] {
            assert_eq!(wide.grant(permission, "Observation"), Grant::Full);
            assert_eq!(wide.grant(permission, "CarePlan"), Grant::Full);
            assert_eq!(wide.grant(permission, "Patient"), Grant::Denied);
        }
        for permission in [Permission::Create, Permission::Update, Permission::Delete] {
            assert_eq!(wide.grant(permission, "Observation"), Grant::Denied);
        }
        assert!(!wide.grants_everything(Permission::Read));
        assert_eq!(wide.sharing(), Some(&shared));
        // Never more than the token's own scopes.
        let narrow = access("user/Observation.r user/Patient.rs", None).shared(shared.clone());
        assert_eq!(narrow.grant(Permission::Read, "Observation"), Grant::Full);
        assert_eq!(
            narrow.grant(Permission::Search, "Observation"),
            Grant::Denied
        );
        assert_eq!(narrow.grant(Permission::Read, "Patient"), Grant::Denied);
        // A patient scope keeps its patient.
        let patient = access("patient/*.rs", Some("p1")).shared(shared.clone());
        assert!(matches!(
            patient.grant(Permission::Search, "Observation"),
            Grant::Limited(rules) if rules[0].patient == Some(Some("p1"))
        ));
        // Kept beside a job, the access stays as narrow.
        let principal = Principal {
            scope: "user/*.cruds".into(),
            ..Principal::default()
        };
        let granted =
            Access::granted(parse_scopes(["user/*.cruds"]), None, principal).shared(shared);
        assert_eq!(Access::from_record(&granted.record()).unwrap(), granted);
    }

    #[test]
    fn tenant_wide_operations_need_an_unconditional_wildcard() {
        assert!(access("system/*.cruds", None).grants_everything(Permission::Update));
        assert!(!access("system/Patient.cruds", None).grants_everything(Permission::Update));
        assert!(!access("patient/*.cruds", Some("p")).grants_everything(Permission::Update));
        assert!(!access("system/*.rs?_tag=x", None).grants_everything(Permission::Read));
    }

    #[test]
    fn patient_scopes_are_the_compartment_and_granular_scopes_their_query() {
        let registry = Registry::r4().unwrap();
        let a = access(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
            Some("p1"),
        );
        let filter = a
            .filter(&registry, Permission::Search, "Observation")
            .unwrap()
            .unwrap();
        let Filter::Any(rules) = &filter else {
            panic!("{filter:?}")
        };
        let Filter::All(parts) = &rules[0] else {
            panic!("{filter:?}")
        };
        assert_eq!(parts.len(), 2, "compartment and category: {parts:?}");
        // Medication is in no patient's compartment: nothing of it.
        let a = access("patient/*.rs", Some("p1"));
        assert_eq!(
            a.filter(&registry, Permission::Read, "Medication").unwrap(),
            Some(Filter::Any(Vec::new()))
        );
        // A patient scope without a patient in the token: nothing.
        let a = access("patient/*.rs", None);
        assert_eq!(
            a.filter(&registry, Permission::Read, "Observation")
                .unwrap(),
            Some(Filter::Any(Vec::new()))
        );
        assert!(matches!(
            a.filter(&registry, Permission::Delete, "Observation"),
            Err(AuthError::InsufficientScope(_))
        ));
    }
}
