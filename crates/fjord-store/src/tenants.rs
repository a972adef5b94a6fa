use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;

use crate::{Store, StoreError};

/// The database's number for a tenant: the partition key of every tenant-scoped row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(pub i32);

impl TenantKey {
    /// The sequence that numbers the tenant's changes.
    pub(crate) fn change_sequence(self) -> String {
        format!("change_seq_{}", self.0)
    }
}

/// A tenant: one hospital trust (HF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The id used in URLs (`/fhir/{id}`).
    pub id: String,
    pub key: TenantKey,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub settings: TenantSettings,
    /// Since when the tenant's requests are refused, if they are.
    pub suspended_at: Option<OffsetDateTime>,
}

/// What a tenant has chosen. Stored as JSON; absent keys take these defaults, and keys this
/// version does not know are ignored (the admin API refuses them before they are stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TenantSettings {
    /// Updates and patches must name the version they change (`If-Match`); without it, 400.
    pub require_if_match: bool,
    /// A write whose local references name no current resource is refused (422), and so is a
    /// delete of a resource that others still refer to (409).
    pub referential_integrity: bool,
    /// A delete with `_cascade=delete` also deletes what refers to the resource (and so on).
    pub cascade_delete: bool,
    /// A conditional delete deletes every match instead of refusing more than one (412).
    pub conditional_delete_multiple: bool,
    /// What a create or update does with the validation issues of its resource.
    pub validation: ValidationMode,
    /// Synthetic test identifiers (a fødselsnummer's month + 40 or + 80) are valid.
    pub allow_test_data: bool,
    /// Profiles (canonical URLs) every resource of a type must conform to, by type.
    pub required_profiles: std::collections::BTreeMap<String, Vec<String>>,
    /// How a profile in `meta.profile` that the tenant has not installed is reported.
    pub unknown_profile: UnknownProfile,
    /// The issuers whose access tokens the tenant accepts (SMART on FHIR).
    pub trusted_issuers: Vec<fjord_smart::TrustedIssuer>,
    /// Where the tenant's clients get tokens: what `.well-known/smart-configuration` and the
    /// CapabilityStatement name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<fjord_smart::AuthorizationServer>,
    /// The tenant's FHIR base URL as its clients reach it through the region's gateway
    /// (`https://fhir.hf.no/r4`): what every `Location`, `fullUrl`, paging link, discovery
    /// document and token audience names instead of the address the request came in on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// Which browser pages may call the tenant's API (CORS), instead of the server's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// How many requests each client (network address) may make to the tenant, instead of
    /// the server's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Other tenants whose users may read some of this tenant's data, for a purpose their
    /// token asserts (the region's shared record); empty, none may.
    pub sharing: Vec<fjord_smart::SharingGrant>,
    /// Limits tighter than the server's for this tenant's requests.
    pub limits: TenantLimits,
}

/// A tenant's limits on what one request may ask; each only tightens the server's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bundle_entries: Option<usize>,
    /// Deepest nesting of JSON objects and arrays, or XML elements, in a body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_json_depth: Option<usize>,
    /// How long a request may take before it is answered 503 `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_seconds: Option<u64>,
}

impl TenantLimits {
    /// The tighter of the server's limit and the tenant's.
    pub fn tighter<T: Ord + Copy>(server: T, tenant: Option<T>) -> T {
        tenant.map_or(server, |tenant| tenant.min(server))
    }
}

/// Requests a client may make: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A tenant's CORS policy: the pages (origins) that may call its API, with which methods and
/// request headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CorsPolicy {
    /// `https://app.hf.no` (scheme, host and port), or `*` for any.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    /// Request headers a page may send, case-insensitive; `*` for any.
    pub allowed_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age_seconds: u32,
}

impl Default for CorsPolicy {
    fn default() -> CorsPolicy {
        CorsPolicy {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            allowed_headers: [
                "Authorization",
                "Content-Type",
                "Accept",
                "If-Match",
                "If-None-Exist",
                "If-None-Match",
                "Prefer",
                "DPoP",
                "X-Request-Id",
            ]
            .map(String::from)
            .to_vec(),
            max_age_seconds: 3600,
        }
    }
}

/// How validation reports a `meta.profile` it does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownProfile {
    /// A warning: the resource is not checked against it.
    #[default]
    Warning,
    /// An error: under strict validation the write is refused.
    Error,
}

/// What a write does with the validation issues of its resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    /// Refused (422) with every issue.
    Strict,
    /// Stored; the issues are told to a client that asks (`Prefer: return=OperationOutcome`).
    Lenient,
    /// Not validated beyond the structure every write has.
    #[default]
    Off,
}

impl Default for TenantSettings {
    fn default() -> TenantSettings {
        TenantSettings {
            require_if_match: false,
            referential_integrity: true,
            cascade_delete: false,
            conditional_delete_multiple: false,
            validation: ValidationMode::Off,
            allow_test_data: false,
            required_profiles: Default::default(),
            unknown_profile: UnknownProfile::Warning,
            trusted_issuers: Vec::new(),
            authorization_server: None,
            public_base_url: None,
            cors: None,
            rate_limit: None,
            sharing: Vec::new(),
            limits: TenantLimits::default(),
        }
    }
}

impl TenantSettings {
    /// The names of every setting, those absent by default included.
    pub fn keys() -> Vec<String> {
        let every = TenantSettings {
            authorization_server: Some(Default::default()),
            public_base_url: Some(String::new()),
            cors: Some(Default::default()),
            rate_limit: Some(RateLimit {
                per_second: 1,
                burst: 1,
            }),
            ..TenantSettings::default()
        };
        match serde_json::to_value(every) {
            Ok(serde_json::Value::Object(keys)) => keys.into_iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }
}

/// Whether `id` is acceptable as a tenant id (the same rule as the table's check).
pub fn is_valid_tenant_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    (1..=63).contains(&id.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The columns `tenant_from_row` reads.
const TENANT_COLUMNS: &str = "id, key, name, created_at, settings::text AS settings, suspended_at";

const TENANT_TABLES: [&str; 4] = [
    "resource_version",
    "resource_current",
    "search_date",
    "search_string",
];

impl Store {
    /// Creates a tenant with its partitions and change sequence, all in one transaction.
    #[tracing::instrument(skip_all, fields(tenant = %id))]
    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant, StoreError> {
        if !is_valid_tenant_id(id) {
            return Err(StoreError::InvalidTenantId(id.to_owned()));
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::database)?;
        let row = sqlx::query(&format!(
            "INSERT INTO tenant (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING \
             RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::database)?
        .ok_or_else(|| StoreError::TenantExists(id.to_owned()))?;
        let tenant = tenant_from_row(&row);
        let key = tenant.key.0;
        // The key is an integer from the database, so formatting it into DDL is safe.
        for table in TENANT_TABLES {
            let ddl =
                format!("CREATE TABLE {table}_{key} PARTITION OF {table} FOR VALUES IN ({key})");
            sqlx::query(&ddl)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::database)?;
        }
        // Its partition of the equality keys gets the pending-list bound of the others
        // (migrations 0011, 0012 and 0013).
        sqlx::query("SELECT fjord_tune_key_index()")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database)?;
        sqlx::query(&format!("CREATE SEQUENCE {}", tenant.key.change_sequence()))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database)?;
        tx.commit().await.map_err(StoreError::database)?;
        Ok(tenant)
    }

    /// Creates the tenant unless it exists; returns it either way.
    pub async fn ensure_tenant(&self, id: &str, name: &str) -> Result<Tenant, StoreError> {
        match self.create_tenant(id, name).await {
            Err(StoreError::TenantExists(_)) => self
                .tenant(id)
                .await?
                .ok_or_else(|| StoreError::TenantExists(id.to_owned())),
            other => other,
        }
    }

    /// All tenants, by id.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenant ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?;
        Ok(rows.iter().map(tenant_from_row).collect())
    }

    /// The tenant with this id, if any.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenant WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?;
        Ok(row.as_ref().map(tenant_from_row))
    }

    /// Replaces a tenant's settings; the tenant as it is now, or `None` when there is none.
    #[tracing::instrument(skip_all, fields(tenant = %id))]
    pub async fn set_tenant_settings(
        &self,
        id: &str,
        settings: &TenantSettings,
    ) -> Result<Option<Tenant>, StoreError> {
        let json = serde_json::to_string(settings).expect("settings serialize");
        let row = sqlx::query(&format!(
            "UPDATE tenant SET settings = $2::jsonb WHERE id = $1 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id)
        .bind(json)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?;
        Ok(row.as_ref().map(tenant_from_row))
    }

    /// Renames a tenant (its display name; the id in its URLs stays), or suspends or resumes
    /// it; the tenant as it is now, or `None` when there is none.
    #[tracing::instrument(skip_all, fields(tenant = %id))]
    pub async fn change_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        suspended: Option<bool>,
    ) -> Result<Option<Tenant>, StoreError> {
        // A suspension keeps its first instant when repeated.
        let row = sqlx::query(&format!(
            "UPDATE tenant SET name = coalesce($2, name), \
               suspended_at = CASE $3 WHEN true THEN coalesce(suspended_at, now()) \
                                      WHEN false THEN NULL ELSE suspended_at END \
             WHERE id = $1 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id)
        .bind(name)
        .bind(suspended)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?;
        Ok(row.as_ref().map(tenant_from_row))
    }
}

fn tenant_from_row(row: &sqlx::postgres::PgRow) -> Tenant {
    let settings: String = row.get("settings");
    Tenant {
        id: row.get("id"),
        key: TenantKey(row.get("key")),
        name: row.get("name"),
        created_at: row.get("created_at"),
        settings: serde_json::from_str(&settings).unwrap_or_default(),
        suspended_at: row.get("suspended_at"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_tenant_id;

    #[test]
    fn tenant_ids() {
        assert!(is_valid_tenant_id("default"));
        assert!(is_valid_tenant_id("helse-bergen_hf"));
        assert!(!is_valid_tenant_id("-x"));
        assert!(!is_valid_tenant_id("Upper"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id(&"a".repeat(64)));
    }
}
