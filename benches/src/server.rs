//! What both load drivers share: starting Fjord on a fresh embedded default, and writing their
//! section of `benches/RESULTS.md`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// A server started by a driver: stopped gracefully (Fjord's embedded cluster with it) by
/// `stop`, or when dropped, so a driver that fails leaves no server behind.
pub struct Server {
    child: Child,
    /// `http://host:port`.
    pub origin: String,
}

impl Server {
    /// A started server process listening at `origin` (`http://host:port`).
    pub fn new(child: Child, origin: String) -> Server {
        Server { child, origin }
    }

    /// The address it listens on.
    pub fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.origin
            .trim_start_matches("http://")
            .parse()
            .context("fjord's listen address")
    }

    /// The server process's peak resident memory so far (Linux's `VmHWM`), in kB.
    pub fn peak_memory_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM and waits for the server to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            self.child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `binary` on its embedded default under `data_dir`.
pub fn start_fjord(binary: &Path, data_dir: &Path) -> anyhow::Result<Server> {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("FJORD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p fjord-server)",
                binary.display()
            )
        })?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("fjord listening on ") {
                let _ = tx.send(rest.trim_end_matches("/fhir/").to_owned());
            }
        }
    });
    // Held before waiting, so a server that does not come up is stopped too.
    let mut fjord = Server::new(child, String::new());
    fjord.origin = rx
        .recv_timeout(Duration::from_secs(120))
        .context("fjord did not start")?;
    Ok(fjord)
}

/// Replaces the section `name` of the results file (between `<!-- begin name -->` and
/// `<!-- end name -->`), or adds it: each driver owns its section.
pub fn write_section(path: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let (begin, end) = (
        format!("<!-- begin {name} -->\n"),
        format!("<!-- end {name} -->\n"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n\n".into());
    let section = format!("{begin}{}\n{end}", text.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(from), Some(to)) if from < to => {
            format!("{}{section}{}", &old[..from], &old[to + end.len()..])
        }
        _ => format!("{}\n{section}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    eprintln!("{text}");
    Ok(())
}

/// PUTs each `(path, body)` under `base` (`/fhir/default`), one after another; fails unless
/// each is created or updated.
pub fn put_all(
    addr: std::net::SocketAddr,
    base: &str,
    resources: &'static [(&'static str, &'static str)],
) -> anyhow::Result<()> {
    let base = base.to_owned();
    let outcome = crate::client::closed_loop(
        addr,
        1,
        Duration::from_secs(60),
        move |n| {
            let (path, body) = resources.get(n as usize)?;
            Some(
                format!(
                    "PUT {base}/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\n\
                     Prefer: return=minimal\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        },
        |reply| matches!(reply.status, 200 | 201),
    )?;
    anyhow::ensure!(
        outcome.errors == 0,
        "storing the referenced resources failed"
    );
    Ok(())
}

/// What autovacuum would do in time after a bulk load, done at once so that the measurement
/// does not race it: `VACUUM (ANALYZE)` of Fjord's database, through the cluster's socket.
pub fn settle(cluster_dir: &std::path::Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    psql(cluster_dir, "fjord", "VACUUM (ANALYZE)")?;
    eprintln!("vacuumed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `sql` in `database` as the superuser, through the socket in `socket_dir`.
pub fn psql(socket_dir: &Path, database: &str, sql: &str) -> anyhow::Result<()> {
    let ok = Command::new(fjord_pg::Binaries::locate()?.tool("psql"))
        .args(["-q", "-h"])
        .arg(socket_dir)
        .args(["-U", fjord_pg::SUPERUSER, "-d", database])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .status()?
        .success();
    anyhow::ensure!(ok, "psql failed: {sql}");
    Ok(())
}

/// Waits until the machine is idle (under a tenth of its CPU busy over half a second), for at
/// most `limit`; how long it waited. Work a server deferred (Fjord's buffered AuditEvents, a
/// database's vacuum) is then done before the next scenario starts, not during it.
pub fn quiesce(limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut last = cpu_times();
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_times();
        if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now) {
            let (busy, total) = (busy1 - busy0, total1 - total0);
            if total > 0 && busy * 10 < total {
                break;
            }
        }
        last = now;
    }
    started.elapsed()
}

/// The machine's busy and total CPU time so far (`/proc/stat`, in ticks).
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // user nice system idle iowait ...: idle and iowait are not busy.
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}
