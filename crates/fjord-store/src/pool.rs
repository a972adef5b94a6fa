//! Tenant connection pools that take a connection back without a round trip.
//!
//! sqlx's own pool pings every connection it takes back (a `Sync` message and a wait for the
//! server's answer), which doubles the round trips of a one-statement request. Here a connection
//! whose statement finished goes back to the pool as it is. One whose statement did not finish (the
//! request was cancelled, the socket broke) is closed instead of being repaired: closing also makes
//! the server roll back whatever transaction it had open, at once rather than on the next use.

use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleResult};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use crate::StoreError;

/// Opens connections with the options of one tenant.
#[derive(Debug)]
pub(crate) struct Connector {
    options: PgConnectOptions,
}

impl managed::Manager for Connector {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.options).await
    }

    async fn recycle(&self, _: &mut PgConnection, _: &Metrics) -> RecycleResult<sqlx::Error> {
        // Only connections whose last statement completed are ever returned (see `Lease`).
        Ok(())
    }
}

/// The connections of one tenant on one async runtime.
pub(crate) type TenantPool = managed::Pool<Connector>;

pub(crate) fn tenant_pool(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<TenantPool, StoreError> {
    let timeout = Some(Duration::from_secs(10));
    managed::Pool::builder(Connector { options })
        .max_size(max_connections as usize)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Database(format!("connection pool: {e}")))
}

/// A connection on loan. It returns to its pool only through [`Lease::settle`]; dropped unsettled
/// (its future was cancelled mid-statement) it is closed.
pub(crate) struct Lease(Option<Object<Connector>>);

impl Lease {
    pub(crate) async fn acquire(pool: &TenantPool) -> Result<Lease, StoreError> {
        match pool.get().await {
            Ok(connection) => Ok(Lease(Some(connection))),
            Err(managed::PoolError::Backend(e)) => Err(StoreError::database(e)),
            Err(e) => Err(StoreError::Unavailable(format!(
                "no database connection: {e}"
            ))),
        }
    }

    pub(crate) fn connection(&mut self) -> &mut PgConnection {
        self.0
            .as_mut()
            .expect("a lease holds its connection until settled")
    }

    /// Ends the loan with the outcome of the statements run on it: after a success or an error
    /// the server reported, the connection is in a known state and goes back to the pool.
    pub(crate) fn settle<T>(mut self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        let reusable = match &result {
            Ok(_) => true,
            // A server going down reports it as a database error on a connection it then closes.
            Err(e) => {
                matches!(e, sqlx::Error::Database(_) | sqlx::Error::RowNotFound)
                    && !crate::error::is_connection_lost(e)
            }
        };
        if reusable {
            drop(self.0.take());
        }
        result.map_err(StoreError::database)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            // Detached from the pool and dropped: the socket closes and the pool may open anew.
            drop(Object::take(connection));
        }
    }
}
