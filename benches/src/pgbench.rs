//! Plain Postgres as the physical reference: pgbench running a script of SQL equivalent to a
//! scenario, on the cluster the server under test used.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;

use fjord_pg::{Binaries, SUPERUSER};

/// Transactions per second of `script` (pgbench's own syntax, prepared statements) run by
/// `clients` connections for `seconds` against `database`, through the socket in `socket_dir`.
pub fn tps(
    binaries: &Binaries,
    socket_dir: &Path,
    database: &str,
    clients: usize,
    seconds: u64,
    script: &str,
) -> anyhow::Result<f64> {
    static SCRIPTS: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "fjord-pgbench-{}-{}.sql",
        std::process::id(),
        SCRIPTS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, script)?;
    let output = Command::new(binaries.tool("pgbench"))
        .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
        .args(["-j", "2", "-T", &seconds.to_string(), "-h"])
        .arg(socket_dir)
        .args(["-U", SUPERUSER, "-f"])
        .arg(&file)
        .arg(database)
        .output()?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .with_context(|| {
            format!(
                "pgbench output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// `text` as an SQL string literal's contents (quotes doubled).
pub fn quoted(text: &str) -> String {
    text.replace('\'', "''")
}
