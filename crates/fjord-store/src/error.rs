/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// Concurrent transactions deadlocked or could not be serialised; retrying may succeed.
    #[error("concurrent changes conflicted: {0}")]
    Conflict(String),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A tenant with this id exists already.
    #[error("tenant '{0}' exists already")]
    TenantExists(String),
    /// The tenant id does not match `[a-z0-9][a-z0-9_-]{{0,62}}`.
    #[error("invalid tenant id '{0}': use 1-63 lowercase letters, digits, '-' or '_'")]
    InvalidTenantId(String),
}

impl StoreError {
    pub(crate) fn database(error: sqlx::Error) -> StoreError {
        StoreError::Database(error.to_string())
    }
}
