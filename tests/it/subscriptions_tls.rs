//! Rest-hooks over HTTPS: an endpoint whose certificate the machine's trust store verifies gets
//! its notifications; one it does not verify gets nothing readable, and the subscription ends
//! in `error`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use fjord_tests::free_port;

use crate::embedded::data_dir;
use crate::smart::{load, Smart};
use crate::smart_tls::certificates;
use crate::subscriptions::{created, every_observation, resource_status, wait_until};

/// `openssl s_server` in raw mode: what a client sends is read from its output, and each
/// request line starting `POST` is answered 200 through its input.
struct HttpsEndpoint {
    child: Child,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpsEndpoint {
    fn start(certificate: &Path, key: &Path, port: u16) -> HttpsEndpoint {
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certificate)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stdout, stdin): (_, ChildStdin) =
            (child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut stdin = stdin;
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            while let Some(line) = lines.next() {
                if !line.starts_with("POST ") {
                    continue;
                }
                // The rest of the head, then the body (one line of JSON).
                let head: Vec<String> = lines
                    .by_ref()
                    .take_while(|l| !l.trim().is_empty())
                    .collect();
                let has_body = head
                    .iter()
                    .any(|h| h.to_ascii_lowercase().starts_with("content-length"));
                let body = if has_body {
                    lines.next().unwrap_or_default()
                } else {
                    String::new()
                };
                seen.lock().unwrap().push(format!("{line}\n{body}"));
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                if stdin
                    .write_all(answer.as_bytes())
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpsEndpoint { child, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpsEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rest_hooks_reach_https_endpoints_the_machine_trusts() {
    let dir = data_dir("subs-tls-certs");
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir, "trusted");
    certificates(&dir, "stranger");
    let (trusted_port, stranger_port) = (free_port(), free_port());
    let trusted = HttpsEndpoint::start(
        &dir.join("trusted-server.pem"),
        &dir.join("trusted-server.key"),
        trusted_port,
    );
    let stranger = HttpsEndpoint::start(
        &dir.join("stranger-server.pem"),
        &dir.join("stranger-server.key"),
        stranger_port,
    );
    let ca = dir.join("trusted-ca.pem");
    let smart = Smart::start_with_env(
        "subs-tls",
        &[],
        &[
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("FJORD_SUBSCRIPTION_MAX_FAILURES", "2"),
            ("FJORD_SUBSCRIPTION_RETRY_MS", "100"),
        ],
    );
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let subscribe = |port: u16| {
        let endpoint = format!("https://127.0.0.1:{port}/notify");
        let subscription = every_observation(&endpoint);
        created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription)))
    };
    let good = subscribe(trusted_port);
    wait_until(30, "the handshake over TLS", || {
        !trusted.requests().is_empty()
    });
    let handshake = trusted.requests().remove(0);
    assert!(handshake.starts_with("POST /notify"), "{handshake}");
    assert!(handshake.contains("\"handshake\""), "{handshake}");
    wait_until(20, "active", || {
        resource_status(&smart, &writer, &good) == "active"
    });

    // The stranger's certificate does not verify: nothing reaches it, and the subscription
    // gives up.
    let bad = subscribe(stranger_port);
    wait_until(30, "error", || {
        resource_status(&smart, &writer, &bad) == "error"
    });
    assert!(stranger.requests().is_empty(), "{:?}", stranger.requests());
    drop(smart);
    let _ = std::fs::remove_dir_all(&dir);
}
