use fjord_model::ParseError;
use fjord_store::StoreError;

/// Why an interaction did not succeed. The REST layer maps each kind to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No tenant with this id.
    #[error("unknown tenant '{0}'")]
    UnknownTenant(String),
    /// The tenant is suspended: its data is kept, its requests refused.
    #[error("tenant '{0}' is suspended")]
    Suspended(String),
    /// Not an R4 resource type.
    #[error("unknown resource type '{0}'")]
    UnknownType(String),
    /// The resource (or version) does not exist.
    #[error("{0} is not known")]
    NotFound(String),
    /// The resource existed and was deleted.
    #[error("{0} was deleted")]
    Gone(String),
    /// The body is not a valid resource.
    #[error("invalid resource: {0}")]
    Invalid(ParseError),
    /// The resource is well-formed but breaks a rule of FHIR or of this server.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Unprocessable(Vec<ParseError>),
    /// The tenant validates strictly and the resource does not conform: every issue found,
    /// errors first.
    #[error("{}", .0.iter().map(|i| format!("{}: {}", i.expression, i.message)).collect::<Vec<_>>().join("; "))]
    NotConformant(Vec<fjord_validation::Issue>),
    /// The resource breaks a rule of this server (a SearchParameter it cannot use).
    #[error("{0}")]
    Rejected(String),
    /// The request contradicts itself (type or id differs from the URL, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// `If-Match` named a version that is not current.
    #[error("{0}")]
    PreconditionFailed(String),
    /// Concurrent writers kept changing the resource.
    #[error("{0}")]
    Conflict(String),
    /// A search parameter could not be evaluated on the resource.
    #[error(transparent)]
    Search(#[from] fjord_search::SearchError),
    /// Something of the server's own failed (a background task, the text index).
    #[error("{0}")]
    Internal(String),
    /// The request is larger than this server accepts (a bundle with too many entries).
    #[error("{0}")]
    TooLarge(String),
    /// A search asks for more than one search may (parameters, alternatives, includes).
    #[error(transparent)]
    TooCostly(#[from] fjord_search::TooCostly),
    /// An interaction this server does not offer.
    #[error("{0}")]
    NotSupported(String),
    /// Referential integrity: a written reference names no current resource.
    #[error("{referrer}: {path} refers to {reference}, which does not exist")]
    DanglingReference {
        referrer: String,
        path: String,
        reference: String,
    },
    /// Referential integrity: the resource to delete is still referred to.
    #[error("{resource} is referred to by {}", .referrers.join(", "))]
    StillReferenced {
        resource: String,
        referrers: Vec<String>,
    },
    /// A PATCH is malformed or does not apply to the resource.
    #[error(transparent)]
    Patch(#[from] fjord_patch::PatchError),
    /// An entry of a bundle failed: its index and its error.
    #[error("bundle entry {0}: {1}")]
    InEntry(usize, Box<EngineError>),
    /// The resource may not be written at all (AuditEvents): 405.
    #[error("{0}")]
    Immutable(String),
    /// The caller's token is missing or bad, or its scopes do not grant the request.
    #[error(transparent)]
    Auth(#[from] fjord_smart::AuthError),
    /// Storage failed.
    /// The database cannot be reached now; the request may be sent again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The request ran past its time limit.
    #[error("{0}")]
    TimedOut(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> EngineError {
        match error {
            // Transactions that deadlocked: the client may retry.
            StoreError::Conflict(message) => EngineError::Conflict(message),
            StoreError::Unavailable(message) => EngineError::Unavailable(message),
            StoreError::TimedOut => EngineError::TimedOut(StoreError::TimedOut.to_string()),
            other => EngineError::Store(other),
        }
    }
}
