//! An issuer's discovery document and keys fetched over HTTPS, as from HelseID or Keycloak:
//! the server's certificate is checked against the machine's trust store (here a CA the test
//! makes, named by `SSL_CERT_FILE`), and an issuer whose certificate does not verify gets no
//! token through (503: its keys are unavailable, the token may be good).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use fjord_smart::{DevIssuer, TokenRequest};
use fjord_tests::free_port;
use serde_json::json;

use crate::embedded::data_dir;
use crate::smart::Smart;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA named `name` and a certificate it signs for 127.0.0.1 (`name-server.pem`).
pub(crate) fn certificates(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-server.key");
    let request = format!("{name}-server.csr");
    let server = format!("{name}-server.pem");
    let extensions = format!("{name}-ext.cnf");
    std::fs::write(
        dir.join(&extensions),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &ca_key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &request,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &server,
            "-days",
            "2",
            "-extfile",
            &extensions,
        ],
    );
}

/// `openssl s_server` serving the files under `root` over HTTPS on `port`.
struct HttpsFiles(Child);

impl HttpsFiles {
    fn start(root: &Path, certificate: &Path, key: &Path, port: u16) -> HttpsFiles {
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certificate)
            .arg("-key")
            .arg(key)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpsFiles(child)
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An "IdP" under `root`: its OpenID discovery document names its JWKS, both over HTTPS.
fn publish(root: &Path, issuer: &str, key: &DevIssuer) {
    std::fs::create_dir_all(root.join(".well-known")).unwrap();
    std::fs::write(
        root.join(".well-known/openid-configuration"),
        json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json")}).to_string(),
    )
    .unwrap();
    std::fs::write(
        root.join("jwks.json"),
        serde_json::to_string(&key.jwks()).unwrap(),
    )
    .unwrap();
}

#[test]
fn issuer_keys_are_fetched_over_verified_https() {
    let dir = data_dir("smart-tls-certs");
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir, "trusted");
    certificates(&dir, "stranger");
    let (trusted_port, stranger_port) = (free_port(), free_port());
    let trusted_issuer = format!("https://127.0.0.1:{trusted_port}");
    let stranger_issuer = format!("https://127.0.0.1:{stranger_port}");
    let (trusted_key, stranger_key) = (
        DevIssuer::generate().unwrap(),
        DevIssuer::generate().unwrap(),
    );
    let (trusted_root, stranger_root) = (dir.join("trusted-idp"), dir.join("stranger-idp"));
    publish(&trusted_root, &trusted_issuer, &trusted_key);
    publish(&stranger_root, &stranger_issuer, &stranger_key);
    let _trusted = HttpsFiles::start(
        &trusted_root,
        &dir.join("trusted-server.pem"),
        &dir.join("trusted-server.key"),
        trusted_port,
    );
    let _stranger = HttpsFiles::start(
        &stranger_root,
        &dir.join("stranger-server.pem"),
        &dir.join("stranger-server.key"),
        stranger_port,
    );

    // The machine trusts the first CA only.
    let ca = dir.join("trusted-ca.pem");
    let smart = Smart::start_with_env("smart-tls", &[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let settings = json!({"trustedIssuers": [
        {"issuer": trusted_issuer, "audiences": ["fjord-t1"]},
        {"issuer": stranger_issuer, "audiences": ["fjord-t1"]},
    ]});
    smart.set_t1_settings(&settings);
    let token = |issuer: &str, key: &DevIssuer| {
        let mut request = TokenRequest {
            audience: "fjord-t1".into(),
            scope: "system/*.rs".into(),
            ..Default::default()
        };
        request.extra.insert("iss".into(), json!(issuer));
        key.mint(&request)
    };
    let status_with = |issuer: &str, key: &DevIssuer| {
        smart
            .call(&token(issuer, key), "GET", "/Patient", None)
            .status
    };
    assert_eq!(status_with(&trusted_issuer, &trusted_key), 200);
    assert_eq!(
        status_with(&stranger_issuer, &stranger_key),
        503,
        "an unverified certificate"
    );
    // The trusted IdP's keys, but a token it did not sign.
    assert_eq!(status_with(&trusted_issuer, &stranger_key), 401);
    let _ = std::fs::remove_dir_all(&dir);
}
