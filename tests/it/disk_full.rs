//! The database's disk full under load: the data directory on a small tmpfs, filled but for a
//! few megabytes while clients write. Writes that cannot be stored are refused (503), none is
//! acknowledged and then lost, and once space is freed the server goes on by itself. Needs a
//! tmpfs mount (root with CAP_SYS_ADMIN); where mounting is not allowed the test says so and
//! checks nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjord_tests::send;

use crate::faults::{acknowledged_writes_read_back, private_server, Writers};

/// A tmpfs of `megabytes` at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, megabytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m,mode=0777"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(dir.to_owned()))
    }

    fn free_bytes(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        stat.blocks_available() as u64 * stat.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes zeros to `path` until the file system has `leave` bytes free.
fn fill(path: &Path, tmpfs: &Tmpfs, leave: u64) {
    use std::io::Write;
    let mut filler = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 256 * 1024];
    while tmpfs.free_bytes() > leave + chunk.len() as u64 {
        filler.write_all(&chunk).expect("filling");
    }
    filler.sync_all().expect("filler written");
}

#[test]
fn a_full_disk_refuses_writes_loses_no_acknowledged_one_and_recovers_when_freed() {
    let dir = std::env::temp_dir().join(format!("fjord-disk-full-{}", std::process::id()));
    let Some(tmpfs) = Tmpfs::mount(&dir, 320) else {
        eprintln!("disk-full simulation skipped: mounting a tmpfs is not allowed here");
        return;
    };
    let (cluster, server) = private_server(&dir.join("pg"));
    let base = server.base("t1");
    // Bodies of 20 KB: the space left goes in a few hundred writes.
    let body = serde_json::json!({
        "resourceType": "Patient",
        "name": [{"family": "x".repeat(20_000)}],
    })
    .to_string();
    let writers = Writers::start(4, &base, &body, |reply| {
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(matches!(
            reply.json()["issue"][0]["code"].as_str(),
            Some("transient")
        ));
    });
    writers.wait_for_more(20, 60, "before the disk filled");
    let filler = dir.join("filler");
    fill(&filler, &tmpfs, 4 * 1024 * 1024);

    let deadline = Instant::now() + Duration::from_secs(60);
    while writers.refused() < 20 {
        assert!(
            Instant::now() < deadline,
            "writes went on with the disk full"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let full = writers.acknowledged();
    std::fs::remove_file(&filler).expect("freeing the space");
    writers.wait_for_more(full + 20, 120, "after space was freed");
    let ready = send("GET", &format!("{}/health/ready", server.origin), &[], None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    let outcomes = writers.stop();
    acknowledged_writes_read_back(&base, &outcomes);
    drop(server);
    drop(cluster);
}
