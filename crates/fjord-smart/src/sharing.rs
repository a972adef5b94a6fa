//! Reading another tenant's data under its sharing policy: the region's shared record, whose
//! legal basis it calls a "§9 solution". A tenant (the data's owner) names in its settings the
//! tenants whose users may read which of its resource types, and the token claim that must
//! assert a purpose the policy accepts. Such a token is one its home tenant accepts; at the
//! owner it grants at most reading and searching those types, whatever its scopes say beyond.
//! Without a grant, tenants stay apart: another tenant's token is refused as before.

use serde::{Deserialize, Serialize};

use crate::token::{RequiredClaim, Verified};

/// One entry of a tenant's `sharing` setting: who may read what, for which purposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharingGrant {
    /// The tenant whose users may read (its id).
    pub tenant: String,
    /// The resource types they may read and search.
    pub resource_types: Vec<String>,
    /// The claim that asserts the purpose of the access, and the purposes that qualify.
    pub purpose: RequiredClaim,
}

/// Access to another tenant's data that a grant gave: recorded in every audit event of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shared {
    /// The tenant the caller's token belongs to.
    pub home_tenant: String,
    /// The purpose the token asserted.
    pub purpose: String,
    /// What the grant opens.
    pub resource_types: Vec<String>,
}

impl SharingGrant {
    /// What the grant lets a token of its tenant do: `None` when the token asserts no purpose
    /// the grant accepts.
    pub fn admit(&self, verified: Verified) -> Option<crate::Access> {
        let purpose = self.purpose.held_by(&verified.claims)?.to_owned();
        Some(verified.access.shared(Shared {
            home_tenant: self.tenant.clone(),
            purpose,
            resource_types: self.resource_types.clone(),
        }))
    }

    /// What is wrong with the grant, if anything.
    pub fn problem(&self, owner: &str, is_resource_type: impl Fn(&str) -> bool) -> Option<String> {
        if self.tenant == owner {
            return Some("a tenant needs no grant to read its own data".into());
        }
        if self.resource_types.is_empty() {
            return Some(format!(
                "the grant to {} names no resource type",
                self.tenant
            ));
        }
        if let Some(unknown) = self.resource_types.iter().find(|t| !is_resource_type(t)) {
            return Some(format!("'{unknown}' is not an R4 resource type"));
        }
        if self.purpose.claim.is_empty() || self.purpose.values.is_empty() {
            return Some(format!(
                "the grant to {} needs a purpose claim and the purposes it accepts",
                self.tenant
            ));
        }
        None
    }
}
