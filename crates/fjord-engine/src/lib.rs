//! The FHIR interactions as plain functions of (caller, request) → outcome, where a [`Caller`]
//! is a tenant and what the caller's token grants there.
//!
//! REST, the CLI and (later) subscription delivery all call this crate, so each pipeline exists
//! once: parse and check the resource, assign the server-owned parts, write through `fjord-store`.
//! Nothing here knows HTTP.

mod audit;
mod authorize;
mod bundles;
mod conditional;
mod conformance;
mod consumers;
mod error;
mod export;
mod import;
mod import_jobs;
mod integrity;
mod interactions;
mod jobs;
mod packages;
mod patch;
mod registries;
mod reindex;
mod search;
mod subset;
mod tenants;
mod terminology;
mod terminology_ops;
mod text;
mod validation;

pub use audit::{patients_in, Audited, Merged};
pub use bundles::{BundleKind, EntryOutcome, DEFAULT_MAX_BUNDLE_ENTRIES};
pub use consumers::ConsumerLag;
pub use error::EngineError;
pub use export::{ExportJob, ExportLevel, ExportOutput, ExportProgress, ExportRequest};
pub use fjord_model::{Format, ParseLimits, Resource};
pub use fjord_patch::PatchError;
pub use fjord_search::{Scope, SearchQuery, Summary};
pub use fjord_smart::{Access, AuthError, Permission};
pub use fjord_store::{
    CorsPolicy, HistoryPage, Op, PreviousPage, RateLimit, SearchPage, StoredVersion, Tenant,
    TenantLimits, TenantSettings, UnknownProfile, ValidationMode,
};
pub use fjord_validation::{Issue as ValidationIssue, Severity as ValidationSeverity};
pub use import::{ImportLine, Imported, LineFailure};
pub use import_jobs::{ImportJob, ImportProgress};
pub use interactions::{etag_of, format_instant, version_of_etag, HistoryQuery, Written};
pub use jobs::{Job, JobState};
pub use packages::{Installed, PACKAGE_TYPES};
pub use patch::{Patch, PatchBody};
pub use reindex::{ReindexJob, ReindexProgress};
pub use search::{SearchRequest, SearchResult, MAX_INCLUDED};
pub use subset::subset;
pub use terminology_ops::CodeQuestion;
pub use text::MAX_TEXT_MATCHES;
pub use validation::{ValidateMode, ValidateRequest};

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use fjord_search::Registry;
use fjord_store::Store;
use jobs::{Jobs, SeenBy};

/// Who asks, and in which tenant: every interaction takes one, and does only what `access`
/// grants.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Tenant,
    pub access: Access,
    /// The client's network address, for the audit trail.
    pub address: Option<String>,
    /// Fjord itself (the audit trail's writer): the only caller that writes AuditEvents.
    internal: bool,
    /// The local account running a `fjord` command, for the audit trail.
    operator: Option<String>,
}

impl Caller {
    pub fn new(tenant: Tenant, access: Access) -> Caller {
        Caller {
            tenant,
            access,
            address: None,
            internal: false,
            operator: None,
        }
    }

    /// A `fjord` command run by the local account `operator`: everything, and audited as such.
    pub fn operator(tenant: Tenant, operator: String) -> Caller {
        Caller {
            operator: Some(operator),
            ..Caller::trusted(tenant)
        }
    }

    /// Fjord's own work (indexing, jobs, the CLI), and requests while authentication is off.
    pub fn trusted(tenant: Tenant) -> Caller {
        Caller::new(tenant, Access::unrestricted())
    }

    /// Fjord itself: its audit trail, and the status it gives Subscriptions.
    pub fn internal(tenant: Tenant) -> Caller {
        Caller {
            internal: true,
            ..Caller::trusted(tenant)
        }
    }

    pub fn with_address(mut self, address: Option<String>) -> Caller {
        self.address = address;
        self
    }
}

/// A caller acts within its tenant: the tenant's id, key and settings read through it.
impl Deref for Caller {
    type Target = Tenant;

    fn deref(&self) -> &Tenant {
        &self.tenant
    }
}

/// The interactions over one store.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    limits: ParseLimits,
    /// R4's search parameters.
    search: Arc<Registry>,
    /// What every runtime's engine of the process shares.
    shared: Arc<Shared>,
    /// The full-text index, when served.
    text: Option<Arc<text::TextFeed>>,
    /// The most entries a bundle may have.
    max_bundle_entries: usize,
    /// Checks higher layers add to the writes of a resource type.
    write_checks: Arc<Vec<(&'static str, Arc<dyn WriteCheck>)>>,
    /// Where `$export` jobs write their files.
    export_dir: Arc<PathBuf>,
    /// Where the engine counts what operators watch (validation failures).
    metrics: Arc<fjord_metrics::Metrics>,
}

/// A check a higher layer adds to every write of one resource type (`fjord-subscriptions`
/// vets Subscriptions): the engine cannot know their rules, yet must refuse before it stores.
pub trait WriteCheck: Send + Sync + std::fmt::Debug {
    /// `Err` with the reason (answered 422) when the resource may not be stored.
    fn check(&self, registry: &Registry, resource: &serde_json::Value) -> Result<(), String>;
}

/// State shared by the engines of all runtimes.
#[derive(Debug)]
struct Shared {
    tenants: tenants::TenantCache,
    registries: registries::TenantRegistries,
    conformance: conformance::TenantConformance,
    reindexing: Jobs<reindex::ReindexProgress>,
    imports: Jobs<import_jobs::ImportProgress>,
    exports: Jobs<export::ExportProgress>,
    audit: audit::AuditBuffer,
    /// Notified after a unit of work commits: change-log followers wake on it.
    written: tokio::sync::Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            tenants: Default::default(),
            registries: Default::default(),
            conformance: Default::default(),
            // A maintenance job is any administrator's of the tenant; a bulk job, its client's.
            reindexing: Jobs::new(SeenBy::Tenant),
            imports: Jobs::new(SeenBy::Client),
            exports: Jobs::new(SeenBy::Client),
            audit: Default::default(),
            written: Default::default(),
        }
    }
}

impl Engine {
    pub fn new(store: Store, limits: ParseLimits) -> Engine {
        static R4: OnceLock<Arc<Registry>> = OnceLock::new();
        let search = R4
            .get_or_init(|| {
                // Compiled-in definitions; fjord-search's tests compile every one of them.
                Arc::new(Registry::r4().expect("the built-in R4 search parameters compile"))
            })
            .clone();
        Engine {
            store,
            limits,
            search,
            shared: Default::default(),
            text: None,
            max_bundle_entries: DEFAULT_MAX_BUNDLE_ENTRIES,
            write_checks: Default::default(),
            export_dir: Arc::new(std::env::temp_dir().join("fjord-exports")),
            metrics: Default::default(),
        }
    }

    /// Counts into `metrics` (by default, metrics of its own nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<fjord_metrics::Metrics>) -> Engine {
        self.metrics = metrics;
        self
    }

    /// Writes `$export` files under `dir` (the default is a directory in the system's
    /// temporary directory).
    pub fn with_export_dir(mut self, dir: PathBuf) -> Engine {
        self.export_dir = Arc::new(dir);
        self
    }

    /// Adds a check to every write of `resource_type`.
    pub fn with_write_check(
        mut self,
        resource_type: &'static str,
        check: Arc<dyn WriteCheck>,
    ) -> Engine {
        Arc::make_mut(&mut self.write_checks).push((resource_type, check));
        self
    }

    /// Accepts bundles of at most `entries` entries.
    pub fn with_max_bundle_entries(mut self, entries: usize) -> Engine {
        self.max_bundle_entries = entries;
        self
    }

    /// An engine for one async runtime (one HTTP worker thread): its own database connections,
    /// the same limits and shared state.
    pub fn for_runtime(&self) -> Engine {
        Engine {
            shared: self.shared.clone(),
            text: self.text.clone(),
            max_bundle_entries: self.max_bundle_entries,
            write_checks: self.write_checks.clone(),
            export_dir: self.export_dir.clone(),
            metrics: self.metrics.clone(),
            ..Engine::new(self.store.for_runtime(), self.limits)
        }
    }

    /// Returns once a write commits after the last call (at once if one did meanwhile): a
    /// change-log follower waits on it rather than polling alone.
    pub async fn changes_written(&self) {
        self.shared.written.notified().await
    }

    /// The underlying store, for administration (migrations, readiness).
    pub fn store(&self) -> &Store {
        &self.store
    }
}
