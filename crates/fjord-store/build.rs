//! `sqlx::migrate!` embeds the migrations when this crate compiles, and Cargo cannot tell that a
//! new file in `migrations/` changes it: without this, a new migration is silently left out
//! until something else in the crate changes.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
