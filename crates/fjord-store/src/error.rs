/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached now (down, restarting, out of connections); the same
    /// request may succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A statement ran past its time limit and was cancelled (SQLSTATE 57014).
    #[error("the database cancelled a statement that ran past its time limit")]
    TimedOut,
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
        if is_connection_lost(&error) || is_disk_full(&error) {
            StoreError::Unavailable(error.to_string())
        } else if matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
        {
            StoreError::TimedOut
        } else {
            StoreError::Database(error.to_string())
        }
    }
}

/// Whether the database could not write for want of disk space (SQLSTATE 53100): the write is
/// refused as a whole, and the same request succeeds once space is freed.
fn is_disk_full(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("53100"))
}

/// Whether `error` says the connection, or the server behind it, is gone rather than that the
/// statement failed: a socket error, a pool that could not connect, or SQLSTATE class 08
/// (connection exception), 57P (the server shutting down or starting) or 53300 (too many
/// connections).
pub(crate) fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}
