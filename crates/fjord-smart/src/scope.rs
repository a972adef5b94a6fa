//! SMART scopes, v1 (`patient/Observation.read`, `user/*.write`, `system/*.*`) and v2
//! (`patient/Observation.rs`, letters from `cruds` in that order, and granular scopes with a
//! query: `patient/Observation.rs?category=…|vital-signs`).
//!
//! Scopes that name no resource access (`openid`, `fhirUser`, `launch`, `offline_access`,
//! an IdP's own) are not grants and are left out; so is a resource scope that does not parse,
//! which grants nothing rather than guessing.

use std::fmt;

/// Whose data a scope opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// The launch context's patient: only resources in that patient's compartment.
    Patient,
    /// Whatever the user may see; Fjord holds no per-user rules, so the tenant.
    User,
    /// A backend system: the tenant.
    System,
}

/// One of the five things a v2 scope letter permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `c`: create (also a conditional create, an update that creates).
    Create,
    /// `r`: read, vread, the history of one resource, what `_include` adds.
    Read,
    /// `u`: update, patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search, history of a type or the system, the condition of a conditional write.
    Search,
}

impl Permission {
    const ALL: [Permission; 5] = [
        Permission::Create,
        Permission::Read,
        Permission::Update,
        Permission::Delete,
        Permission::Search,
    ];

    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    pub const ALL: Permissions = Permissions(0b1_1111);

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// Whether every permission of `other` is in this set.
    pub fn includes(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions in both sets.
    pub fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    pub(crate) fn with(self, permission: Permission) -> Permissions {
        Permissions(self.0 | permission.bit())
    }

    /// v2 letters: a non-empty subsequence of `cruds`.
    fn from_letters(letters: &str) -> Option<Permissions> {
        let mut set = Permissions::NONE;
        let mut next = 0;
        for letter in letters.chars() {
            let index = Permission::ALL[next..]
                .iter()
                .position(|p| p.letter() == letter)?;
            set = set.with(Permission::ALL[next + index]);
            next += index + 1;
        }
        (set != Permissions::NONE).then_some(set)
    }

    /// v1 `read`, `write` and `*`.
    fn from_v1(word: &str) -> Option<Permissions> {
        use Permission::*;
        match word {
            "read" => Some(Permissions::NONE.with(Read).with(Search)),
            "write" => Some(Permissions::NONE.with(Create).with(Update).with(Delete)),
            "*" => Some(Permissions::ALL),
            _ => None,
        }
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for permission in Permission::ALL {
            if self.contains(permission) {
                write!(f, "{}", permission.letter())?;
            }
        }
        Ok(())
    }
}

/// A scope that grants access to resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
    /// A granular scope's search parameters, all of which must hold (decoded).
    pub query: Vec<(String, String)>,
}

impl Scope {
    /// A resource scope, or `None` for anything else.
    pub fn parse(text: &str) -> Option<Scope> {
        let (context, rest) = text.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (target, query) = match rest.split_once('?') {
            Some((target, query)) => (target, Some(query)),
            None => (rest, None),
        };
        let (resource_type, permissions) = target.rsplit_once('.')?;
        let resource_type = match resource_type {
            "*" => None,
            t if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Some(t.to_owned())
            }
            _ => return None,
        };
        let permissions =
            Permissions::from_v1(permissions).or_else(|| Permissions::from_letters(permissions))?;
        let query: Vec<(String, String)> = match query {
            Some(query) => form_urlencoded(query),
            None => Vec::new(),
        };
        if query.iter().any(|(name, _)| name.is_empty()) {
            return None;
        }
        Some(Scope {
            context,
            resource_type,
            permissions,
            query,
        })
    }

    /// Whether everything `other` grants, this scope grants too.
    pub fn includes(&self, other: &Scope) -> bool {
        self.context == other.context
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && self.permissions.includes(other.permissions)
            && (self.query.is_empty() || self.query == other.query)
    }

    /// Whether the scope speaks of resources of `resource_type`.
    pub fn covers(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }
}

/// The resource scopes of a space-separated scope string.
pub fn parse_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
    scopes.into_iter().filter_map(Scope::parse).collect()
}

/// `a=1&b=x%7Cy` decoded, as a query string.
fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(scope: &str) -> String {
        Scope::parse(scope).unwrap().permissions.to_string()
    }

    #[test]
    fn a_scope_includes_narrower_ones_of_its_context() {
        let wide = Scope::parse("patient/*.rs").unwrap();
        assert!(wide.includes(&Scope::parse("patient/Observation.read").unwrap()));
        assert!(wide.includes(&Scope::parse("patient/Observation.s?code=x").unwrap()));
        assert!(!wide.includes(&Scope::parse("patient/Observation.cruds").unwrap()));
        assert!(!wide.includes(&Scope::parse("user/Observation.rs").unwrap()));
        let granular = Scope::parse("user/Observation.rs?code=x").unwrap();
        assert!(!granular.includes(&Scope::parse("user/Observation.rs").unwrap()));
    }

    #[test]
    fn v1_words_and_v2_letters() {
        assert_eq!(letters("patient/Observation.read"), "rs");
        assert_eq!(letters("user/*.write"), "cud");
        assert_eq!(letters("system/*.*"), "cruds");
        assert_eq!(letters("patient/Observation.rs"), "rs");
        assert_eq!(letters("user/Patient.cruds"), "cruds");
        assert_eq!(letters("system/Observation.cd"), "cd");
        let scope = Scope::parse("user/*.read").unwrap();
        assert_eq!(scope.context, Context::User);
        assert_eq!(scope.resource_type, None);
        assert!(scope.covers("Anything"));
        let scope = Scope::parse("patient/Observation.r").unwrap();
        assert!(scope.covers("Observation") && !scope.covers("Patient"));
    }

    #[test]
    fn letters_out_of_order_or_repeated_and_other_scopes_grant_nothing() {
        for text in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.",
            "patient/Observation.x",
            "patient/.rs",
            "practitioner/Observation.rs",
            "Observation.rs",
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
            "patient/Obs-ervation.rs",
            "patient/Observation.rs?=x",
        ] {
            assert_eq!(Scope::parse(text), None, "{text}");
        }
        let scopes = parse_scopes("openid fhirUser patient/*.rs launch".split(' '));
        assert_eq!(scopes.len(), 1);
    }

    #[test]
    fn granular_scopes_carry_their_decoded_query() {
        let scope = Scope::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category%7Cvital-signs&status=final",
        )
        .unwrap();
        assert_eq!(
            scope.query,
            vec![
                (
                    "category".to_owned(),
                    "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
                        .to_owned()
                ),
                ("status".to_owned(), "final".to_owned()),
            ]
        );
        let scope = Scope::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        )
        .unwrap();
        assert_eq!(scope.query[0].1.rsplit('|').next(), Some("laboratory"));
    }
}
