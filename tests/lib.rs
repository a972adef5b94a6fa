//! Helpers of the integration tests: the real `fjord` binary as a child process, and paths.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `fjord` binary of this build (`target/<profile>/fjord`). The test command builds it first.
pub fn fjord_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = profile_dir.join("fjord");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test does)",
        binary.display()
    );
    binary
}

/// `../shared` beside the repository root.
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// The JSON files of the official R4 examples package, sorted.
pub fn r4_example_files() -> Vec<PathBuf> {
    json_files(&shared_dir().join("fhir-r4/hl7.fhir.r4.examples-4.0.1/package"))
}

/// The `.json` files directly in a directory, sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// A running `fjord serve`. Dropping it stops the server gracefully.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// The text index directory the test gave a server of an external database, removed after.
    text_dir: Option<PathBuf>,
}

impl Server {
    /// Starts `fjord serve --listen 127.0.0.1:0` with extra arguments and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", args)
    }

    /// Starts `fjord serve --listen <listen>` with extra arguments and waits until it listens.
    pub fn start_on(listen: &str, args: &[&str]) -> Server {
        Server::start_with(listen, args, &[])
    }

    /// Starts `fjord serve --listen <listen>` with extra arguments and environment variables.
    pub fn start_with(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        // A server of an external database keeps its text index beside the working directory
        // unless told otherwise: each test server gets its own.
        let text_dir =
            (!args.contains(&"--data-dir") && !args.contains(&"--text-dir")).then(|| {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::env::temp_dir().join(format!("fjord-test-text-{}-{n}", std::process::id()))
            });
        let mut command = Command::new(fjord_binary());
        command.args(["serve", "--listen", listen]).args(args);
        // Most tests of an external database are about FHIR, not tokens: they ask for no
        // authentication, as a developer would (the embedded default on loopback has none);
        // the tests of authentication say `--auth required`.
        if args.contains(&"--database-url") && !args.contains(&"--auth") {
            command.args(["--auth", "off"]);
        }
        if let Some(dir) = &text_dir {
            command.arg("--text-dir").arg(dir);
        }
        let mut child = command
            .envs(env.iter().copied())
            .env("FJORD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fjord");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("fjord listening on http://") {
                    let _ = tx.send(format!("http://{}", rest.trim_end_matches("/fhir/")));
                }
            }
        });
        let origin = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("fjord did not start listening");
        let origin = origin.replace("0.0.0.0", "127.0.0.1");
        Server {
            child,
            origin,
            text_dir,
        }
    }

    /// The FHIR base URL of a tenant.
    pub fn base(&self, tenant: &str) -> String {
        format!("{}/fhir/{tenant}", self.origin)
    }

    /// Kills the server without warning (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the server to shut down (SIGTERM) and waits for it; how it exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("the server's exit")
    }

    /// Asks the server to shut down (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let _ = self.child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.text_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A response as tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends a request; any status is a reply, only transport failures panic.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut request = ureq::request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    reply_of(result, method, url)
}

/// A port on 127.0.0.1 that nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// What a ureq call answered, error statuses included.
pub fn reply_of(result: Result<ureq::Response, ureq::Error>, method: &str, url: &str) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url}: {error}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| Some((name.clone(), response.header(&name)?.to_owned())))
        .collect();
    let body = response.into_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// A resource without the server-owned `meta.versionId` and `meta.lastUpdated` (and without `meta`
/// when nothing else was in it), for comparing what was sent with what was stored.
pub fn without_server_meta(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(object) = value.as_object_mut() {
        if let Some(meta) = object
            .get_mut("meta")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.shift_remove("versionId");
            meta.shift_remove("lastUpdated");
            if meta.is_empty() {
                object.shift_remove("meta");
            }
        }
    }
    value
}
