//! A private PostgreSQL cluster run from the binaries installed on the machine.
//!
//! Used by the `fjord` binary for its embedded default and by the test harness. The cluster listens
//! only on a Unix socket inside its own directory. Postgres refuses to run as root, so when started
//! by root the cluster runs as an unprivileged account (`postgres`, else `nobody`) that owns its
//! directory. The postmaster is a child process that receives SIGINT (fast shutdown) when its parent
//! dies, so a killed Fjord never leaves an orphaned database behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Gid, Pid, Uid, User};

/// The port number only names the socket file; nothing listens on TCP.
pub const SOCKET_PORT: u16 = 5432;
/// The superuser that `initdb` creates.
pub const SUPERUSER: &str = "postgres";

/// What can go wrong running the cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No Postgres server binaries were found.
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and postgres on PATH, in `pg_config --bindir` \
         and in /usr/lib/postgresql/*/bin): install them (Debian/Ubuntu: `apt-get install postgresql`) \
         or point Fjord at a server with DATABASE_URL / --database-url"
    )]
    BinariesNotFound,
    /// A Postgres tool failed.
    #[error("{tool} failed: {detail}")]
    Tool { tool: String, detail: String },
    /// The server did not become ready in time.
    #[error("postgres did not become ready within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

/// The directory holding `initdb`, `postgres` and `pg_ctl`.
#[derive(Debug, Clone)]
pub struct Binaries {
    bindir: PathBuf,
}

impl Binaries {
    /// Finds the server binaries: PATH, then `pg_config --bindir`, then the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub fn locate() -> Result<Binaries, PgError> {
        let from_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let mut from_debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .collect();
        from_debian.sort();
        let candidates = from_path
            .into_iter()
            .chain(from_pg_config)
            .chain(from_debian.into_iter().rev().map(|(_, p)| p));
        Binaries::first_in(candidates)
    }

    /// The first candidate directory that holds `initdb` and `postgres`. When `postgres` there is
    /// a link (`/usr/local/bin/postgres` → `/usr/lib/postgresql/15/bin/postgres`), the directory
    /// it links into, where the other tools (`pg_ctl`, `psql`, `pgbench`) are too.
    fn first_in(candidates: impl IntoIterator<Item = PathBuf>) -> Result<Binaries, PgError> {
        let has_server =
            |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        let installed = |dir: PathBuf| {
            fs::canonicalize(dir.join("postgres"))
                .ok()
                .and_then(|postgres| postgres.parent().map(Path::to_path_buf))
                .unwrap_or(dir)
        };
        candidates
            .into_iter()
            .find(|dir| has_server(dir))
            .map(|dir| Binaries {
                bindir: installed(dir),
            })
            .ok_or(PgError::BinariesNotFound)
    }

    /// The path of a tool in the binaries directory.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The OS account the cluster runs as: the current one, or an unprivileged one when we are root.
#[derive(Debug, Clone, Copy)]
struct Account {
    switch_to: Option<(Uid, Gid)>,
}

impl Account {
    fn pick() -> Account {
        if !Uid::effective().is_root() {
            return Account { switch_to: None };
        }
        let user = ["postgres", "nobody"]
            .iter()
            .find_map(|name| User::from_name(name).ok().flatten());
        Account {
            switch_to: user.map(|u| (u.uid, u.gid)),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.switch_to {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    fn own(&self, path: &Path) -> Result<(), PgError> {
        if let Some((uid, gid)) = self.switch_to {
            chown(path, Some(uid), Some(gid)).map_err(|e| PgError::Io {
                context: format!("chown {}", path.display()),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Whether the account can enter `dir` (a clone under /root is not reachable for `postgres`).
    fn can_reach(&self, dir: &Path) -> bool {
        self.switch_to.is_none()
            || self
                .command(Path::new("test"))
                .arg("-x")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
    }
}

/// Options of a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Server settings passed as `-c name=value`.
    pub settings: Vec<(String, String)>,
    /// Skip fsync in initdb (throwaway clusters of tests).
    pub fast_init: bool,
}

impl ClusterOptions {
    /// The settings of Fjord's embedded cluster, with `shared_buffers` of `shared_buffers_mb`.
    pub fn embedded(shared_buffers_mb: u64) -> ClusterOptions {
        ClusterOptions {
            settings: vec![
                ("max_connections".into(), "200".into()),
                ("shared_buffers".into(), format!("{shared_buffers_mb}MB")),
                // Statistics within seconds of a bulk load, not a minute: without them a
                // conditional create scans every resource of its type instead of the index.
                ("autovacuum_naptime".into(), "10s".into()),
                // Fewer checkpoints while bundles load; recovery replays at most this much.
                ("max_wal_size".into(), "4GB".into()),
            ],
            fast_init: false,
        }
    }
}

/// A running cluster. Dropping it stops the postmaster if this process started it.
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    child: Option<Child>,
    /// Dropping it ends the thread that spawned the postmaster, which signals it.
    _guardian: Option<mpsc::Sender<()>>,
}

impl Cluster {
    /// Starts the cluster in `dir` (initialising it first if empty), or attaches to the postmaster
    /// that already serves it. A stale `postmaster.pid` left by a crash is removed.
    pub fn start(
        binaries: &Binaries,
        dir: &Path,
        options: &ClusterOptions,
    ) -> Result<Cluster, PgError> {
        let account = Account::pick();
        let data_dir = prepare_dir(&account, dir)?;
        if !data_dir.join("PG_VERSION").exists() {
            init(binaries, &account, &data_dir, options)?;
        }
        if let Some(pid) = live_postmaster(&data_dir) {
            // A postmaster killed a moment ago still shows in /proc, and its `postmaster.pid`
            // still says ready, while the kernel tears it down: attach only if it answers.
            if wait_ready(&data_dir, None, Duration::from_secs(30)).is_ok()
                && accepts_connections(&data_dir)
            {
                tracing::info!(pid, dir = %data_dir.display(), "attached to running postgres");
                return Ok(Cluster {
                    data_dir,
                    child: None,
                    _guardian: None,
                });
            }
            wait_gone(pid, Duration::from_secs(30));
            // Its lock files, if it is gone without removing them.
            live_postmaster(&data_dir);
        }
        let log_path = data_dir.join("postgres.log");
        // Processes of a postmaster that was just killed may still hold its shared memory for a
        // moment (a checkpoint in progress): the new postmaster refuses to start until they end.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
            match start_postmaster(binaries, &account, &data_dir, &log_path, options) {
                Ok(cluster) => return Ok(cluster),
                Err(error) => {
                    let log = fs::read(&log_path).unwrap_or_default();
                    let since =
                        String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or(&[]));
                    if !since.contains("is still in use") || Instant::now() > deadline {
                        return Err(error);
                    }
                    tracing::warn!(
                        "an old postmaster's processes are still ending; starting again"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// The directory of the Unix socket (the data directory).
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database` as `user` over the Unix socket.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@localhost/{database}?host={}&port={SOCKET_PORT}",
            self.data_dir.display()
        )
    }

    /// Stops the postmaster (fast shutdown) if this process started it, and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let _ = child.wait();
            tracing::info!("postgres stopped");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns the postmaster from a thread that lives as long as the returned sender: the parent-death
/// signal fires when the spawning *thread* ends, so it must not be a short-lived worker thread.
fn spawn_guarded(mut command: Command) -> Result<(Child, mpsc::Sender<()>), PgError> {
    let (child_tx, child_rx) = mpsc::channel();
    let (guard_tx, guard_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let spawned = command.spawn();
            let ok = spawned.is_ok();
            let _ = child_tx.send(spawned);
            if ok {
                let _ = guard_rx.recv();
            }
        })
        .map_err(io("spawn postgres parent thread"))?;
    let child = child_rx
        .recv()
        .map_err(|_| PgError::Tool {
            tool: "postgres".into(),
            detail: "spawn thread died".into(),
        })?
        .map_err(io("start postgres"))?;
    Ok((child, guard_tx))
}

/// Makes the cluster directory, owned by the account and private to it. When the account cannot
/// reach `dir` (a home directory closed to others), the cluster lives under /var/lib/fjord instead
/// and `dir` holds a symlink to it, which later starts follow.
fn prepare_dir(account: &Account, dir: &Path) -> Result<PathBuf, PgError> {
    fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(io(format!("resolve {}", dir.display())))?;
    let link = dir.join("cluster");
    let data_dir = if let Ok(elsewhere) = fs::read_link(&link) {
        elsewhere
    } else if account.can_reach(dir.parent().unwrap_or(&dir)) {
        dir
    } else {
        let elsewhere = Path::new("/var/lib/fjord/clusters").join(path_key(&dir));
        fs::create_dir_all(&elsewhere).map_err(io(format!("create {}", elsewhere.display())))?;
        for ancestor in ["/var/lib/fjord", "/var/lib/fjord/clusters"] {
            fs::set_permissions(ancestor, fs::Permissions::from_mode(0o755))
                .map_err(io(ancestor))?;
        }
        std::os::unix::fs::symlink(&elsewhere, &link).map_err(io("link cluster directory"))?;
        tracing::warn!(
            data_dir = %dir.display(),
            cluster = %elsewhere.display(),
            "the postgres account cannot reach the data directory; the cluster lives elsewhere"
        );
        elsewhere
    };
    account.own(&data_dir)?;
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
        .map_err(io("chmod cluster dir"))?;
    Ok(data_dir)
}

fn path_key(path: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn init(
    binaries: &Binaries,
    account: &Account,
    data_dir: &Path,
    options: &ClusterOptions,
) -> Result<(), PgError> {
    let mut command = account.command(&binaries.tool("initdb"));
    command.arg("-D").arg(data_dir).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    if options.fast_init {
        command.arg("--no-sync");
    }
    let output = command.output().map_err(io("run initdb"))?;
    if !output.status.success() {
        return Err(PgError::Tool {
            tool: "initdb".into(),
            detail: String::from_utf8_lossy(&output.stderr).into(),
        });
    }
    Ok(())
}

/// Starts a postmaster on `data_dir` and waits until it is ready.
fn start_postmaster(
    binaries: &Binaries,
    account: &Account,
    data_dir: &Path,
    log_path: &Path,
    options: &ClusterOptions,
) -> Result<Cluster, PgError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io(format!("open {}", log_path.display())))?;
    account.own(log_path)?;
    let mut command = account.command(&binaries.tool("postgres"));
    command
        .arg("-D")
        .arg(data_dir)
        .arg("-k")
        .arg(data_dir)
        .args(["-p", &SOCKET_PORT.to_string(), "-c", "listen_addresses="])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("log file"))?)
        .stderr(log);
    for (name, value) in &options.settings {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    #[allow(unsafe_code)] // reason: pre_exec is unsafe; prctl is async-signal-safe
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
        });
    }
    let (child, guardian) = spawn_guarded(command)?;
    let mut cluster = Cluster {
        data_dir: data_dir.to_owned(),
        child: Some(child),
        _guardian: Some(guardian),
    };
    wait_ready(
        &cluster.data_dir,
        cluster.child.as_mut(),
        Duration::from_secs(60),
    )
    .map_err(|_| PgError::NotReady(Duration::from_secs(60), log_path.to_owned()))?;
    tracing::info!(dir = %cluster.data_dir.display(), "postgres started");
    Ok(cluster)
}

/// The pid of a live postmaster serving `data_dir`. Lock files of a postmaster that died without
/// cleaning up (`postmaster.pid`, the socket's lock) are removed, so the next start recovers.
fn live_postmaster(data_dir: &Path) -> Option<i32> {
    let socket_lock = data_dir.join(format!(".s.PGSQL.{SOCKET_PORT}.lock"));
    let mut live = None;
    for lock in [data_dir.join("postmaster.pid"), socket_lock] {
        let Some(pid) = fs::read_to_string(&lock)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if is_live_postgres(pid) {
            live = Some(pid);
        } else {
            tracing::warn!(pid, file = %lock.display(), "removing a lock file left by a crash");
            let _ = fs::remove_file(&lock);
        }
    }
    live
}

/// Whether the postmaster of `data_dir` accepts connections on its socket.
fn accepts_connections(data_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(data_dir.join(format!(".s.PGSQL.{SOCKET_PORT}")))
        .is_ok()
}

/// Waits until `pid` no longer is a live postgres, or time runs out.
fn wait_gone(pid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while is_live_postgres(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/proc/<pid>/stat` is "pid (comm) state ppid … flags …". A zombie (an orphan nobody reaped),
/// a process being torn down (`PF_EXITING`: killed, it keeps its pid, its socket and its
/// `postmaster.pid` saying ready while the kernel unmaps its shared memory) or another program
/// that reused the pid does not serve the cluster.
fn is_live_postgres(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((comm, rest)) = stat
        .split_once(" (")
        .and_then(|(_, rest)| rest.rsplit_once(") "))
    else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let exiting = fields
        .get(6)
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_none_or(|flags| flags & PF_EXITING != 0);
    comm == "postgres" && !fields[0].starts_with(['Z', 'X']) && !exiting
}

/// Waits until `postmaster.pid` reports `ready`, or the child exits, or time runs out.
fn wait_ready(data_dir: &Path, mut child: Option<&mut Child>, limit: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let status = fs::read_to_string(data_dir.join("postmaster.pid")).unwrap_or_default();
        if status.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
            return Ok(());
        }
        if let Some(child) = child.as_deref_mut() {
            if child.try_wait().ok().flatten().is_some() {
                return Err(());
            }
        } else if live_postmaster(data_dir).is_none() {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_install_or_connect() {
        let error = Binaries::first_in([PathBuf::from("/nonexistent")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("apt-get install postgresql"), "{error}");
        assert!(error.contains("DATABASE_URL"), "{error}");
    }

    #[test]
    fn finds_a_directory_with_initdb_and_postgres() {
        let dir = std::env::temp_dir().join(format!("fjord-pg-bin-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("initdb"), "").unwrap();
        assert!(
            Binaries::first_in([dir.clone()]).is_err(),
            "postgres is missing"
        );
        fs::write(dir.join("postgres"), "").unwrap();
        assert_eq!(
            Binaries::first_in([PathBuf::from("/nonexistent"), dir.clone()])
                .unwrap()
                .tool("initdb"),
            dir.join("initdb")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn linked_binaries_lead_to_the_installation() {
        let root = std::env::temp_dir().join(format!("fjord-pg-link-{}", std::process::id()));
        let (installed, linked) = (root.join("lib/bin"), root.join("local/bin"));
        fs::create_dir_all(&installed).unwrap();
        fs::create_dir_all(&linked).unwrap();
        for tool in ["initdb", "postgres", "pgbench"] {
            fs::write(installed.join(tool), "").unwrap();
        }
        for tool in ["initdb", "postgres"] {
            std::os::unix::fs::symlink(installed.join(tool), linked.join(tool)).unwrap();
        }
        let found = Binaries::first_in([linked]).unwrap();
        assert_eq!(
            found.tool("pgbench"),
            fs::canonicalize(installed.join("pgbench")).unwrap()
        );
        fs::remove_dir_all(root).unwrap();
    }
}

/// `shared_buffers` in megabytes for a cluster that has the machine to itself with its one
/// client: a quarter of the memory it may use (PostgreSQL's own advice), between 128 MB and 8 GB.
/// Memory is the smaller of the machine's and the control group's limit (a container's).
pub fn default_shared_buffers_mb() -> u64 {
    let machine = fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    let group = fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let bytes = match (machine, group) {
        (Some(m), Some(g)) => m.min(g),
        (Some(m), None) => m,
        (None, Some(g)) => g,
        (None, None) => 1 << 30,
    };
    (bytes / 4 / (1 << 20)).clamp(128, 8192)
}

#[cfg(test)]
mod memory_tests {
    #[test]
    fn shared_buffers_stay_within_bounds() {
        let mb = super::default_shared_buffers_mb();
        assert!((128..=8192).contains(&mb), "{mb}");
    }
}
