//! The test kit: a real Postgres for tests (`database`), and synthetic Norwegian home-care data
//! at any scale (`synthetic`, also behind `fjord generate`) for tests, benchmarks and demos.

mod database;
pub mod synthetic;

pub use database::{database, role_url, superuser_url, unmigrated_database, TestDatabase, ROLE};
