//! Registered clients: those in the configuration file, and those `fjord client add` keeps in
//! the data directory (read again whenever the file changes, so a running server sees them).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fjord_smart::JwkSet;
use serde::{Deserialize, Serialize};

/// A client of the development authorization server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where authorization answers may be sent, compared exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// SHA-256 (base64url) of a confidential client's secret; the secret itself is never kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// The public keys of a client that authenticates with signed assertions
    /// (`private_key_jwt`, SMART Backend Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
    /// The most the client may be granted (space-separated scopes); anything when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Sign in without the login page, as this user with this patient (clients driven by tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_login: Option<Login>,
}

/// Who signs in at the login page, and the patient they pick.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// A reference to the user's resource (`Practitioner/123`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// A Patient id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

impl Client {
    /// A client that can keep a secret or a key must prove it holds one.
    pub fn is_confidential(&self) -> bool {
        self.secret_sha256.is_some() || self.jwks.is_some()
    }

    /// Whether `secret` is this client's secret.
    pub fn secret_matches(&self, secret: &str) -> bool {
        let Some(expected) = &self.secret_sha256 else {
            return false;
        };
        let given = secret_hash(secret);
        // Compared without an early exit: the time taken says nothing of how much matched.
        given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A new client secret: 32 random bytes, base64url.
pub fn new_secret() -> String {
    crate::random_secret()
}

/// What a client's secret is kept as.
pub fn secret_hash(secret: &str) -> String {
    crate::digest(secret)
}

/// The clients the server knows.
#[derive(Debug)]
pub struct Clients {
    configured: Vec<Client>,
    /// The file `fjord client add` writes, with what was read of it and when it was changed.
    file: Option<PathBuf>,
    loaded: Mutex<(Option<SystemTime>, Arc<Vec<Client>>)>,
}

impl Clients {
    /// `configured` clients and those of `file` (which need not exist yet).
    pub fn new(configured: Vec<Client>, file: Option<PathBuf>) -> Clients {
        Clients {
            configured,
            file,
            loaded: Mutex::new((None, Arc::default())),
        }
    }

    /// The client with this id, configured ones first.
    pub fn find(&self, client_id: &str) -> Option<Client> {
        if let Some(client) = self.configured.iter().find(|c| c.client_id == client_id) {
            return Some(client.clone());
        }
        self.in_file()
            .iter()
            .find(|c| c.client_id == client_id)
            .cloned()
    }

    fn in_file(&self) -> Arc<Vec<Client>> {
        let Some(path) = &self.file else {
            return Arc::default();
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded.lock().expect("clients");
        if loaded.0 != modified || modified.is_none() {
            let clients = match read_file(path) {
                Ok(clients) => clients,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "the clients file cannot be read");
                    Vec::new()
                }
            };
            *loaded = (modified, Arc::new(clients));
        }
        loaded.1.clone()
    }
}

/// The clients kept in `path` (none when it does not exist).
pub fn read_file(path: &Path) -> std::io::Result<Vec<Client>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Adds `client` to the file at `path`, in place of one with the same id.
pub fn save_to_file(path: &Path, client: Client) -> std::io::Result<()> {
    let mut clients = read_file(path)?;
    clients.retain(|c| c.client_id != client.client_id);
    clients.push(client);
    write_file(path, &clients)
}

/// Removes the client with this id from the file; whether there was one.
pub fn remove_from_file(path: &Path, client_id: &str) -> std::io::Result<bool> {
    let mut clients = read_file(path)?;
    let before = clients.len();
    clients.retain(|c| c.client_id != client_id);
    if clients.len() == before {
        return Ok(false);
    }
    write_file(path, &clients)?;
    Ok(true)
}

/// Written to a new file and renamed over the old one, so a reader never sees half of it.
fn write_file(path: &Path, clients: &[Client]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(clients).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Client {
        Client {
            client_id: id.into(),
            name: None,
            redirect_uris: vec!["http://app.example/cb".into()],
            secret_sha256: None,
            jwks: None,
            scope: None,
            auto_login: None,
        }
    }

    #[test]
    fn a_running_server_sees_clients_added_to_the_file() {
        let dir = std::env::temp_dir().join(format!("fjord-clients-{}", std::process::id()));
        let path = dir.join("clients.json");
        let _ = std::fs::remove_file(&path);
        let clients = Clients::new(vec![client("configured")], Some(path.clone()));
        assert!(clients.find("added").is_none());
        save_to_file(&path, client("added")).unwrap();
        assert_eq!(clients.find("added").unwrap().client_id, "added");
        assert!(clients.find("configured").is_some());
        assert!(remove_from_file(&path, "added").unwrap());
        // The same second as the write before: the length differs, the time may not.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _ = std::fs::File::open(&path)
            .unwrap()
            .set_modified(SystemTime::now());
        assert!(clients.find("added").is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_are_kept_as_hashes_and_compared() {
        let mut confidential = client("c");
        confidential.secret_sha256 = Some(secret_hash("s3cret"));
        assert!(confidential.is_confidential());
        assert!(confidential.secret_matches("s3cret"));
        assert!(!confidential.secret_matches("s3cre"));
        assert!(!client("p").secret_matches(""));
    }
}
